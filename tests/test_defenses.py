"""Defenses: each plugin changes training as its paper says, post-processors, DP accounting, checks, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from miaudit.classifier.outputs import ClassifierOutputs
from miaudit.classifier.training import TrainConfig, accuracy, build_model_from_config, predict_logits, train_classifier
from miaudit.classifier.training.measured import train_measured as _train_measured
from miaudit.cli import main
from miaudit.data import load_dataset
from miaudit.defenses import DefenseContext, DefenseError, build_chain, create_defense
from miaudit.defenses.dp import _LayerwiseDPOptimizer
from miaudit.defenses.procedures import StackedModel
from miaudit.defenses.regularizers import _rbf_mmd2
from miaudit.runs.config import EvaluationConfig


@pytest.fixture(scope="module")
def digits():
    ds = load_dataset("digits")
    order = np.random.default_rng(0).permutation(len(ds))
    return ds.subset(order[:240]), ds.subset(order[240:480]), ds.subset(order[480:720])


def _recipe(**kw) -> TrainConfig:
    base = dict(model="mlp", hidden=[32], epochs=4, batch_size=32, lr=1e-2, seed=0)
    return TrainConfig(**{**base, **kw})


def _train(data, recipe, components, reference=None):
    """Train a zoo model with the checked defense chain ``components``; return (TrainResult, chain)."""
    ctx = DefenseContext(recipe, data.input_shape, data.n_classes, (len(data),), reference)
    chain = build_chain(components, ctx)
    model = build_model_from_config(recipe, data.input_shape, data.n_classes)
    return train_classifier(model, data, recipe, plugins=chain.plugins(), progress=False), chain


def _weights(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


# -- training-time plugins ------------------------------------------------------------------------
def test_l2_penalty_equals_coupled_weight_decay(digits):
    train, _, _ = digits
    recipe = _recipe(optimizer="sgd", momentum=0.0)
    with_penalty, _ = _train(train, recipe, [("l2", {"strength": 0.05})])
    decayed = build_model_from_config(recipe, train.input_shape, 10)
    decayed = train_classifier(decayed, train, TrainConfig(**{**recipe.__dict__, "weight_decay": 0.05}),
                               progress=False).model
    plain, _ = _train(train, recipe, [])
    assert torch.allclose(_weights(with_penalty.model), _weights(decayed), atol=1e-5)
    assert _weights(with_penalty.model).norm() < _weights(plain.model).norm()


def test_label_smoothing_replaces_the_cross_entropy():
    plugin = create_defense("label_smoothing", {"epsilon": 0.2})
    logits, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    got = plugin.loss(None, None, y, logits, F.cross_entropy(logits, y) + 1.0)  # 1.0: an earlier plugin's term
    target = 0.8 * F.one_hot(y, 4) + 0.05
    expected = -(target * logits.log_softmax(1)).sum(1).mean() + 1.0
    assert torch.isclose(got, expected, atol=1e-6)


def test_dropout_is_active_in_training_and_removed_after(digits):
    train, _, _ = digits
    recipe = _recipe()
    plugin = create_defense("dropout", {"p": 0.5})
    model = build_model_from_config(recipe, train.input_shape, 10)
    model, _, _ = plugin.setup(model, None, None)
    head = model.net[-1]
    assert isinstance(head, nn.Sequential) and isinstance(head[0], nn.Dropout) and head[0].p == 0.5
    result, _ = _train(train, recipe, [("dropout", {})])
    fresh = build_model_from_config(recipe, train.input_shape, 10)
    assert result.model.state_dict().keys() == fresh.state_dict().keys()
    plain, _ = _train(train, recipe, [])
    assert not torch.allclose(_weights(result.model), _weights(plain.model))


def test_relaxloss_ascends_below_alpha_and_flattens_on_odd_epochs():
    plugin = create_defense("relaxloss", {"alpha": 5.0})
    plugin.setup(None, None, None)
    logits = torch.randn(8, 5, requires_grad=True)
    y = torch.randint(0, 5, (8,))
    ce = F.cross_entropy(logits, y)
    (grad_ce,) = torch.autograd.grad(ce, logits, retain_graph=True)
    (grad_relax,) = torch.autograd.grad(plugin.loss(None, None, y, logits, ce), logits, retain_graph=True)
    assert torch.allclose(grad_relax, -grad_ce, atol=1e-6)  # CE < alpha: gradient ascent on even epochs
    plugin.on_epoch_end(0, None)
    flat = plugin.loss(None, None, y, logits, ce)  # odd epoch, CE < alpha: soft labels keep p_y
    p = logits.softmax(1).detach()
    p_y = p.gather(1, y[:, None])
    soft = ((1 - p_y) / 4).expand_as(p).clone().scatter_(1, y[:, None], p_y)
    assert torch.isclose(flat, -(soft * logits.log_softmax(1)).sum(1).mean(), atol=1e-6)


def test_mixup_mmd_penalises_output_distribution_gaps(digits):
    train, _, reference = digits
    same = torch.rand(10, 4)
    assert abs(float(_rbf_mmd2(same, same, 1.0))) < 1e-6
    assert float(_rbf_mmd2(same, same + 0.5, 1.0)) > 0.1
    result, _ = _train(train, _recipe(), [("mixup_mmd", {})], reference)
    plain, _ = _train(train, _recipe(), [])
    assert not torch.allclose(_weights(result.model), _weights(plain.model))
    assert np.isfinite([h["loss"] for h in result.history]).all()


def test_adversarial_regularisation_trains_an_inference_model(digits):
    train, _, reference = digits
    result, _ = _train(train, _recipe(), [("adv_reg", {"alpha": 3.0})], reference)
    assert "adv_reg_inference_accuracy" not in result.history[0]  # warm-up epoch: plain training
    accuracies = [h["adv_reg_inference_accuracy"] for h in result.history[1:]]
    assert len(accuracies) == 3 and all(0 <= a <= 1 for a in accuracies)
    with pytest.raises(DefenseError, match="reference data"):
        _train(train, _recipe(), [("adv_reg", {})], None)


def test_distillation_student_learns_from_the_teacher_on_reference_data(digits):
    train, test, reference = digits
    result, _ = _train(train, _recipe(epochs=8), [("distillation", {"temperature": 3.0})], reference)
    report = result.reports["distillation"]
    assert report["transfer_set_size"] == len(reference) and report["teacher_train_accuracy"] > 0.8
    assert accuracy(result.model, test) > 0.5  # learned the task without the private labels


def test_stacking_trains_disjoint_bases_and_a_meta_learner(digits):
    train, test, _ = digits
    result, _ = _train(train, _recipe(epochs=8), [("stacking", {"n_models": 3})])
    assert isinstance(result.model, StackedModel) and len(result.model.bases) == 3
    assert sum(result.reports["stacking"]["part_sizes"]) == len(train)
    assert all(not p.requires_grad for p in result.model.bases.parameters())
    assert accuracy(result.model, test) > 0.5


def test_early_stopping_restores_the_best_validation_epoch(digits):
    train, _, reference = digits
    result, _ = _train(train, _recipe(epochs=6, lr=0.05), [("early_stopping", {"patience": 2})], reference)
    losses = [h["validation_loss"] for h in result.history]
    report = result.reports["early_stopping"]
    assert report["best_epoch"] == int(np.argmin(losses[:report["stopped_epoch"] or 6])) + 1
    final = F.cross_entropy(torch.from_numpy(predict_logits(result.model, reference.x)), torch.from_numpy(reference.y))
    assert abs(float(final) - report["best_validation_loss"]) < 1e-5


# -- differential privacy -------------------------------------------------------------------------
def test_dp_sgd_reports_epsilon_and_replaces_batch_norm(digits):
    train, _, _ = digits
    recipe = _recipe(model="resnet18", model_options={"width": 2, "norm": "batch"}, epochs=1, batch_size=30)
    data = train.subset(np.arange(60))
    result, chain = _train(data, recipe, [("dp_sgd", {"target_epsilon": 3.0, "delta": 1e-3})])
    report = result.reports["dp_sgd"]
    assert 2.9 <= report["epsilon"] <= 3.0 and report["batch_norm_replaced"] and report["steps"] == 2
    assert any("GroupNorm" in note for note in chain.notes)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in result.model.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in result.model.modules())


def test_unreachable_epsilon_fails_before_training(digits):
    train, _, _ = digits
    ctx = DefenseContext(_recipe(), train.input_shape, 10, (240,))
    with pytest.raises(DefenseError, match="cannot be reached"):
        build_chain([("dp_sgd", {"target_epsilon": 1e-12})], ctx)


def test_ladp_accounts_like_one_gaussian_mechanism(digits):
    train, _, reference = digits
    recipe = _recipe(epochs=2)
    ladp, _ = _train(train, recipe, [("ladp", {"noise_multiplier": 1.3, "target_epsilon": None, "delta": 1e-4})],
                     reference)
    dp, _ = _train(train, recipe, [("dp_sgd", {"noise_multiplier": 1.3, "target_epsilon": None, "delta": 1e-4})])
    rep = ladp.reports["ladp"]
    assert abs(rep["epsilon"] - dp.reports["dp_sgd"]["epsilon"]) < 1e-9
    assert rep["steps"] == dp.reports["dp_sgd"]["steps"]
    sigmas = np.array([layer["noise_multiplier"] for layer in rep["layers"]])
    clips = np.array([layer["clip"] for layer in rep["layers"]])
    assert abs(sum(layer["budget_share"] for layer in rep["layers"]) - 1) < 1e-3
    assert abs((sigmas ** -2).sum() ** -0.5 - 1.3) < 1e-3  # composed per-layer noise = one mechanism
    assert abs(np.sqrt((clips ** 2).sum()) - 1.0) < 1e-4


def test_layerwise_step_clips_each_layer_like_a_naive_loop():
    torch.manual_seed(0)
    a, b = nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(2, 2))
    a.grad_sample, b.grad_sample = torch.randn(5, 3) * 3, torch.randn(5, 2, 2)
    expected_a = sum(g * min(1.0, 0.7 / (g.norm().item() + 1e-6)) for g in a.grad_sample) / 4.0
    expected_b = sum(g * min(1.0, 0.2 / (g.norm().item() + 1e-6)) for g in b.grad_sample) / 4.0

    class Accountant:
        def step(self, **kw):
            self.kw = kw

    opt = _LayerwiseDPOptimizer(torch.optim.SGD([a, b], lr=1.0), [("a", [a]), ("b", [b])], 4.0, 0.1, 1.0,
                                Accountant())
    opt.clips, opt.sigmas = [0.7, 0.2], [0.0, 0.0]
    opt.step()
    assert torch.allclose(a.data, -expected_a, atol=1e-5) and torch.allclose(b.data, -expected_b, atol=1e-5)
    assert opt.accountant.kw == {"noise_multiplier": 1.0, "sample_rate": 0.1}


# -- bad combinations ---------------------------------------------------------------------------
@pytest.mark.parametrize("components, message", [
    ([("no_such_defense", {})], "unknown defense"),
    ([("l2", {"lambda": 1.0})], "has no parameter 'lambda'"),
    ([("label_only", {}), ("memguard", {})], "MemGuard cannot defend a label-only target"),
    ([("mixup_mmd", {}), ("dp_sgd", {})], "cannot run under 'dp_sgd'"),
    ([("l2", {}), ("ladp", {})], "training.weight_decay"),
    ([("label_smoothing", {}), ("relaxloss", {})], "both replace the cross-entropy"),
    ([("dp_sgd", {}), ("ladp", {})], "both private optimisers"),
    ([("none", {}), ("l2", {})], "cannot be combined"),
    ([("dp_sgd", {"target_epsilon": 2.0, "noise_multiplier": 1.0})], "exactly one of"),
])
def test_bad_defense_setups_fail_before_training(digits, components, message):
    train, _, reference = digits
    ctx = DefenseContext(_recipe(), train.input_shape, 10, (240,), reference)
    with pytest.raises(DefenseError, match=message):
        build_chain(components, ctx)


# -- output post-processors ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def outputs():
    rng = np.random.default_rng(1)
    return ClassifierOutputs(rng.integers(0, 6, 200), logits=rng.normal(0, 3, (200, 6)))


def test_masking_top_k_and_rounding_keep_labels_and_distributions(outputs):
    masked = create_defense("trust_score_masking", {"k": 3}).apply(outputs)
    assert ((masked.probs > 0).sum(1) == 3).all() and np.allclose(masked.probs.sum(1), 1)
    top = create_defense("top_k", {"k": 2}).apply(outputs)
    top2 = np.sort(outputs.probs, 1)[:, -2:]
    assert np.allclose(np.sort(top.probs, 1)[:, -2:], top2) and np.allclose(top.probs.sum(1), 1)
    rounded = create_defense("rounding", {"decimals": 1}).apply(outputs)
    assert np.allclose(rounded.probs.sum(1), 1) and np.allclose(rounded.probs * 10, np.rint(rounded.probs * 10))
    assert np.abs(rounded.probs - outputs.probs).max() <= 0.1 + 1e-9
    assert (masked.predicted == outputs.predicted).all() and (top.predicted == outputs.predicted).all()
    moved = rounded.predicted != outputs.predicted  # only where rounding created a tie with the old top class
    rows = np.flatnonzero(moved)
    assert np.allclose(rounded.probs[rows, outputs.predicted[rows]], rounded.probs[rows].max(1))


def test_label_only_and_temperature(outputs):
    labels = create_defense("label_only").apply(outputs)
    assert labels.access == "label-only" and (labels.predictions == outputs.predicted).all()
    rng = np.random.default_rng(2)
    z = rng.normal(0, 4, (4000, 5))
    y = np.array([rng.choice(5, p=p) for p in torch.softmax(torch.from_numpy(z) / 2.0, 1).numpy()])
    calibration = ClassifierOutputs(y, logits=z)
    fitted = create_defense("temperature").fit(calibration, calibration)
    assert abs(fitted.temperature_ - 2.0) < 0.25
    with pytest.raises(DefenseError, match="fitted"):
        create_defense("temperature").apply(calibration)


def test_memguard_keeps_labels_and_fools_the_defence_classifier():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, 300)
    confident = rng.normal(0, 1, (300, 4))
    confident[np.arange(300), labels] += 8  # members: confident outputs
    unsure = rng.normal(0, 1, (300, 4))
    unsure[np.arange(300), labels] += 1.5
    members, nonmembers = ClassifierOutputs(labels, logits=confident), ClassifierOutputs(labels, logits=unsure)
    guard = create_defense("memguard", {"epsilon": 2.0, "max_iter": 100}).fit(members, nonmembers)
    assert guard.classifier_accuracy_ > 0.9
    defended = guard.apply(members, seed=0)
    assert (defended.predicted == members.predicted).all()
    g = guard.classifier_
    before = (g(torch.from_numpy(members.log_probs).float()) > 0).float().mean()
    after = (g(torch.from_numpy(defended.log_probs).float()) > 0).float().mean()
    assert before > 0.9 and after < 0.6 and guard.last_success_rate_ > 0.9
    with pytest.raises(DefenseError, match="label-only"):
        guard.apply(ClassifierOutputs(labels, predictions=labels))


# -- the comparison end to end ------------------------------------------------------------------
CONFIG = """
seed: 1
dataset: {source: digits}
split: {n_members: 150, n_nonmembers: 150, n_shadow: 300, n_population: 100, n_reference: 100}
training: {model: mlp, hidden: [32], epochs: 6, batch_size: 32, lr: 0.01}
shadow: {n_models: 1}
defenses:
  - name: none
  - name: top_k
    params: {k: 1}
  - label: dp+labels
    compose: [{name: dp_sgd, params: {target_epsilon: 4.0, delta: 1.0e-3}}, {name: label_only}]
    training: {lr: 0.02}
