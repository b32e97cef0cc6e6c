"""Encoders: augmentations, SimCLR training, the encoder target, EncoderMI features, attacks and audit."""

import json

import numpy as np
import pytest
import torch
from scipy.spatial import distance

from contract.encoder import features as synthetic_features
from miaudit.attacks.registry import create_attack
from miaudit.encoder import (
    AugmentConfig,
    EncoderShadowData,
    EncoderTarget,
    EncoderTrainConfig,
    SimilarityFeatures,
    augment,
    augmented_views,
    nt_xent_loss,
    pairwise_similarities,
    similarity_features,
    train_simclr,
)
from miaudit.encoder.audit import run_encoder_audit
from miaudit.errors import ConfigError, DataError, SignalError
from miaudit.evaluation import roc_auc


def _images(n=16, seed=0):
    return np.random.default_rng(seed).random((n, 1, 12, 12)).astype(np.float32)


# -- augmentations -----------------------------------------------------------------------------
def test_augment_shape_determinism_and_variety():
    x = torch.from_numpy(_images())
    a = augment(x, AugmentConfig(), torch.Generator().manual_seed(1))
    b = augment(x, AugmentConfig(), torch.Generator().manual_seed(1))
    assert a.shape == x.shape
    torch.testing.assert_close(a, b)
    views = augmented_views(x, 3, AugmentConfig(), torch.Generator().manual_seed(2))
    assert views.shape == (16, 3, 1, 12, 12)
    assert not torch.allclose(views[:, 0], views[:, 1])


def test_geometry_only_augmentation_keeps_image_content():
    """Without noise, a mild crop keeps most of a centred blob's mass: the warp maps into the image."""
    x = torch.zeros(1, 1, 28, 28)
    x[..., 10:18, 10:18] = 1.0
    cfg = AugmentConfig(crop_scale=(0.9, 1.0), rotation=5, translate=0.0, noise_std=0.0)
    out = augment(x, cfg, torch.Generator().manual_seed(0))
    assert 0.8 * x.sum() < out.sum() < 1.3 * x.sum()


def test_identity_augmentation_is_rejected():
    with pytest.raises(ConfigError, match="identical views"):
        AugmentConfig(crop_scale=(1.0, 1.0), rotation=0, translate=0, noise_std=0)
    with pytest.raises(ConfigError, match="crop_scale"):
        AugmentConfig(crop_scale=(0.0, 1.0))


def test_views_that_come_out_identical_are_an_error():
    blank = torch.zeros(4, 1, 8, 8)  # geometric warps of a blank image are all blank
    with pytest.raises(ConfigError, match="identical views"):
        augmented_views(blank, 3, AugmentConfig(noise_std=0.0), torch.Generator().manual_seed(0))


# -- similarities ------------------------------------------------------------------------------
@pytest.mark.parametrize("measure", ["cosine", "correlation", "euclidean"])
def test_pairwise_similarities_match_scipy(measure):
    emb = np.random.default_rng(0).standard_normal((3, 4, 6))
    got = pairwise_similarities(emb, measure)
    metric = {"cosine": "cosine", "correlation": "correlation", "euclidean": "euclidean"}[measure]
    for n in range(3):
        d = distance.pdist(emb[n], metric)  # pairs (i, j), i < j, in the same order
        want = -d if measure == "euclidean" else 1 - d
        np.testing.assert_allclose(got[n], want, atol=1e-12)


def test_with_views_equals_features_of_the_first_views():
    emb = np.random.default_rng(1).standard_normal((5, 6, 3))
    full = SimilarityFeatures(pairwise_similarities(emb), "cosine", 6)
    np.testing.assert_allclose(full.with_views(4).values, pairwise_similarities(emb[:, :4]))


