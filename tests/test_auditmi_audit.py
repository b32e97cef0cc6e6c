"""``miaudit audit`` with ``kind: text_generator``: AuditMI end to end through the CLI, and bad configs."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from miaudit.cli import main
from miaudit.errors import ConfigError, DataError
from miaudit.runs import parse_config
from miaudit.text_generator.audit import TextCorpusConfig, load_corpus

EXAMPLE = Path(__file__).parents[1] / "examples" / "auditmi.yaml"

TINY = {
    "kind": "text_generator", "seed": 3,
    "dataset": {"source": "wikitext2", "files": ["valid"], "texts_per_user": 4},
    "split": {"n_members": 10, "n_nonmembers": 10, "n_shadow_users": 20},
    "shadow": {"n_models": 2},
    "lm": {"vocab_size": 300, "embed_dim": 16, "hidden": 32, "epochs": 3, "max_length": 24},
    "attacks": [{"name": "auditmi"}, {"name": "auditmi", "label": "auditmi_1text", "params": {"max_texts": 1}}],
    "evaluation": {"n_bootstrap": 50},
}


def _audit(tmp_path: Path, config: dict, out: Path, data_dir: Path) -> int:
    path = tmp_path / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return main(["audit", str(path), "--out", str(out), "--data-dir", str(data_dir), "--no-store",
                 "--home", str(tmp_path / "home"), "-q", "--threads", "1"])


def test_tiny_audit_writes_a_user_level_run_directory(tmp_path, shared_data):
    assert _audit(tmp_path, TINY, tmp_path / "run", shared_data) == 0
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["kind"] == "text_generator" and saved["config"]["dataset"]["data_dir"] == str(shared_data)
    assert "seed" not in saved["config"]["lm"]
    assert [a["name"] for a in saved["attacks"]] == ["auditmi", "auditmi_1text"]
    assert saved["attacks"][1]["params"]["max_texts"] == 1
    for entry in saved["attacks"]:
        assert entry["n_members"] == entry["n_nonmembers"] == 10
        assert entry["auc_ci"][0] <= entry["auc"] <= entry["auc_ci"][1]
        assert entry["threshold_source"] == "reference" and entry["access"] == "probabilities"
    assert saved["data"]["n_shadow_users"] == 20 and saved["shadow"]["n_models"] == 2
    assert 0 < saved["target"]["test_accuracy"] < 1 and saved["target"]["vocab_size"] == 300
    assert "training users" in (tmp_path / "run" / "report.html").read_text(encoding="utf-8")  # users, not records

    scores = np.load(tmp_path / "run" / "scores" / "auditmi.scores.npz", allow_pickle=False)
    corpus = load_corpus(TextCorpusConfig("wikitext2", data_dir=str(shared_data), files=["valid"], texts_per_user=4))
    assert set(scores["ids"]) <= set(corpus.user_ids) and len(set(scores["ids"])) == 20  # example ids = user ids
    assert scores["labels"].sum() == 10 and np.isfinite(scores["scores"]).all()

    ranks = np.load(tmp_path / "run" / "next_token_ranks.npz", allow_pickle=False)
    assert list(ranks["target_user_ids"]) == list(scores["ids"])
    assert ranks["target_tokens"].sum() == ranks["target_ranks"].size and ranks["target_ranks"].max() < 300
    assert ranks["shadow1_membership"].sum() == 10 and len(ranks["shadow1_user_ids"]) == 20
    assert not set(ranks["shadow0_user_ids"]) & set(scores["ids"])  # the auditor's users are not audited

    assert _audit(tmp_path, TINY, tmp_path / "again", shared_data) == 0  # one seed -> the same scores
    again = np.load(tmp_path / "again" / "scores" / "auditmi.scores.npz", allow_pickle=False)
    np.testing.assert_array_equal(again["scores"], scores["scores"])
    np.testing.assert_array_equal(again["ids"], scores["ids"])


@pytest.mark.parametrize("change, message", [
    ({"split": {"n_members": 10, "n_nonmembers": 10, "n_shadow_users": 10_000}}, "needs 10020 users"),
    ({"split": {"n_users": 10}}, "n_users"),
    ({"lm": {"seed": 1}}, "lm.seed"),
    ({"dataset": {"source": "tinyshakespeare", "files": ["valid"]}}, "dataset.files"),
    ({"shadow": {"n_models": 0}}, "shadow.n_models"),
    ({"attacks": [{"name": "loss"}]}, "not text_generator"),
])
def test_bad_config_exits_2_without_an_output_folder(tmp_path, shared_data, capsys, change, message):
    assert _audit(tmp_path, {**TINY, **change}, tmp_path / "run", shared_data) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_tinyshakespeare_users_are_speakers(shared_data):
    corpus = load_corpus(TextCorpusConfig("tinyshakespeare", data_dir=str(shared_data), texts_per_user=30))
    assert len(corpus) > 10 and all(len(texts) >= 30 for texts in corpus.texts)
    assert "speaker" in corpus.source


def test_the_example_config_parses():
    config = parse_config(EXAMPLE)
    assert config.kind == "text_generator" and config.dataset.source == "wikitext2"
    assert [a.key for a in config.attacks] == ["auditmi", "auditmi_1text"]
    with pytest.raises(ConfigError, match="texts_per_user"):
        parse_config({**yaml.safe_load(EXAMPLE.read_text()), "dataset": {"source": "wikitext2", "texts_per_user": 0}})


def _users_table(folder: Path, shared_data: Path) -> Path:
    """The authors' own messages as a CSV (one text per row, rows shuffled), from WikiText-2 users; plus a user
    with too few texts and a row without words."""
    corpus = load_corpus(TextCorpusConfig("wikitext2", data_dir=str(shared_data), files=["valid"], texts_per_user=4))
    rows = [{"author": f"user-{u}", "message": text.upper()} for u, texts in enumerate(corpus.texts[:60])
            for text in texts]
    rows += [{"author": "lurker", "message": "hello there"}, {"author": "user-0", "message": "  "}]
    order = np.random.default_rng(0).permutation(len(rows))
    path = folder / "messages.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["message", "author"])
        writer.writeheader()
        writer.writerows(rows[i] for i in order)
    return path


def test_a_table_of_the_users_own_texts_is_audited_by_author(tmp_path, shared_data):
    path = _users_table(tmp_path, shared_data)
    config = {**TINY, "dataset": {"source": "table", "path": str(path), "user_column": "author",
                                  "text_column": "message", "texts_per_user": 4}}
    assert _audit(tmp_path, config, tmp_path / "run", shared_data) == 0
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["data"]["dataset"] == "messages.csv" and saved["data"]["n_users_in_corpus"] == 60
    assert "value of column 'author' with >= 4 texts (60 of 61 users; 1 row without words skipped)" in \
        saved["data"]["users"]
    scores = np.load(tmp_path / "run" / "scores" / "auditmi.scores.npz", allow_pickle=False)
    assert {str(i) for i in scores["ids"]} <= {f"user-{u}" for u in range(60)} and len(scores["ids"]) == 20
    corpus = load_corpus(TextCorpusConfig("table", path=str(path), user_column="author", text_column="message",
                                          texts_per_user=4))
    assert all(t == t.lower() for texts in corpus.texts for t in texts)  # words as the other corpora give them


@pytest.mark.parametrize("dataset, message", [
    ({"source": "table"}, "config.dataset.path: source table needs the file"),
    ({"source": "wikitext2", "path": "x.csv"}, "config.dataset.path: only for source table"),
    ({"source": "tinyshakespeare", "user_column": "who"}, "config.dataset.user_column: only for source table"),
])
def test_table_corpus_configs_name_the_fix(dataset, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({**TINY, "dataset": dataset})


def test_table_corpus_errors_name_the_column_or_the_row(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"user": "a", "text": "one two"}\n{"text": "no author"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="no column 'body'; available columns: user, text"):
        load_corpus(TextCorpusConfig("table", path=str(path), text_column="body", texts_per_user=1))
    with pytest.raises(DataError, match="row 1 has no 'user' value"):
        load_corpus(TextCorpusConfig("table", path=str(path), texts_per_user=1))
    path.write_text('{"user": "a", "text": "one two"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="no user in .* has 3 texts \\(the most any user has is 1\\)"):
        load_corpus(TextCorpusConfig("table", path=str(path), texts_per_user=3))
