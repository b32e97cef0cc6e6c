"""Tabular files: CSV / Parquet reading, label normalisation, missing cells, one preprocessing pipeline per run."""

import json
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from miaudit.data import load_dataset
from miaudit.data.census import COLUMNS, census_rows, write_census_files
from miaudit.data.tabular import TabularPreprocessor, TabularWarning, normalise_label, read_table
from miaudit.errors import ConfigError, DataError
from miaudit.runs import parse_config, run_audit

CENSUS_OPTIONS = {"format": "csv", "header": False, "columns": COLUMNS, "label": "income", "comment": "|",
                  "drop": ["fnlwgt"], "categorical": ["education-num"]}


@pytest.fixture(scope="module")
def census(tmp_path_factory):
    """Adult-like files: census.data (headerless, '?' cells) and census.test (comment line, labels 'x.')."""
    return write_census_files(tmp_path_factory.mktemp("census"), n_train=1500, n_test=700, seed=3)


def test_headerless_csv_with_appended_file_merges_label_spellings(census):
    train, test = census
    table = read_table(train, append=[str(test)], **CENSUS_OPTIONS)
    assert len(table) == 2200 and table.class_names == ["<=50K", ">50K"]
    assert table.kinds["age"] == "numeric" and table.kinds["workclass"] == "categorical"
    assert table.kinds["education-num"] == "categorical" and "fnlwgt" not in table.features  # declared, dropped
    merged = [n for n in table.notes if "differ only by whitespace or trailing dots" in n]
    assert len(merged) == 2 and "'<=50K' and '<=50K.'" in merged[0]
    imputed = [n for n in table.notes if "missing cells" in n]
    assert {n.split("'")[1] for n in imputed} == {"workclass", "occupation", "native-country"}
    assert (table.features["workclass"] == None).sum() > 0  # noqa: E711 - '?' cells are missing (None)
    assert 0.15 < table.y.mean() < 0.35  # about a quarter earn >50K, as in Adult


def test_normalise_label():
    assert normalise_label(" <=50K. ") == "<=50K" and normalise_label("yes") == "yes"
    assert normalise_label("...") == "..."  # nothing left: kept as written


def test_one_pipeline_fitted_on_given_rows_transforms_every_file_identically(census):
    train, test = census
    table = read_table(train, append=[str(test)], **CENSUS_OPTIONS)
    rows = np.arange(500)
    pre = TabularPreprocessor.fit(table, rows)
    data = pre.transform(table)
    alone = pre.transform(read_table(test, **CENSUS_OPTIONS))  # another file, alone: same columns
    assert data.x.shape[1] == alone.x.shape[1] == len(pre.feature_names)
    np.testing.assert_array_equal(alone.x, data.x[1500:])  # the same rows give the same features
    age = pre.feature_names.index("age")
    np.testing.assert_allclose(data.x[rows, age].mean(), 0, atol=1e-5)  # scaled with the fitted rows' statistics
    np.testing.assert_allclose(data.x[rows, age].std(), 1, atol=1e-3)
    described = pre.describe()
    assert described["fitted_on_rows"] == 500 and described["numeric"]["age"]["impute"] == np.median(
        table.features["age"][rows])
    assert "Private" in described["categorical"]["workclass"]["categories"]


def test_unknown_categories_become_zeros_and_missing_cells_are_imputed(tmp_path):
    (tmp_path / "a.csv").write_text("colour,size,y\nred,1,a\nblue,2,b\nred,?,a\n")
    (tmp_path / "b.csv").write_text("colour,size,y\ngreen,,a\n?,3,b\n")
    pre = TabularPreprocessor.fit(read_table(tmp_path / "a.csv", label="y"), scale=False)
    assert pre.feature_names == ["size", "colour=blue", "colour=red"]
    other = pre.transform(read_table(tmp_path / "b.csv", label="y"))
    np.testing.assert_array_equal(other.x, [[1.5, 0, 0], [3, 0, 1]])  # unseen 'green': zeros; '?': most frequent