def test_similarity_features_are_seeded_and_need_two_views():
    target = EncoderTarget(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(144, 5)))
    x = _images(6)
    a = similarity_features(target, x, n_views=4, seed=3)
    b = similarity_features(target, x, n_views=4, seed=3)
    assert a.values.shape == (6, 6)
    np.testing.assert_array_equal(a.values, b.values)
    with pytest.raises(ConfigError, match="at least 2"):
        similarity_features(target, x, n_views=1)


# -- encoder target ----------------------------------------------------------------------------
def test_encoder_target_rejects_non_finite_embeddings():
    target = EncoderTarget(lambda x: np.full((len(x), 3), np.nan))
    with pytest.raises(SignalError, match="NaN or inf"):
        target.embed(_images(2))


def test_encoder_target_rejects_changing_shape():
    calls = iter([3, 4])
    target = EncoderTarget(lambda x: np.zeros((len(x), next(calls))), batch_size=2)
    with pytest.raises(SignalError, match="changed from 3 to 4"):
        target.embed(_images(4))


def test_encoder_target_rejects_wrong_rows_and_non_callables():
    with pytest.raises(SignalError, match=r"\(n, d\)"):
        EncoderTarget(lambda x: np.zeros((len(x), 2, 2))).embed(_images(2))
    with pytest.raises(SignalError, match="callable"):
        EncoderTarget("not a model")


def test_encoder_target_batches_a_torch_module():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(144, 7))
    x = _images(10)
    emb = EncoderTarget(net, batch_size=3).embed(x)
    with torch.no_grad():
        np.testing.assert_allclose(emb, net(torch.from_numpy(x)).numpy(), atol=1e-6)


# -- SimCLR ------------------------------------------------------------------------------------
def test_nt_xent_matches_a_naive_loop():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1)
    t, losses = 0.5, []
    for i in range(8):
        pos = (i + 4) % 8
        denom = sum(torch.exp(z[i] @ z[k] / t) for k in range(8) if k != i)
        losses.append(-torch.log(torch.exp(z[i] @ z[pos] / t) / denom))
    torch.testing.assert_close(nt_xent_loss(z1, z2, t), torch.stack(losses).mean())


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_simclr_training_is_deterministic_and_learns(arch):
    from sklearn.datasets import load_digits

    x = (load_digits().images[:64, None] / 16.0).astype(np.float32)
    cfg = EncoderTrainConfig(arch=arch, width=16, embed_dim=8, proj_dim=8, epochs=15, batch_size=32, seed=0)
    a, b = train_simclr(x, cfg, progress=False), train_simclr(x, cfg, progress=False)
    for p, q in zip(a.encoder.parameters(), b.encoder.parameters()):
        torch.testing.assert_close(p, q)
    losses = [h["loss"] for h in a.history]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])


# -- attacks -----------------------------------------------------------------------------------
def _case(seed=0):
    rng = np.random.default_rng(seed)
    shadow_m = rng.permutation(np.arange(120) < 60)
    labels = np.arange(80) < 40
    return EncoderShadowData([synthetic_features(shadow_m, rng)], [shadow_m]), synthetic_features(labels, rng), labels


def test_set_and_vector_variants_ignore_the_order_of_similarities():
    shadow, target, _ = _case()
    shuffled = SimilarityFeatures(target.values[:, np.random.default_rng(0).permutation(10)], "cosine", 5)
    for name in ("encodermi_s", "encodermi_v"):
        attack = create_attack(name, epochs=50).fit(shadow)
        np.testing.assert_allclose(attack.score(target), attack.score(shuffled), atol=1e-5)


def test_threshold_variant_maximises_shadow_accuracy():
    shadow, target, labels = _case()
    attack = create_attack("encodermi_t").fit(shadow)
    mean = shadow.features[0].values.mean(axis=1)
    member = shadow.membership[0]
    best = max(np.mean((mean >= t) == member) for t in mean)
    assert attack.shadow_accuracy_ == pytest.approx(best)
    np.testing.assert_allclose(attack.score(target), target.values.mean(axis=1))
    assert roc_auc(labels, attack.score(target)) > 0.9