attacks:
  - name: loss
  - name: correctness
  - name: shokri
    params: {classifier: lr}
  - name: noise_robustness
    params: {n_samples: 4}
evaluation: {n_bootstrap: 20}
isolate_training: false
"""


def test_defend_command_end_to_end(tmp_path, capsys):
    config = tmp_path / "defend.yaml"
    config.write_text(CONFIG)
    out = tmp_path / "out"
    assert main(["defend", str(config), "--out", str(out), "-q", "--threads", "1", "--no-store"]) == 0
    result = json.loads((out / "defenses.json").read_text())
    rows = {e["label"]: e for e in result["defenses"]}
    assert list(rows) == ["none", "top_k", "dp+labels"]
    assert rows["top_k"]["target"]["shared_training"] and not rows["none"]["target"]["shared_training"]
    assert rows["top_k"]["target"]["test_accuracy"] == rows["none"]["target"]["test_accuracy"]
    dp = rows["dp+labels"]
    assert 3.9 <= dp["epsilon"] <= 4.0 and dp["training_overrides"] == {"lr": 0.02}
    by_name = {a["name"]: a for a in dp["attacks"]}
    assert not by_name["loss"]["applicable"] and "label-only" in by_name["loss"]["reason"]
    assert 0 <= by_name["correctness"]["auc"] <= 1 and "tpr_at_fpr_ci" in by_name["correctness"]
    assert by_name["noise_robustness"]["applicable"] and "labels" in by_name["noise_robustness"]["note"]
    none_loss = next(a for a in rows["none"]["attacks"] if a["name"] == "loss")
    assert {"precision_macro", "f1_weighted", "auc_ci"} <= set(none_loss)
    target = rows["none"]["target"]
    # a tiny model may raise the process's memory high-water mark by less than the 0.1 MB rounding
    assert target["peak_memory_mb"] >= 0 and target["memory_source"] and target["train_seconds"] > 0
    for name in ("defenses.md", "privacy_utility.png", "config.yaml", "log.txt", "scores/none/loss.scores.npz"):
        assert (out / name).is_file(), name
    assert "| dp+labels | `correctness` |" in (out / "defenses.md").read_text()
    assert result["warnings"] == [EvaluationConfig(n_bootstrap=20).interval_warning()]
    assert "rest on 20 bootstrap resamples" in (out / "defenses.md").read_text()
    assert "rest on 20 bootstrap resamples" in (out / "report.html").read_text()
    # user-chosen labels are literal text in defenses.md: no HTML, no broken table
    from miaudit.defenses.compare import render_markdown

    result["defenses"][2]["label"] = "<img src=x>|dp"
    hostile = render_markdown(result)
    assert "<img" not in hostile and "&lt;img src=x&gt;\\|dp" in hostile
    assert "strongest attack" in capsys.readouterr().out


def test_training_process_reports_its_own_time_and_memory(digits):
    train, _, _ = digits
    model, info = _train_measured([], _recipe(epochs=1), train, threads=1)
    assert info["seconds"] > 0 and info["peak_memory_mb"] >= 0 and "VmHWM" in info["memory_source"]
    assert accuracy(model, train) > 0.1


def test_defend_rejects_bad_defense_before_training(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text(CONFIG.replace("name: label_only", "name: memguard")
                      .replace("{name: dp_sgd", "{name: label_only}, {name: dp_sgd"))
    out = tmp_path / "out"
    assert main(["defend", str(config), "--out", str(out), "-q", "--no-store"]) == 2
    assert "MemGuard cannot defend a label-only target" in capsys.readouterr().err
    assert not out.exists()
