"""Text membership datasets: real WikiMIA / ArxivMIA files, MIMIR layouts, generic files, bad input."""

import json

import numpy as np
import pytest

from miaudit.errors import DataError
from miaudit.evaluation import roc_auc
from miaudit.llm.baseline import FEATURES, blind_baseline, blind_baseline_scores, text_analyzer
from miaudit.llm.datasets import (
    TextDataset,
    load_arxivmia,
    load_mimir,
    load_table,
    load_text_dataset,
    load_text_files,
    load_wikimia,
)


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_wikimia_real_file(shared_data):
    data = load_wikimia(32, data_dir=shared_data)
    assert len(data) == 776 and data.name == "wikimia_32"
    assert set(np.unique(data.labels)) == {0, 1}
    first = json.loads((shared_data / "wikimia" / "WikiMIA_length32.jsonl").read_text().splitlines()[0])
    assert data.texts[0] == first["input"] and data.labels[0] == first["label"]
    assert len(set(data.ids)) == len(data)


def test_arxivmia_real_splits(shared_data):
    dev = load_arxivmia("dev", data_dir=shared_data)
    assert len(dev) == 400 and dev.texts[0].startswith("Title:")
    assert len(load_arxivmia("all", data_dir=shared_data)) == 2000


def test_unknown_named_splits_are_errors(shared_data):
    with pytest.raises(DataError, match="32, 64, 128, 256"):
        load_wikimia(48, data_dir=shared_data)
    with pytest.raises(DataError, match="all, dev, test"):
        load_arxivmia("train", data_dir=shared_data)


def test_mimir_two_files_strings_and_objects(tmp_path):
    members = _write_jsonl(tmp_path / "train.jsonl", ["member one", "member two"])
    nonmembers = _write_jsonl(tmp_path / "test.jsonl", [{"text": "non member"}])
    data = load_mimir(members, nonmembers)
    assert data.texts == ["member one", "member two", "non member"]
    assert data.labels.tolist() == [1, 1, 0]
    assert data.ids.tolist() == ["member:0", "member:1", "nonmember:0"]


@pytest.mark.parametrize("layout", [("member", "nonmember"), ("train", "test")])
def test_mimir_folder_layout(tmp_path, layout):
    for sub, texts in zip(layout, (["a b", "c d"], ["e f"])):
        (tmp_path / sub).mkdir()
        _write_jsonl(tmp_path / sub / "arxiv_ngram_13_0.8.jsonl", texts)
    data = load_text_dataset("mimir", members=str(tmp_path))
    assert data.labels.tolist() == [1, 1, 0]
    with pytest.raises(DataError, match="member/ and nonmember/"):
        load_mimir(tmp_path / layout[0])


def test_generic_csv_jsonl_and_columns(tmp_path):
    csv_path = tmp_path / "docs.csv"
    csv_path.write_text('body,is_member\n"hello, world",member\nsecond doc,0\n', encoding="utf-8")
    data = load_table(csv_path, text_column="body", label_column="is_member")
    assert data.texts == ["hello, world", "second doc"] and data.labels.tolist() == [1, 0]
    with pytest.raises(DataError, match="no column 'text'; available columns: body, is_member"):
        load_table(csv_path)
    jsonl = _write_jsonl(tmp_path / "d.jsonl", [{"t": "x y", "y": True}, {"t": "z", "y": False}])
    assert load_table(jsonl, text_column="t", label_column="y").labels.tolist() == [1, 0]
    # .json: a list of objects, or one object per line (Hugging Face datasets' to_json under that suffix)
    (tmp_path / "list.json").write_text(json.dumps([{"t": "x y", "y": 1}, {"t": "z", "y": 0}]))
    (tmp_path / "lines.json").write_text(jsonl.read_text())
    for name in ("list.json", "lines.json"):
        assert load_table(tmp_path / name, text_column="t", label_column="y").texts == ["x y", "z"]
    (tmp_path / "one.json").write_text(json.dumps({"t": "x"}))
    with pytest.raises(DataError, match="must hold a JSON list of objects \\(or one object per line\\)"):
        load_table(tmp_path / "one.json", text_column="t", label_column="y")
    (tmp_path / "bad.json").write_text('[{"t": "x"},')
    with pytest.raises(DataError, match="bad.json is not valid JSON"):
        load_table(tmp_path / "bad.json", text_column="t", label_column="y")