def test_attacks_refuse_mismatched_features_and_references():
    shadow, target, _ = _case()
    attack = create_attack("encodermi_v", epochs=5).fit(shadow)
    with pytest.raises(SignalError, match="fitted on 5 views but got 4"):
        attack.score(SimilarityFeatures(target.values[:, :6], "cosine", 4))
    with pytest.raises(SignalError, match="'cosine'"):
        attack.score(SimilarityFeatures(target.values, "euclidean", 5))
    with pytest.raises(DataError, match="EncoderShadowData"):
        create_attack("encodermi_t").fit(target)
    with pytest.raises(DataError, match="both members and non-members"):
        EncoderShadowData([target], [np.ones(len(target), bool)])


# -- the audit ---------------------------------------------------------------------------------
def test_encoder_audit_writes_the_standard_run_directory(tmp_path):
    config = {"seed": 1, "dataset": {"source": "digits"},
              "split": {"n_members": 48, "n_nonmembers": 48, "n_shadow_members": 48, "n_shadow_nonmembers": 48},
              "encoder": {"epochs": 3, "batch_size": 24, "width": 32, "embed_dim": 8, "proj_dim": 8},
              "features": {"n_views": 4, "similarity": "correlation"},
              "attacks": [{"name": "encodermi_t"}, {"name": "encodermi_v", "params": {"epochs": 20}}],
              "evaluation": {"n_bootstrap": 20}}
    metrics = run_encoder_audit(config, tmp_path / "run", progress=False)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["kind"] == metrics["kind"] == "encoder"
    assert [a["name"] for a in saved["attacks"]] == ["encodermi_t", "encodermi_v"]
    for entry in saved["attacks"]:
        assert set(entry["tpr_at_fpr"]) == {"0.001", "0.01", "0.05"}
        assert entry["auc_ci"][0] <= entry["auc"] <= entry["auc_ci"][1]
        assert 0 <= entry["balanced_accuracy"] <= 1 and entry["threshold_source"] == "reference"
    assert saved["data"]["n_members"] == 48 and (tmp_path / "run" / "similarity_features.npz").is_file()
    with pytest.raises(ConfigError, match="encoder.seed"):
        run_encoder_audit({**config, "encoder": {"seed": 3}}, tmp_path / "other", progress=False)


def test_the_example_config_parses():
    from pathlib import Path

    from miaudit.runs import parse_config

    config = parse_config(Path(__file__).parents[1] / "examples" / "encodermi.yaml")
    assert config.kind == "encoder" and [a.name for a in config.attacks] == ["encodermi_v", "encodermi_s",
                                                                             "encodermi_t"]
    assert config.encoder.augment.crop_scale == (0.6, 1.0)