def test_parquet_and_header_rows(tmp_path):
    rows = census_rows(300, seed=1)
    columns = {name: [r[j] for r in rows] for j, name in enumerate(COLUMNS)}
    columns["age"] = [int(v) for v in columns["age"]]
    columns["occupation"] = [None if v == "?" else v for v in columns["occupation"]]
    pq.write_table(pa.table(columns), tmp_path / "census.parquet")
    (tmp_path / "census.csv").write_text(",".join(COLUMNS) + "\n" + "".join(",".join(r) + "\n" for r in rows))
    from_parquet = read_table(tmp_path / "census.parquet", label="income")
    from_csv = read_table(tmp_path / "census.csv", label="income")
    assert from_parquet.kinds == from_csv.kinds
    np.testing.assert_array_equal(from_parquet.y, from_csv.y)
    np.testing.assert_array_equal(from_parquet.features["age"], from_csv.features["age"])
    np.testing.assert_array_equal(from_parquet.features["occupation"], from_csv.features["occupation"])
    with pytest.raises(ConfigError, match="Parquet file, which names its columns"):
        read_table(tmp_path / "census.parquet", label="income", header=False, columns=COLUMNS)
    with pytest.raises(ConfigError, match="only for files without a header row"):
        read_table(tmp_path / "census.csv", label="income", columns=COLUMNS)
    with pytest.raises(DataError, match="damaged|cannot read"):
        (tmp_path / "bad.parquet").write_bytes(b"not parquet")
        read_table(tmp_path / "bad.parquet", label="income")


def test_load_dataset_reads_tables_and_lists_valid_options(tmp_path):
    (tmp_path / "people.csv").write_text("age,city,score,target\n30,paris,1.5,yes\n40,rome,2.5,no\n50,paris,"
                                         "0.5,yes\n")
    data = load_dataset(tmp_path / "people.csv", label="target", scale=False)
    assert data.feature_names == ["age", "score", "city=paris", "city=rome"]
    np.testing.assert_array_equal(data.x, [[30, 1.5, 1, 0], [40, 2.5, 0, 1], [50, 0.5, 1, 0]])
    assert data.class_names == ["no", "yes"] and data.y.tolist() == [1, 0, 1]
    scaled = load_dataset(tmp_path / "people.csv", label="target", categorical=["age"], drop=["score"])
    assert scaled.feature_names == ["age=30", "age=40", "age=50", "city=paris", "city=rome"]
    with pytest.raises(ConfigError, match="does not take option 'standardize'; its options are: label, header"):
        load_dataset(tmp_path / "people.csv", label="target", standardize=True)
    with pytest.raises(DataError, match="no column 'label'"):
        load_dataset(tmp_path / "people.csv")


@pytest.mark.parametrize("content, options, error", [
    ("a,y\n1,x\n2,x\n", {}, "every label is 0; a classifier audit needs at least two classes"),
    ("a,y\n1,0\n2,100000\n", {}, "labels go up to 100000 but only 2 distinct values occur"),
    ("a,y\n1,0\n2,\n", {}, "1 rows have no label"),
    ("a,y\n1,0\n2\n", {}, "line 3 has 1 cells but the header has 2"),
    ("a,y\nx,0\n2,1\n", {"numeric": ["a"]}, "column 'a' is declared numeric but holds 'x'"),
    ("a,b,y\n1,?,0\n2,?,1\n", {}, "column 'b' has no values at all; drop it"),
    ("a,y\n1,0\n2,1\n", {"categorical": ["zz"]}, "no column 'zz' \\(dataset option 'categorical'\\)"),
    ("1,0\n2,1\n", {"header": False}, "list its column names in order"),
    ("a,y\n1,0\n2,1\n", {"categorical": ["a"], "numeric": ["a"]}, "declared both categorical and numeric"),
    ("a,y\n1,0\n2,1\ninf,1\n", {}, "column 'a' holds the non-finite number 'inf' \\(data row 2, counted from 0\\)"),
    ("a,y\n1,0\nNaN,1\n", {"numeric": ["a"]}, "non-finite number 'NaN'.*list its spelling in the dataset option"),
])
def test_bad_tables_are_one_line_errors(tmp_path, content, options, error):
    (tmp_path / "t.csv").write_text(content)
    with pytest.raises((DataError, ConfigError), match=error):
        read_table(tmp_path / "t.csv", label="y", **options)