def test_parquet_tables_as_hugging_face_datasets_ship_them(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "train-00000-of-00001.parquet"
    pq.write_table(pa.table({"text": ["first doc", None, "third doc"], "label": [True, False, False],
                             "doc_id": [17, 4, 9]}), path)
    with pytest.raises(DataError, match="row train-00000-of-00001:1: text is missing \\(null\\)"):
        load_table(path)
    data = load_text_dataset("table", path=str(path), id_column="doc_id", on_empty="skip")
    assert data.texts == ["first doc", "third doc"] and data.labels.tolist() == [1, 0]
    assert data.ids.tolist() == ["17", "9"] and data.skipped == [("4", "missing (null) text")]
    with pytest.raises(DataError, match="no column 'body'; available columns: text, label, doc_id"):
        load_table(path, text_column="body")


def test_ids_from_an_id_column(tmp_path):
    csv_path = tmp_path / "docs.csv"  # as a spreadsheet saves it: byte-order mark, CRLF, a quoted line break
    csv_path.write_bytes('\ufeffdoc id,body,status\r\nA-7,"first\nline",member\r\nB-2,second,nonmember\r\n'
                         'C-1,  ,member\r\n'.encode("utf-8"))
    data = load_table(csv_path, text_column="body", label_column="status", id_column="doc id", on_empty="skip")
    assert data.ids.tolist() == ["A-7", "B-2"] and data.texts == ["first\nline", "second"]
    assert data.skipped == [("C-1", "empty or whitespace-only text")]
    assert load_table(csv_path, text_column="body", label_column="status", on_empty="skip").ids.tolist() == \
        ["docs:0", "docs:1"]
    numbered = _write_jsonl(tmp_path / "n.jsonl", [{"text": "a", "label": 1, "uid": 17}, {"text": "b", "label": 0,
                                                                                         "uid": 4}])
    assert load_text_dataset("table", path=str(numbered), id_column="uid").ids.tolist() == ["17", "4"]
    twice = _write_jsonl(tmp_path / "t.jsonl", [{"text": "a", "label": 1, "uid": "x"}, {"text": "b", "label": 0,
                                                                                        "uid": "y"},
                                                {"text": "c", "label": 0, "uid": "x"}])
    with pytest.raises(DataError, match="rows 0 and 2 share the id 'x' in column 'uid'"):
        load_table(twice, id_column="uid")
    blank = _write_jsonl(tmp_path / "b.jsonl", [{"text": "a", "label": 1, "uid": "x"}, {"text": "b", "label": 0,
                                                                                        "uid": ""}])
    with pytest.raises(DataError, match="row 1 has no 'uid' value"):
        load_table(blank, id_column="uid")
    with pytest.raises(DataError, match="no column 'doc_id'"):
        load_table(numbered, id_column="doc_id")
    with pytest.raises(DataError, match="source 'text' has no columns; id_column"):
        load_text_dataset("text", members=str(csv_path), nonmembers=str(csv_path), id_column="uid")


def test_repeated_texts_are_warned_about():
    data = TextDataset(["a b", "a  b\n", "c d", "c d", "e"], np.array([1, 0, 1, 1, 0]),
                       np.array(["m1", "n1", "m2", "m3", "n2"]), "mine")
    across, within = data.repeated_text_warnings()
    assert "1 documents have the text of a document with the other label (e.g. m1 and n1)" in across
    assert "1 documents repeat the text of another with the same label (e.g. m2 and m3)" in within
    assert TextDataset(["a", "b"], np.array([1, 0]), np.array(["x", "y"]), "clean").repeated_text_warnings() == []


def test_bad_labels_empty_texts_and_encoding(tmp_path):
    bad_label = _write_jsonl(tmp_path / "l.jsonl", [{"text": "a", "label": 2}])
    with pytest.raises(DataError, match="label 2 is not 0/1"):
        load_table(bad_label)
    empty = _write_jsonl(tmp_path / "e.jsonl", [{"text": "fine", "label": 1}, {"text": "  \n", "label": 0},
                                                {"text": "also fine", "label": 0}])
    with pytest.raises(DataError, match="row e:1: text is empty or whitespace-only"):
        load_table(empty)
    kept = load_table(empty, on_empty="skip")
    assert kept.texts == ["fine", "also fine"] and kept.skipped == [("e:1", "empty or whitespace-only text")]
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes('{"text": "caf\u00e9", "label": 1}\n'.encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8 .*line 1"):
        load_table(latin1)
    not_json = tmp_path / "bad.jsonl"
    not_json.write_text('{"text": "a", "label": 1}\n{oops\n', encoding="utf-8")
    with pytest.raises(DataError, match="line 2 is not valid JSON"):
        load_table(not_json)


def test_text_files_lines_and_paragraphs(tmp_path):
    members = tmp_path / "m.txt"
    members.write_text("first line\n\nsecond line\n", encoding="utf-8")
    nonmembers = tmp_path / "n.txt"
    nonmembers.write_text("para one\ncontinues\n\npara two\n", encoding="utf-8")
    by_line = load_text_files(members, nonmembers)
    assert by_line.texts == ["first line", "second line", "para one", "continues", "para two"]
    by_para = load_text_files(members, nonmembers, separator="blank_line")
    assert by_para.texts == ["first line", "second line", "para one\ncontinues", "para two"]
    assert by_para.labels.tolist() == [1, 1, 0, 0]
    (tmp_path / "blank.txt").write_text("\n \n", encoding="utf-8")
    with pytest.raises(DataError, match="holds no documents"):
        load_text_files(members, tmp_path / "blank.txt")


def test_subset_and_class_check():
    data = TextDataset(["a", "b", "c"], np.array([1, 0, 1]), np.array(["x", "y", "z"]))
    sub = data.subset(np.array([True, False, True]))
    assert sub.texts == ["a", "c"] and sub.ids.tolist() == ["x", "z"]
    with pytest.raises(DataError, match="needs both"):
        sub.require_both_classes()
    assert data.fingerprint() != sub.fingerprint()


def test_blind_baseline_finds_a_vocabulary_shift_and_not_noise():
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(50)]
    texts, labels = [], []
    for i in range(80):
        member = i % 2
        doc = list(rng.choice(words, 12)) + (["yesterday"] if member else ["tomorrow"])
        texts.append(" ".join(doc))
        labels.append(member)
    shifted = blind_baseline(texts, np.array(labels), n_bootstrap=50)
    assert shifted.metrics["auc"] > 0.95 and shifted.scores.shape == (80,)
    noise = rng.permutation(labels)  # out-of-fold scores cannot fit random labels (in-sample ones would)
    assert abs(roc_auc(noise, blind_baseline_scores(texts, noise)) - 0.5) < 0.2
    with pytest.raises(DataError, match="at least 5 members"):
        blind_baseline_scores(texts[:6], np.array([1, 0, 0, 0, 0, 0]))


def test_texts_without_spaces_between_words_get_character_features():
    rng = np.random.default_rng(0)
    common, before, after = list("今天天气很好我们去公园散步机器学习模型"), list("昨日旧"), list("明後新")
    texts, labels = [], []
    for i in range(80):
        member = i % 2
        texts.append("".join(rng.choice(common, 30)) + "".join(rng.choice(before if member else after, 3)) + "。")
        labels.append(member)
    assert text_analyzer(texts) == "char" and text_analyzer(["the cat sat", "the dog sat", "a cat ran"]) == "word"
    shifted = blind_baseline(texts, np.array(labels), n_bootstrap=50)  # word n-grams: no term in two documents
    assert shifted.metrics["auc"] > 0.95 and shifted.params["features"] == FEATURES["char"]
    noise = rng.permutation(labels)
    assert abs(roc_auc(noise, blind_baseline_scores(texts, noise)) - 0.5) < 0.2
