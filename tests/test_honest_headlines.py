"""Headlines an auditor can trust (issue 12): no oracle headline, the blind baseline everywhere, a risk
verdict, grouped records, honest wording of an epsilon bound of 0, warnings on every surface."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from miaudit.cli import main
from miaudit.errors import ConfigError, DataError
from miaudit.evaluation import evaluate
from miaudit.evaluation.epsilon import empirical_epsilon
from miaudit.evaluation.verdict import RiskThresholds, risk_verdict
from miaudit.report.markdown import render_report, summary_table
from miaudit.runs.gate import check_gates
from miaudit.runs.tracking import strongest_by_metric

REPO = Path(__file__).resolve().parents[1]


def _entry(name, labels, scores, **extra):
    metrics = evaluate(labels, scores, n_bootstrap=100)
    return {"name": name, "attack": name.removesuffix(".oracle"), "access": "probabilities", **metrics,
            "empirical_epsilon": empirical_epsilon(labels, scores).to_dict(), **extra}


def _llm_like_metrics(seed=0):
    """Three entries on 1,000 + 1,000 examples: a held-out choice, its stronger oracle twin, a weak attack."""
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(1000, int), np.zeros(1000, int)]
    held_out = rng.normal(size=2000) + 0.6 * labels
    oracle = held_out + 0.8 * labels  # the oracle entry is stronger: it must still never headline
    weak = rng.normal(size=2000) + 0.1 * labels
    attacks = [_entry("min_k_pp.oracle", labels, oracle, selection="oracle"),
               _entry("min_k_pp", labels, held_out, selection="held-out"), _entry("loss", labels, weak)]
    return {"kind": "llm", "seed": 0, "data": {"n_members": 1000, "n_nonmembers": 1000},
            "evaluation": {"n_bootstrap": 100, "confidence": 0.95, "fprs": [0.001, 0.01, 0.05]},
            "attacks": attacks, "warnings": ["the reference models behave differently from the target"]}


# -- no oracle headline --------------------------------------------------------------------------

def test_no_surface_headlines_an_oracle_entry(tmp_path):
    metrics = _llm_like_metrics()
    assert metrics["attacks"][0]["auc"] > metrics["attacks"][1]["auc"]  # the oracle twin is stronger
    assert {v["attack"] for v in strongest_by_metric(metrics["attacks"]).values()} <= {"min_k_pp", "loss"}
    report = render_report(metrics)
    assert "Strongest attack by AUC (held-out choices only): `min_k_pp`" in report
    assert report.index("| `min_k_pp` |") < report.index("Oracle entries") < report.index("| `min_k_pp.oracle` |")
    table = summary_table(metrics).splitlines()
    oracle_header = next(i for i, line in enumerate(table) if line.startswith("oracle:"))
    assert [line.split()[0] for line in table[oracle_header + 1:]] == ["min_k_pp.oracle"]
    assert table.index(next(line for line in table if line.startswith("min_k_pp "))) < oracle_header
    # an unnamed gate takes the held-out entry; naming the oracle entry still works
    result = check_gates(metrics, ["auc > 0.5", "min_k_pp.oracle:auc > 0.5"])
    assert [d["attack"] for d in result.details] == ["min_k_pp", "min_k_pp.oracle"]
    assert risk_verdict(metrics)["reasons"] and "oracle" not in " ".join(risk_verdict(metrics)["reasons"])


# -- the risk verdict -----------------------------------------------------------------------------

def _verdict_metrics(shift, n=1000, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(n, int), np.zeros(n, int)]
    scores = rng.normal(size=2 * n) + shift * labels
    return {"evaluation": {"confidence": 0.95, "fprs": [0.001, 0.01, 0.05]},
            "data": {"n_nonmembers": n}, "attacks": [_entry("a", labels, scores)]}


@pytest.mark.parametrize("shift,level", [(4.0, "high"), (1.2, "medium"), (0.25, "low"), (0.0, "none demonstrated")])
def test_risk_levels_follow_the_documented_rule(shift, level):
    verdict = risk_verdict(_verdict_metrics(shift))
    assert verdict["level"] == level
    assert "10 x the FPR" in verdict["rule"] and verdict["thresholds"]["high_tpr_ratio"] == 10


def test_risk_thresholds_are_configurable_and_checked():
    metrics = _verdict_metrics(1.2)
    assert risk_verdict(metrics, RiskThresholds(medium_tpr_ratio=50, high_tpr_ratio=100, medium_epsilon=10,
                                                high_epsilon=20))["level"] == "low"
    with pytest.raises(ConfigError, match="medium_tpr_ratio"):
        RiskThresholds(medium_tpr_ratio=20, high_tpr_ratio=10)


def test_a_tpr_lower_bound_at_the_fpr_is_not_a_reason():
    """A lower bound equal to the FPR is what random guessing achieves: no "identifies" reason (a real run: an HF
    text classifier's RMIA had TPR@5% interval [0.05, 0.177] and the verdict said "1.0 times the FPR")."""
    metrics = _verdict_metrics(0.25)
    entry = metrics["attacks"][0]
    entry["tpr_at_fpr_ci"] = {key: [float(key), max(hi, float(key))] for key, (_, hi) in entry["tpr_at_fpr_ci"].items()}
    verdict = risk_verdict(metrics)
    assert not any("identifies" in reason for reason in verdict["reasons"])
    entry["tpr_at_fpr_ci"]["0.05"][0] = 0.06
    assert any("identifies at least 6.0% of the members at a 5.0% false positive rate (95% lower bound; 1.20 times "
               "the FPR)" in reason for reason in risk_verdict(metrics)["reasons"])


def test_a_confounded_benchmark_is_inconclusive():
    metrics = _llm_like_metrics()
    metrics["blind_baseline"] = {**evaluate(np.r_[np.ones(50), np.zeros(50)].astype(int), np.r_[np.ones(50),
                                            np.zeros(50)] + np.linspace(0, 0.1, 100), n_bootstrap=50),
                                 "verdict": {"shift": True, "text": "members and non-members differ", "rule": "r"}}
    verdict = risk_verdict(metrics)
    assert verdict["level"] == "inconclusive" and "not evidence of membership" in verdict["summary"]


# -- epsilon bound of 0 --------------------------------------------------------------------------

def test_an_epsilon_bound_of_zero_is_no_finding():
    metrics = _verdict_metrics(0.0)
    assert metrics["attacks"][0]["empirical_epsilon"]["epsilon"] == 0.0
    report = render_report(metrics)
    assert "no privacy loss could be demonstrated" in report and "any ε below 0.00" not in report


# -- grouped records, end to end through a precomputed target -------------------------------------

def _grouped_outputs(tmp_path, *, with_groups):
    rng = np.random.default_rng(0)
    n_groups, size = 40, 25
    membership = np.repeat(np.r_[np.ones(n_groups // 2, bool), np.zeros(n_groups // 2, bool)], size)
    effect = np.repeat(rng.normal(0.6 * np.r_[np.ones(n_groups // 2), np.zeros(n_groups // 2)], 1.0), size)
    margin = effect + rng.normal(0, 0.3, membership.size)  # records of a group share the group's effect
    logits = np.stack([margin, np.zeros_like(margin)], axis=1)
    arrays = {"logits": logits, "labels": np.zeros(membership.size, int), "membership": membership}
    if with_groups:
        arrays["groups"] = np.repeat(np.array([f"person{g}" for g in range(n_groups)]), size)
    path = tmp_path / ("grouped.npz" if with_groups else "plain.npz")
    np.savez(path, **arrays)
    return path


def test_grouped_precomputed_audit_resamples_groups_and_says_so(tmp_path):
    from miaudit.runs import run_audit

    runs = {}
    for grouped in (False, True):
        config = {"kind": "classifier", "seed": 0,
                  "target": {"precomputed": str(_grouped_outputs(tmp_path, with_groups=grouped))},
                  "attacks": [{"name": "loss"}], "evaluation": {"n_bootstrap": 200}}
        runs[grouped] = run_audit(config, tmp_path / f"run_{grouped}", progress=False)
    plain, grouped = (runs[g]["attacks"][0] for g in (False, True))
    assert plain["auc"] == grouped["auc"]
    assert grouped["auc_ci"][1] - grouped["auc_ci"][0] > 2 * (plain["auc_ci"][1] - plain["auc_ci"][0])
    assert runs[True]["evaluation"]["grouping"]["n_groups"] == 40
    assert any("40 groups" in w for w in runs[True]["warnings"])
    report = (tmp_path / "run_True" / "report.md").read_text()
    assert "cluster bootstrap over 40 groups" in report
    assert "cluster bootstrap" in (tmp_path / "run_True" / "report.html").read_text()


def test_group_columns_in_csv_npz_and_text_tables(tmp_path):
    from miaudit.data.datasets import load_npz
    from miaudit.data.tabular import load_tabular
    from miaudit.llm.datasets import load_table

    (tmp_path / "d.csv").write_text("a,b,label,person\n1,2,0,p1\n3,4,1,p1\n5,6,1,p2\n", encoding="utf-8")
    data = load_tabular(tmp_path / "d.csv", group="person", scale=False)
    assert data.groups.tolist() == ["p1", "p1", "p2"] and data.feature_names == ["a", "b"]
    assert data.subset([2]).groups.tolist() == ["p2"]
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 2)), y=np.array([0, 1, 1]), groups=np.array([7, 7, 8]))
    assert load_npz(tmp_path / "d.npz").groups.tolist() == [7, 7, 8]
    (tmp_path / "t.jsonl").write_text('{"text": "a b", "label": 1, "paper": "x"}\n{"text": "c d", "label": 0, '
                                      '"paper": "y"}\n', encoding="utf-8")
    assert load_table(tmp_path / "t.jsonl", group_column="paper").groups.tolist() == ["x", "y"]
    with pytest.raises(DataError, match="no column 'paper_id'"):
        load_table(tmp_path / "t.jsonl", group_column="paper_id")


# -- the blind baseline: grouped cross-validation, permutation verdict, beats-the-baseline flags -------

def _texts(n, seed, confounded):
    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(60)]
    labels = np.r_[np.ones(n // 2, int), np.zeros(n - n // 2, int)]
    texts = []
    for label in labels:
        words = list(rng.choice(vocab, 12))
        if confounded and label:
            words += ["modern", "recent"]  # the members' texts carry a tell-tale topic
        texts.append(" ".join(words))
    return texts, labels


def test_blind_baseline_verdict_from_a_permutation_null():
    from miaudit.llm.baseline import blind_baseline

    texts, labels = _texts(200, 0, confounded=True)
    shifted = blind_baseline(texts, labels, n_bootstrap=100, n_permutations=19)
    assert shifted.metrics["verdict"]["shift"] is True and shifted.metrics["null"]["p_value"] == pytest.approx(0.05)
    texts, labels = _texts(200, 1, confounded=False)
    random = blind_baseline(texts, labels, n_bootstrap=100, n_permutations=19)
    assert random.metrics["verdict"]["shift"] is False
    assert random.metrics["verdict"]["text"].startswith("no evidence")


def test_blind_baseline_cross_validates_by_group():
    from miaudit.llm.baseline import blind_baseline, blind_baseline_scores

    texts, labels = _texts(120, 2, confounded=False)
    groups = np.repeat(np.arange(24), 5)
    labels = np.repeat(np.r_[np.ones(12, int), np.zeros(12, int)], 5)  # whole groups are members or not
    result = blind_baseline(texts, labels, groups=groups, n_bootstrap=50, n_permutations=9)
    assert result.params["cross_validation"] == "stratified group k-fold (24 groups)"
    assert result.metrics["grouping"]["n_groups"] == 24
    with pytest.raises(DataError, match="needs at least 5 groups"):
        blind_baseline_scores(texts, labels, groups=np.repeat([0, 1], 60))


def test_blind_baseline_subsample_keeps_class_shares_and_whole_groups():
    from miaudit.llm.baseline import baseline_sample

    labels = np.r_[np.ones(300, int), np.zeros(700, int)]
    assert np.array_equal(baseline_sample(labels, None, None, 0), np.arange(1000))
    assert np.array_equal(baseline_sample(labels, None, 1000, 0), np.arange(1000))
    picked = baseline_sample(labels, None, 200, 0)
    assert picked.size == 200 and np.unique(picked).size == 200 and labels[picked].sum() == 60
    assert not np.array_equal(picked, baseline_sample(labels, None, 200, 1))
    groups = np.repeat(np.arange(100), 10)
    grouped = baseline_sample(labels, groups, 205, 0)
    assert grouped.size == 200  # 20 whole groups of 10: the 21st would exceed the cap
    assert all(np.isin(np.flatnonzero(groups == g), grouped).all() for g in np.unique(groups[grouped]))


def test_attacks_are_compared_with_the_baseline_by_a_paired_bootstrap():
    from miaudit.llm.baseline import compare_with_baseline

    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(300, int), np.zeros(300, int)]
    baseline = rng.normal(size=600) + 0.3 * labels
    strong = baseline + 1.5 * labels
    assert compare_with_baseline(labels, strong, baseline, n_bootstrap=200)["beats"] is True
    same = compare_with_baseline(labels, baseline + rng.normal(0, 0.01, 600), baseline, n_bootstrap=200)
    assert same["beats"] is False and same["auc_difference_ci"][0] < 0 < same["auc_difference_ci"][1]


def test_a_baseline_below_chance_counts_as_chance():
    """An attack at chance does not 'beat' a text classifier that landed below chance."""
    from miaudit.llm.baseline import compare_with_baseline

    rng = np.random.default_rng(1)
    labels = np.r_[np.ones(300, int), np.zeros(300, int)]
    below_chance = rng.normal(size=600) - 0.6 * labels
    at_chance = rng.normal(size=600)
    compared = compare_with_baseline(labels, at_chance, below_chance, n_bootstrap=200)
    assert compared["beats"] is False
    assert abs(compared["auc_difference"]) < 0.05  # measured against 0.5, not against the baseline's ~0.33


# -- the LLM example: JSON summary, report.md, gate on the baseline, warnings on the terminal ---------

@pytest.fixture(scope="module")
def llm_example(shared_data, tmp_path_factory):
    """examples/llm_wikimia.yaml as shipped, on fewer documents and resamples (its attacks, oracle twins and
    blind baseline unchanged), run through the CLI with --json and a gate on the blind baseline."""
    tmp = tmp_path_factory.mktemp("llm_example")
    config = yaml.safe_load((REPO / "examples" / "llm_wikimia.yaml").read_text())
    config["dataset"] |= {"max_documents": 160, "data_dir": str(shared_data)}
    config["model"]["name_or_path"] = str(shared_data / "models" / "stories260K")
    config["evaluation"]["n_bootstrap"] = 100
    config["blind_baseline"] = {"n_permutations": 19}
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return tmp, path


def test_llm_example_headlines_a_held_out_entry_and_carries_the_baseline(llm_example, capsys):
    tmp, config = llm_example
    out = tmp / "run"
    code = main(["audit", str(config), "--out", str(out), "--json", "--no-store", "-q", "--threads", "1",
                 "--fail-if", "blind_baseline:auc > 0.6"])
    captured = capsys.readouterr()
    assert captured.out, (code, captured.err[-2000:])
    summary = json.loads(captured.out)
    names = {a["name"]: a for a in summary["attacks"]}
    assert any(n.endswith(".oracle") for n in names)
    for metric, best in summary["strongest"].items():
        assert not best["attack"].endswith(".oracle") and names[best["attack"]].get("selection") != "oracle", metric
    baseline = summary["blind_baseline"]
    assert len(baseline["auc_ci"]) == 2 and baseline["verdict"]["shift"] is True  # WikiMIA's labels are confounded
    assert "differ in distribution" in baseline["verdict"]["text"] and baseline["null"]["n_permutations"] == 19
    assert summary["verdict"]["level"] == "inconclusive"
    assert all(isinstance(a["vs_blind_baseline"]["beats"], bool) for a in summary["attacks"])
    # the gate on the baseline trips: exit code 1, and the detail names it
    assert code == 1 and summary["gates"]["details"][0]["attack"] == "blind_baseline"
    # report.md: the same held-out strongest attack, the baseline's interval and verdict
    report = (out / "report.md").read_text()
    best = summary["strongest"]["auc"]["attack"]
    assert f"Strongest attack by AUC (held-out choices only): `{best}`" in report
    low, high = baseline["auc_ci"]
    assert f"AUC {baseline['auc']:.3f} [{low:.3f}, {high:.3f}]" in report and "**Verdict: members and non-" in report
    assert "## Verdict" in report and "Risk: INCONCLUSIVE" in report
    # the terminal table (stderr with --json) shows the baseline and its verdict, oracle rows apart, warnings
    assert "blind baseline (text only): members and non-members differ" in captured.err
    assert "oracle: hyper-parameter chosen on the evaluation labels" in captured.err
    assert "warning: " in captured.err
    page = (out / "report.html").read_text()
    assert "Risk: INCONCLUSIVE" in page and "<h2>Warnings</h2>" in page and "Oracle entries" in page


def test_each_defense_row_gets_a_verdict_by_the_same_rule():
    from miaudit.evaluation.verdict import defense_verdict

    strong, weak = _verdict_metrics(4.0), _verdict_metrics(0.0, seed=1)
    comparison = {"evaluation": strong["evaluation"], "data": strong["data"],
                  "config": {"evaluation": {"risk": {"high_tpr_ratio": 10.0, "medium_tpr_ratio": 2.0,
                                                     "high_epsilon": 2.0, "medium_epsilon": 0.5,
                                                     "min_false_positives": 10}}},
                  "defenses": [{"label": "none", "attacks": strong["attacks"]},
                               {"label": "dp_sgd", "attacks": weak["attacks"]}]}
    levels = [defense_verdict(comparison, row)["level"] for row in comparison["defenses"]]
    assert levels == ["high", "none demonstrated"]


def test_run_store_views_show_risk_baseline_and_mark_oracle_entries(tmp_path, capsys):
    from miaudit.report.rundir import RUN_VERSION
    from miaudit.runs.tracking import RunOptions, finalize_run

    metrics = _llm_like_metrics()
    labels = np.r_[np.ones(50, int), np.zeros(50, int)]
    metrics["blind_baseline"] = {**evaluate(labels, labels + np.linspace(0, 0.5, 100), n_bootstrap=50),
                                 "verdict": {"shift": True, "text": "members and non-members differ", "rule": "r"}}
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.json").write_text(json.dumps({"version": RUN_VERSION, **metrics}))
    home = tmp_path / "home"
    assert finalize_run(run_dir, RunOptions(home=str(home)), command="audit") == 0
    capsys.readouterr()
    assert main(["runs", "list", "--home", str(home)]) == 0
    listed = capsys.readouterr().out
    assert "risk" in listed and "inconclusive" in listed and "1.000 (shift)" in listed
    assert main(["runs", "show", "latest", "--home", str(home)]) == 0
    shown = capsys.readouterr().out
    assert "risk      inconclusive" in shown and "baseline  blind baseline: members and non-members differ" in shown
    assert shown.index("min_k_pp ") < shown.index("min_k_pp.oracle (oracle)")


def test_a_gate_on_the_blind_baseline_is_checked_before_the_run():
    from miaudit.errors import MiauditError
    from miaudit.runs.gate import check_run_gate_targets

    gates = check_run_gate_targets(["blind_baseline:auc > 0.6"], attacks=["loss"], kind="llm",
                                   baselines=["blind_baseline"])
    assert gates[0].attack == "blind_baseline"
    with pytest.raises(MiauditError, match="its attacks: loss$"):
        check_run_gate_targets(["blind_baseline:auc > 0.6"], attacks=["loss"], kind="classifier")


def test_baseline_subsample_reads_both_record_counts():
    from miaudit.report.headline import baseline_subsample

    recorded_before = {"subsample": True, "n_documents": 20, "n_evaluated": 48}  # runs before n_used existed
    assert baseline_subsample(recorded_before) == (20, 48, "documents", "blind_baseline.max_documents")
    records = {"subsample": True, "n_used": 5000, "n_evaluated": 8000, "unit": "records",
               "limit_option": "blind_baseline.max_records"}
    assert baseline_subsample(records) == (5000, 8000, "records", "blind_baseline.max_records")
    assert baseline_subsample({"subsample": False, "n_used": 10, "n_evaluated": 10}) is None


def test_the_report_says_which_documents_were_set_aside_from_the_evaluation():
    """An LLM audit that trains on 120 + 120 documents evaluates fewer: the report says where the others went."""
    metrics = _verdict_metrics(0.5)
    metrics["data"] |= {"dataset": "corpus_valid", "n_members": 1000, "n_calibration": 47, "n_recall_prefix": 5}
    assert ("- **Dataset**: corpus_valid (1000 members, 1000 non-members audited; not evaluated: 47 more documents "
            "calibrate thresholds and hyper-parameters, 5 more documents are ReCaLL's prefix of known non-members)"
            in render_report(metrics))
    del metrics["data"]["n_calibration"], metrics["data"]["n_recall_prefix"]
    assert "- **Dataset**: corpus_valid (1000 members, 1000 non-members audited)\n" in render_report(metrics)


def test_the_report_says_what_the_reference_models_are():
    metrics = _verdict_metrics(0.5)
    metrics["reference"] = {"n_models": 8, "executor": "vectorised",
                            "models": "models/base fine-tuned trained by miaudit's loop (12 epochs, adam, lr 0.003)"}
    assert ("- **Reference models**: 8 (models/base fine-tuned trained by miaudit's loop (12 epochs, adam, lr 0.003), "
            "vectorised executor)") in render_report(metrics)
