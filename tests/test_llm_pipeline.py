"""``kind: llm`` audits end to end on WikiMIA excerpts and the real tiny Llama (stories260K)."""

import json

import numpy as np
import pytest

from miaudit.errors import ConfigError
from miaudit.evaluation import AttackResult, roc_auc
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