def test_your_own_encoder_gives_the_features_of_the_same_encoder_trained_by_the_tool(tmp_path):
    """The user's encoder (class + state dict) on the user's image files: the same weights on the same images
    give exactly the target features of the audit that trained it; the dataset only feeds the shadow encoder."""
    import dataclasses

    import torch

    from miaudit.data import load_dataset, make_split
    from miaudit.encoder.train import EncoderTrainConfig, train_simclr
    from miaudit.utils.seed import derive_seed

    config = {"seed": 1, "dataset": {"source": "digits"},
              "split": {"n_members": 48, "n_nonmembers": 48, "n_shadow_members": 48, "n_shadow_nonmembers": 48},
              "encoder": {"epochs": 3, "batch_size": 24, "width": 32, "embed_dim": 8, "proj_dim": 8},
              "features": {"n_views": 4}, "attacks": [{"name": "encodermi_t"}], "evaluation": {"n_bootstrap": 20}}
    run_encoder_audit(config, tmp_path / "trained", progress=False)
    digits = load_dataset("digits", seed=1)
    split = make_split(len(digits), n_members=48, n_nonmembers=48, n_shadow=96, seed=derive_seed(1, "split"))
    recipe = dataclasses.replace(EncoderTrainConfig(**config["encoder"]), seed=derive_seed(1, "target"))
    torch.save(train_simclr(digits.x[split.target_members], recipe, progress=False).encoder.state_dict(),
               tmp_path / "encoder.pt")
    for name, rows in (("members", split.target_members), ("nonmembers", split.target_nonmembers)):
        np.savez(tmp_path / f"{name}.npz", x=digits.x[rows], ids=np.array([f"img-{i}" for i in rows]))
    target = {"torch_module": {"path": str(tmp_path / "encoder.pt"), "class": "miaudit.encoder.model:MLPEncoder",
                               "kwargs": {"input_shape": [1, 8, 8], "width": 32, "embed_dim": 8}},
              "trust_code": True, "members": str(tmp_path / "members.npz"),
              "nonmembers": str(tmp_path / "nonmembers.npz")}
    split_config = {"n_shadow_members": 48, "n_shadow_nonmembers": 48}
    metrics = run_encoder_audit({**config, "split": split_config, "target": target}, tmp_path / "yours",
                                progress=False)
    with np.load(tmp_path / "trained" / "similarity_features.npz") as a, \
            np.load(tmp_path / "yours" / "similarity_features.npz") as b:
        np.testing.assert_allclose(b["target"], a["target"], rtol=1e-6, atol=1e-7)
        assert (b["membership"] == a["membership"]).all() and b["ids"][0] == f"img-{split.target_members[0]}"
    assert metrics["target"]["source"] == "torch_module"
    assert metrics["target"]["model"] == "miaudit.encoder.model:MLPEncoder"
    assert metrics["data"]["audited_from"] == "members.npz + nonmembers.npz" and metrics["data"]["n_members"] == 48
    assert any("must not overlap your encoder's pre-training images" in w for w in metrics["warnings"])


@pytest.mark.parametrize("change, message", [
    ({"split": {"n_members": 10}}, "config.split.n_members: your encoder is audited on the images of target.members"),
    ({"target": {"trust_code": False}}, "config.target.trust_code: true"),
    ({"target": {"nonmembers": "wrong_shape.npz"}}, "has shape (4, 1, 4, 4), but the audit needs images (n, 1, 8, 8)"),
])
def test_your_own_encoder_config_errors_name_the_fix(tmp_path, change, message):
    import torch

    from miaudit.encoder.model import MLPEncoder
    from miaudit.errors import MiauditError

    torch.save(MLPEncoder((1, 8, 8), 16, 4).state_dict(), tmp_path / "e.pt")
    np.savez(tmp_path / "m.npz", x=np.zeros((4, 1, 8, 8), np.float32))
    np.savez(tmp_path / "wrong_shape.npz", x=np.zeros((4, 1, 4, 4), np.float32))
    target = {"torch_module": {"path": str(tmp_path / "e.pt"), "class": "miaudit.encoder.model:MLPEncoder",
                               "kwargs": {"input_shape": [1, 8, 8], "width": 16, "embed_dim": 4}},
              "trust_code": True, "members": str(tmp_path / "m.npz"), "nonmembers": str(tmp_path / "m.npz")}
    target.update({k: (str(tmp_path / v) if k == "nonmembers" else v) for k, v in change.get("target", {}).items()})
    config = {"dataset": {"source": "digits"}, "split": {"n_shadow_members": 8, "n_shadow_nonmembers": 8,
                                                         **change.get("split", {})},
              "encoder": {"epochs": 1, "batch_size": 8, "width": 8, "embed_dim": 4, "proj_dim": 4},
              "features": {"n_views": 2}, "attacks": [{"name": "encodermi_t"}], "target": target}
    with pytest.raises(MiauditError) as info:
        run_encoder_audit(config, tmp_path / "run", progress=False)
    assert message in str(info.value)
    assert not (tmp_path / "run").exists()
