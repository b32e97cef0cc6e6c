"""``kind: llm`` audits end to end on WikiMIA excerpts and the real tiny Llama (stories260K)."""

import json

import numpy as np
import pytest

from miaudit.attacks import registry
from miaudit.errors import ConfigError
from miaudit.evaluation import AttackResult, roc_auc
from miaudit.llm import audit as llm_audit
from miaudit.llm.attacks._common import LLMAttack
from miaudit.llm.audit import LLMAuditConfig, run_llm_audit
from miaudit.runs import parse_config

ATTACKS = ["loss", "zlib", "lowercase", "min_k_pp", "ac", "deriv_ac", "recall", "gradnorm", "neighbourhood",
           "dc_pdd"]


def _swap_words(text):
    """A stand-in perturbation model: two neighbours made by swapping adjacent words."""
    words = text.split()
    out = []
    for i in (1, len(words) // 2):
        w = list(words)
        if i < len(w):
            w[i - 1], w[i] = w[i], w[i - 1]
        out.append(" ".join(w))
    return out


def _config(shared_data, tmp_path, **overrides):
    corpus = tmp_path / "reference_corpus.txt"
    corpus.write_text("Once upon a time a little girl played.\nThe dog ran to the park.\n", encoding="utf-8")
    config = {
        "kind": "llm", "seed": 3,
        "dataset": {"source": "wikimia", "path": "32", "data_dir": str(shared_data), "max_documents": 48},
        "model": {"name_or_path": str(shared_data / "models" / "stories260K"), "local_files_only": True,
                  "batch_size": 16},
        "signals": {"betas": [0.5, 1.0, 2.0]},
        "selection": {"calibration_fraction": 0.3},
        "recall": {"n_shots": 2},
        "dc_pdd": {"corpus": str(corpus)},
        "attacks": [{"name": n} for n in ATTACKS] + [{"name": "min_k", "params": {"k": 0.5}}],
        "evaluation": {"n_bootstrap": 50},
        "token_view": {"n_documents": 2},
    }
    config.update(overrides)
    return config


@pytest.fixture(scope="module")
def run(shared_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("llm")
    out = tmp / "run"
    metrics = run_llm_audit(_config(shared_data, tmp), out, progress=False, perturb=_swap_words)
    return out, metrics


def test_run_directory_and_metrics_schema(run):
    out, metrics = run
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert metrics["kind"] == "llm"
    names = [a["name"] for a in metrics["attacks"]]
    tuned = ["min_k_pp", "ac", "deriv_ac", "dc_pdd"]
    assert names == [n for a in ATTACKS for n in ([a, f"{a}.oracle"] if a in tuned else [a])] + ["min_k"]
    for entry in metrics["attacks"]:
        assert 0 <= entry["auc"] <= 1 and entry["auc_ci"][0] <= entry["auc"] <= entry["auc_ci"][1]
        assert set(entry["tpr_at_fpr"]) == {"0.001", "0.01", "0.05"} and "balanced_accuracy" in entry
    baseline = metrics["blind_baseline"]
    assert 0 <= baseline["auc"] <= 1 and len(baseline["auc_ci"]) == 2 and "0.01" in baseline["tpr_at_fpr"]
    page = (out / "token_view.html").read_text()
    assert page.startswith("<!doctype html>") and page.count('<section class="doc">') == 2
    assert (out / "report.md").is_file() and (out / "scores" / "recall.scores.npz").is_file()


def test_documents_are_split_honestly(run):
    out, metrics = run
    data, selection = metrics["data"], metrics["selection"]
    assert data["n_documents"] == 48 - 2 and data["n_recall_prefix"] == 2
    evaluated = set(AttackResult.load(out / "scores", "loss").ids.tolist())
    calibration = set(selection["calibration_ids"])
    prefix = set(metrics["recall"]["prefix_ids"])
    assert len(evaluated) == data["n_evaluated"] == 46 - len(calibration)
    assert not evaluated & calibration and not evaluated & prefix and not calibration & prefix
    result = AttackResult.load(out / "scores", "recall")
    assert (result.labels[np.isin(result.ids, list(prefix))]).size == 0


def test_held_out_choice_and_oracle_are_labelled_and_consistent(run):
    out, metrics = run
    entries = {a["name"]: a for a in metrics["attacks"]}
    for key in ("min_k_pp", "ac", "deriv_ac", "dc_pdd"):
        chosen = metrics["selection"]["attacks"][key]
        param = chosen["parameter"]
        assert chosen["held_out"] == chosen["grid"][int(np.argmax(chosen["calibration_aucs"]))]
        assert chosen["oracle"] == chosen["grid"][int(np.argmax(chosen["evaluation_aucs"]))]
        assert entries[key]["params"][param] == chosen["held_out"]
        assert entries[f"{key}.oracle"]["params"][param] == chosen["oracle"]
        assert (entries[key]["selection"], entries[f"{key}.oracle"]["selection"]) == ("held-out", "oracle")
        assert (entries[key][param], entries[f"{key}.oracle"][param]) == (chosen["held_out"], chosen["oracle"])
        assert entries[f"{key}.oracle"]["auc"] >= entries[key]["auc"] - 1e-12
        oracle_scores = AttackResult.load(out / "scores", f"{key}.oracle")
        assert roc_auc(oracle_scores.labels, oracle_scores.scores) == pytest.approx(max(chosen["evaluation_aucs"]))
    assert "min_k.oracle" not in entries and entries["min_k"]["params"]["k"] == 0.5  # fixed by the user: no search
    assert "oracle" in metrics["selection"]["note"]
    assert "selection" not in entries["min_k"]


def test_decision_thresholds_come_from_the_calibration_documents(run, shared_data, tmp_path):
    from miaudit.evaluation import best_threshold

    out, metrics = run
    assert {a["threshold_source"] for a in metrics["attacks"]} == {"calibration"}
    # the loss scores of every document, from an audit that evaluates them all (nothing to choose: no
    # calibration split, so its threshold is the oracle one)
    config = _config(shared_data, tmp_path, attacks=[{"name": "loss"}], blind_baseline={"enabled": False})
    every = run_llm_audit(config, tmp_path / "all", progress=False)
    assert every["attacks"][0]["threshold_source"] == "oracle"
    scores = AttackResult.load(tmp_path / "all" / "scores", "loss")
    calibration = np.isin(scores.ids, metrics["selection"]["calibration_ids"])
    assert calibration.sum() == len(metrics["selection"]["calibration_ids"])
    expected = best_threshold(scores.labels[calibration], scores.scores[calibration])
    loss = next(a for a in metrics["attacks"] if a["name"] == "loss")
    assert loss["threshold"] == pytest.approx(expected, rel=1e-6)
    evaluated = AttackResult.load(out / "scores", "loss")
    members = evaluated.labels.astype(bool)
    assert loss["balanced_accuracy"] == pytest.approx(0.5 * ((evaluated.scores[members] >= loss["threshold"]).mean()
                                                             + (evaluated.scores[~members] < loss["threshold"]).mean()))


def test_markdown_report_shows_selection_and_blind_baseline(run):
    out, metrics = run
    report = (out / "report.md").read_text()
    chosen = metrics["selection"]["attacks"]["ac"]
    row = next(line for line in report.splitlines() if line.startswith("| `ac` | beta |"))
    assert f"{chosen['held_out']:.4f}" in row and f"{chosen['oracle']:.4f}" in row
    baseline = metrics["blind_baseline"]
    assert "## Blind baseline" in report and f"AUC {baseline['auc']:.3f}" in report


def test_config_errors_name_the_problem(shared_data, tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'colour'"):
        parse_config(_config(shared_data, tmp_path, colour="red"))
    with pytest.raises(ConfigError, match="reference model"):
        parse_config(_config(shared_data, tmp_path, attacks=[{"name": "ref"}]))
    assert isinstance(parse_config(_config(shared_data, tmp_path)), LLMAuditConfig)
    other_tokenizer = {"name_or_path": str(shared_data / "models" / "stories260K"), "local_files_only": True,
                       "bos": "never"}
    with pytest.raises(ConfigError, match="another tokenizer"):
        run_llm_audit(_config(shared_data, tmp_path, attacks=[{"name": "ref"}], reference_model=other_tokenizer),
                      tmp_path / "ref", progress=False)
    with pytest.raises(ConfigError, match="perturbation model"):
        run_llm_audit(_config(shared_data, tmp_path, attacks=[{"name": "neighbourhood"}]), tmp_path / "nb",
                      progress=False)
    with pytest.raises(ConfigError, match="package.module:attribute"):
        run_llm_audit(_config(shared_data, tmp_path, attacks=[{"name": "neighbourhood"}],
                              neighbourhood={"perturb": "no_colon"}), tmp_path / "nb2", progress=False)
    assert not (tmp_path / "ref").exists() and not (tmp_path / "nb").exists()


class _CalibratedLowest(LLMAttack):
    """A test attack known only by its declarations: tunable ``frac``, fitted on calibration documents."""

    name = "test_calibrated_lowest"
    access = "top-k log-probs"
    needs_reference = "calibration"
    requires_fit = True
    fit_input = ("calibration",)
    signals = ("log_prob",)
    citation = "a test"
    tunable = {"frac": (0.2, 0.5, 1.0)}

    def __init__(self, *, frac: float = 0.5):
        self.frac = frac

    def _fit(self, reference):
        self.offset_ = float(np.mean([s.log_prob.mean() for s, y in zip(reference.signals, reference.labels) if not y]))

    def _learned_state(self):
        return {"offset_": self.offset_}

    def document_score(self, sig):
        lowest = np.sort(sig.log_prob)[:max(1, int(self.frac * sig.log_prob.size))]
        return float(lowest.mean() - self.offset_)


def test_streaming_in_blocks_changes_nothing_and_reads_only_declarations(shared_data, tmp_path, monkeypatch):
    """Small blocks give the scores and choices of one block, for every way an attack is scored: plain, tuned
    (grid table), tuned with token counts, fitted on calibration records, and an attack the runner knows
    only by its declarations (tunable + calibration fit)."""
    monkeypatch.setitem(registry._REGISTRY, ("llm", _CalibratedLowest.name), _CalibratedLowest)
    attacks = [{"name": n} for n in ("loss", "min_k_pp", "dc_pdd", "acmia", _CalibratedLowest.name)]
    config = _config(shared_data, tmp_path, attacks=attacks, token_view={"n_documents": 0},
                     blind_baseline={"enabled": False})
    runs = {}
    for block in (7, 512):
        monkeypatch.setattr(llm_audit, "STREAM_BLOCK", block)
        runs[block] = run_llm_audit(config, tmp_path / f"block{block}", progress=False)
        scores = {a["name"]: AttackResult.load(tmp_path / f"block{block}" / "scores", a["name"]).scores
                  for a in runs[block]["attacks"]}
        runs[block] = (runs[block], scores)
    (small, small_scores), (large, large_scores) = runs[7], runs[512]
    assert small["selection"]["attacks"] == large["selection"]["attacks"]
    assert small_scores.keys() == large_scores.keys() and {"dc_pdd.oracle", "test_calibrated_lowest.oracle"} <= set(
        small_scores)
    for key in small_scores:
        assert np.array_equal(small_scores[key], large_scores[key]), key
    entries = {a["name"]: a for a in small["attacks"]}
    assert entries["test_calibrated_lowest"]["learned"]["offset_"] < 0
    assert entries["acmia"]["learned"]["beta_"] in (0.5, 1.0, 2.0)
    chosen = small["selection"]["attacks"]["test_calibrated_lowest"]
    assert chosen["parameter"] == "frac" and chosen["grid"] == [0.2, 0.5, 1.0]


def test_blind_baseline_runs_on_a_bounded_subsample(shared_data, tmp_path):
    config = _config(shared_data, tmp_path, attacks=[{"name": "loss"}],
                     blind_baseline={"max_documents": 20, "n_permutations": 9, "n_splits": 2})
    metrics = run_llm_audit(config, tmp_path / "run", progress=False)
    section = metrics["blind_baseline"]
    assert section["subsample"] is True and section["n_used"] == 20
    assert section["n_evaluated"] == metrics["data"]["n_evaluated"] > 20
    with np.load(tmp_path / "run" / "scores" / "blind_baseline.scores.npz", allow_pickle=False) as saved:
        assert saved["scores"].shape == (20,)
    loss = next(a for a in metrics["attacks"] if a["name"] == "loss")
    assert "beats" in loss["vs_blind_baseline"]
    report = (tmp_path / "run" / "report.md").read_text(encoding="utf-8")
    assert f"a random 20 of the {section['n_evaluated']} evaluation documents" in report
    with pytest.raises(ConfigError, match="max_documents"):
        parse_config({**config, "blind_baseline": {"max_documents": 5}})


def test_a_table_with_an_id_column_keeps_the_users_ids(shared_data, tmp_path, capsys):
    from miaudit.cli import main
    from miaudit.llm.datasets import load_wikimia

    wikimia = load_wikimia(32, data_dir=shared_data)
    rows = [{"ref": f"doc-{1000 + i}", "body": wikimia.texts[i], "in_training": bool(wikimia.labels[i])}
            for i in range(0, len(wikimia), 20)]
    rows.append({"ref": "copy-1", "body": rows[0]["body"] + " ", "in_training": not rows[0]["in_training"]})
    table = tmp_path / "mine.jsonl"
    table.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    config = {"kind": "llm", "dataset": {"source": "table", "path": str(table), "text_column": "body",
                                         "label_column": "in_training", "id_column": "ref"},
              "model": {"name_or_path": str(shared_data / "models" / "stories260K"), "local_files_only": True},
              "attacks": [{"name": "loss"}], "evaluation": {"n_bootstrap": 20},
              "blind_baseline": {"enabled": False}}
    metrics = run_llm_audit(config, tmp_path / "run", progress=False)
    assert [w for w in metrics["warnings"] if "text of" in w] == [
        "dataset 'mine': 1 documents have the text of a document with the other label (e.g. doc-1000 and copy-1); "
        "their ground truth is ambiguous: remove them"]
    scores = np.load(tmp_path / "run" / "scores" / "loss.scores.npz")
    assert sorted(scores["ids"].tolist()) == sorted(r["ref"] for r in rows)

    rows[1]["ref"] = rows[0]["ref"]  # two documents under one id: exit code 2, one line, nothing written
    table.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (tmp_path / "audit.yaml").write_text(json.dumps(config), encoding="utf-8")
    assert main(["audit", str(tmp_path / "audit.yaml"), "--out", str(tmp_path / "again"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "rows 0 and 1 share the id 'doc-1000' in column 'ref'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "again").exists()


def test_too_few_documents_for_the_blind_baseline_leave_a_warning(shared_data, tmp_path):
    from miaudit.llm.datasets import load_wikimia

    wikimia = load_wikimia(32, data_dir=shared_data)
    members, nonmembers = np.flatnonzero(wikimia.labels == 1)[:4], np.flatnonzero(wikimia.labels == 0)[:4]
    table = tmp_path / "eight.jsonl"
    table.write_text("".join(json.dumps({"text": wikimia.texts[i], "label": int(wikimia.labels[i])}) + "\n"
                             for i in np.r_[members, nonmembers]), encoding="utf-8")
    config = {"kind": "llm", "dataset": {"source": "table", "path": str(table)},
              "model": {"name_or_path": str(shared_data / "models" / "stories260K"), "local_files_only": True},
              "attacks": [{"name": "loss"}], "evaluation": {"n_bootstrap": 20}}
    metrics = run_llm_audit(config, tmp_path / "run", progress=False)
    assert "blind_baseline" not in metrics and metrics["attacks"][0]["auc"] is not None
    (warned,) = [w for w in metrics["warnings"] if w.startswith("no blind baseline")]
    assert "needs at least 5 members and non-members; the smaller class has 4" in warned


def test_lowercase_scores_texts_that_lower_casing_leaves_as_they_are_exactly_1(shared_data, tmp_path):
    from miaudit.llm.datasets import load_wikimia

    wikimia = load_wikimia(32, data_dir=shared_data)
    picked = range(0, len(wikimia), 25)
    rows = [{"id": f"d{i}", "text": wikimia.texts[i].lower() if k % 3 else wikimia.texts[i],
             "label": int(wikimia.labels[i])} for k, i in enumerate(picked)]
    table = tmp_path / "docs.jsonl"
    table.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    config = {"kind": "llm", "dataset": {"source": "table", "path": str(table), "id_column": "id"},
              "model": {"name_or_path": str(shared_data / "models" / "stories260K"), "local_files_only": True},
              "attacks": [{"name": "lowercase"}], "evaluation": {"n_bootstrap": 20},
              "blind_baseline": {"enabled": False}}
    metrics = run_llm_audit(config, tmp_path / "run", progress=False)
    result = AttackResult.load(tmp_path / "run" / "scores", "lowercase")
    unchanged = {r["id"] for r in rows if r["text"].lower() == r["text"]}
    scores = dict(zip(result.ids.tolist(), result.scores.tolist()))
    assert all(scores[i] == 1.0 for i in unchanged)  # the same text twice: the ratio is exactly 1, not float noise
    assert all(scores[i] != 1.0 for i in set(scores) - unchanged)
    assert f"lowercase: lower-casing leaves {len(unchanged)} of {len(rows)} documents as they are" in \
        " ".join(metrics["warnings"])


def test_caseless_warning_names_the_documents_lower_casing_leaves_as_they_are():
    assert llm_audit._caseless_warning(["The cat.", "A Dog.", "x y"]) is None
    assert "leaves 2 of 3 documents as they are" in llm_audit._caseless_warning(["the cat.", "x y", "A Dog."])
    assert "changes none of the 2 documents" in llm_audit._caseless_warning(["今天天气很好", "机器学习"])