def test_a_group_column_gives_group_ids_not_a_feature(tmp_path):
    (tmp_path / "g.csv").write_text("a,city,person,y\n1,x,p1,0\n2,y,p1,1\n3,x,p2,1\n4,?,p3,0\n")
    with pytest.warns(TabularWarning, match="column 'city' has 1 missing cells"):
        data = load_dataset(tmp_path / "g.csv", label="y", group="person")
    assert data.groups.tolist() == ["p1", "p1", "p2", "p3"] and "person" not in " ".join(data.feature_names)
    table = read_table(tmp_path / "g.csv", label="y", group="person")
    assert TabularPreprocessor.fit(table, np.array([0, 2])).transform(table.subset([3, 1])).groups.tolist() == [
        "p3", "p1"]
    with pytest.raises(DataError, match="no column 'who' \\(dataset option 'group'\\)"):
        read_table(tmp_path / "g.csv", label="y", group="who")
    with pytest.raises(ConfigError, match="other than the label"):
        read_table(tmp_path / "g.csv", label="y", group="y")
    (tmp_path / "h.csv").write_text("a,person,y\n1,p1,0\n2,?,1\n")
    with pytest.raises(DataError, match="column 'person' \\(the group ids\\) has missing cells"):
        read_table(tmp_path / "h.csv", label="y", group="person")


def test_an_id_column_gives_record_ids_not_a_feature(tmp_path):
    (tmp_path / "i.csv").write_text("a,ref,y\n1,r-9,0\n2,r-3,1\n3,r-5,1\n")
    table = read_table(tmp_path / "i.csv", label="y", id="ref")
    assert table.ids.tolist() == ["r-9", "r-3", "r-5"] and list(table.features) == ["a"] and not table.notes
    assert table.subset(np.array([2, 0])).ids.tolist() == ["r-5", "r-9"]
    assert read_table(tmp_path / "i.csv", label="y").ids.tolist() == [0, 1, 2]
    for content, error in (("a,ref,y\n1,r-9,0\n2,r-9,1\n", "rows 0 and 1 \\(counted from 0\\) share the id 'r-9'"),
                           ("a,ref,y\n1,r-9,0\n2,?,1\n", "data row 1 \\(counted from 0\\) has no id in column 'ref'")):
        (tmp_path / "bad.csv").write_text(content)
        with pytest.raises(DataError, match=error):
            read_table(tmp_path / "bad.csv", label="y", id="ref")
    with pytest.raises(ConfigError, match="'group' and 'id' name the same column"):
        read_table(tmp_path / "i.csv", label="y", id="ref", group="ref")
    (tmp_path / "kept.csv").write_text("a,Patient ID,y\n1,17,0\n2,4,1\n3,8,1\n")
    notes = read_table(tmp_path / "kept.csv", label="y").notes
    assert len(notes) == 1 and "'Patient ID' holds a distinct value in every row, like a record id" in notes[0]
    assert not read_table(tmp_path / "kept.csv", label="y", drop=["Patient ID"]).notes


def test_columns_a_model_could_misuse_are_noted(tmp_path):
    rows = [f"{1 + i % 7},{i},{'x' if i % 2 else 'z'},{i % 2}" for i in range(40)]
    rows[3], rows[8] = "n/a,3,x,1", "12;5,8,z,0"  # two text cells among the numbers of column a
    (tmp_path / "t.csv").write_text("a,serial,kind,y\n" + "\n".join(rows) + "\n")
    notes = read_table(tmp_path / "t.csv", label="y").notes
    assert len(notes) == 1 and "column 'a' is read as categorical because of 2 non-numeric cell(s) ('12;5', " \
        "'n/a') among numbers" in notes[0]
    assert not read_table(tmp_path / "t.csv", label="y", categorical=["a"]).notes  # declared: as the user says
    table = read_table(tmp_path / "t.csv", label="y", missing=["n/a", "12;5"])
    assert table.kinds["a"] == "numeric" and "2 missing cells" in table.notes[0]
    (tmp_path / "w.csv").write_text("word,y\n" + "\n".join(f"w{i},{i % 2}" for i in range(40)) + "\n")
    notes = read_table(tmp_path / "w.csv", label="y").notes
    assert len(notes) == 1 and "categorical column 'word' has 40 distinct values in 40 rows" in notes[0]


def test_non_finite_numbers_in_parquet_are_refused(tmp_path):
    pq.write_table(pa.table({"a": [1.0, float("inf"), 2.0], "y": [0, 1, 1]}), tmp_path / "t.parquet")
    with pytest.raises(DataError, match="column 'a' holds the non-finite number inf \\(data row 1"):
        read_table(tmp_path / "t.parquet", label="y")


def test_format_must_be_known(tmp_path):
    (tmp_path / "t.data").write_text("a,y\n1,0\n2,1\n")
    with pytest.raises(DataError, match="format: csv \\| parquet"):
        read_table(tmp_path / "t.data", label="y")
    assert len(read_table(tmp_path / "t.data", label="y", format="csv")) == 2
    with pytest.warns(TabularWarning, match="differ only by whitespace"):
        (tmp_path / "dots.csv").write_text("a,y\n1,no\n2,no.\n3,yes\n")
        load_dataset(tmp_path / "dots.csv", label="y")


def _census_config(train, test, **changes):
    config = {
        "kind": "classifier", "seed": 0,
        "dataset": {"source": str(train), "options": {**CENSUS_OPTIONS, "append": [str(test)]}},
        "split": {"n_members": 500, "n_nonmembers": 500, "n_shadow": 600, "n_population": 300},
        "training": {"model": "mlp", "hidden": [64], "epochs": 25},
        "shadow": {"n_models": 1}, "reference": {"n_models": 2},
        "attacks": [{"name": "loss"}, {"name": "population"}, {"name": "lira", "params": {"variance": "global"}}],
        "evaluation": {"n_bootstrap": 20},
    }
    for key, value in changes.items():
        config[key] = value
    return config


def test_census_audit_fits_one_pipeline_on_the_target_members_and_saves_it(census, tmp_path):
    train, test = census
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_audit(parse_config(_census_config(train, test)), tmp_path / "run", progress=False)
    target, data = result["target"], result["data"]
    assert target["test_accuracy"] > target["majority_rate"] > 0.6  # learned more than the majority class
    described = json.loads((tmp_path / "run" / "preprocessing.json").read_text())
    assert described["fitted_on_rows"] == 500 == data["preprocessing"]["fitted_on_rows"]
    assert (tmp_path / "run" / "preprocessing.joblib").is_file()
    assert data["preprocessing"]["n_features"] == described["n_features"]
    warned = " ".join(result["warnings"])
    assert "'<=50K' and '<=50K.'" in warned and "no better than always predicting" not in warned
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert config["dataset"]["options"]["header"] is False


def test_a_target_no_better_than_the_majority_class_is_warned_about(census, tmp_path):
    train, test = census
    config = _census_config(train, test, training={"model": "mlp", "hidden": [4], "epochs": 1, "lr": 1e-6},
                            shadow={"n_models": 1}, reference={"n_models": 0},
                            attacks=[{"name": "loss"}])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_audit(parse_config(config), tmp_path / "run", progress=False)
    warned = [w for w in result["warnings"] if "no better than always predicting" in w]
    assert len(warned) == 2 and warned[0].startswith("the target's test accuracy")  # the target and the shadow models


def test_an_audit_names_records_by_their_id_column(census, tmp_path):
    train, _ = census
    lines = [line for line in train.read_text().splitlines() if line.strip()]
    with_ids = tmp_path / "people.data"
    with_ids.write_text("".join(f"{line}, P{7000 - i}\n" for i, line in enumerate(lines)))
    options = {**CENSUS_OPTIONS, "columns": COLUMNS + ["person"], "id": "person"}
    config = _census_config(train, train, dataset={"source": str(with_ids), "options": options},
                            split={"n_members": 300, "n_nonmembers": 300, "n_shadow": 300, "n_population": 200},
                            attacks=[{"name": "loss"}, {"name": "lira", "params": {"variance": "global"}}])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_audit(parse_config(config), tmp_path / "run", progress=False)
    for attack in ("loss", "lira"):
        ids = np.load(tmp_path / "run" / "scores" / f"{attack}.scores.npz")["ids"].tolist()
        assert len(ids) == 600 and all(i.startswith("P") for i in ids) and len(set(ids)) == 600
