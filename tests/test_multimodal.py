"""Image-text dual encoders: data, tokenizer, contrastive training, split by matching unit, targets
(miaudit's model, a tiny Hugging Face CLIP, open_clip glue), signals, attacks and the audit."""

import io
import json
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

from contract.multimodal import make_case, pair_signals
from miaudit.attacks.registry import create_attack
from miaudit.cli import main
from miaudit.errors import ConfigError, DataError, SignalError
from miaudit.evaluation import roc_auc
from miaudit.multimodal import (
    DualEncoderTrainConfig,
    HFCLIPTarget,
    MultimodalReference,
    OpenCLIPTarget,
    PairSignals,
    SplitSizes,
    WordTokenizer,
    clip_loss,
    load_image_text,
    make_pair_split,
    pair_contrastive_loss,
    pair_cosine,
    per_record,
    retrieve,
    train_dual_encoder,
)
from miaudit.multimodal.audit import run_multimodal_audit
from miaudit.multimodal.textmetrics import lcs_length, rouge_l, rouge_n, rouge_scores
from miaudit.multimodal.train import augment_batch
from miaudit.runs.config import EvaluationConfig

WORDS = ["dog", "cat", "runs", "sits", "red", "blue", "grass", "snow", "ball", "child", "water", "jumps"]


# -- helpers: a Flickr8k-format folder and a pair .npz built here ----------------------------------
def _jpeg(rng, size=24):
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return np.frombuffer(buf.getvalue(), dtype=np.uint8)


def write_folder(folder, n_images=12, captions_per_image=3, seed=0, *, images=True, captions=True, skip=()):
    """Flickr8k layout: one .npz of JPEG bytes and captions.jsonl (images in ``skip`` get no caption)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    if images:
        blobs = [_jpeg(rng) for _ in range(n_images)]
        offsets = np.concatenate([[0], np.cumsum([b.size for b in blobs])]).astype(np.int64)
        np.savez(folder / "images.npz", jpeg=np.concatenate(blobs), offsets=offsets,
                 image_ids=np.array([f"img{i}.jpg" for i in range(n_images)]))
    if captions:
        with open(folder / "captions.jsonl", "w") as f:
            for i in range(n_images):
                for k in range(0 if i in skip else captions_per_image):
                    text = " ".join(rng.choice(WORDS, 5))
                    f.write(json.dumps({"image_index": i, "caption": f"a {text} .", "caption_number": k}) + "\n")
    return folder


# -- data --------------------------------------------------------------------------------------
def test_folder_dataset_loads_and_groups_captions(tmp_path):
    ds = load_image_text(write_folder(tmp_path / "d"), image_size=16)
    assert ds.images.shape == (12, 3, 16, 16) and ds.images.dtype == np.uint8 and len(ds.captions) == 36
    assert [list(c) for c in ds.captions_of()[:2]] == [[0, 1, 2], [3, 4, 5]]
    assert ds.pixels(np.array([0])).dtype == np.float32 and 0 <= ds.pixels(np.arange(12)).min()
    assert load_image_text(tmp_path / "d", image_size=16, limit=4).n_images == 4


@pytest.mark.parametrize("kwargs,message", [
    ({"images": False}, "has a caption file (captions.jsonl) but no images"),
    ({"captions": False}, "no captions.jsonl; images without captions"),
    ({"skip": (3,)}, "1 of 12 images have no caption (first: img3.jpg)"),
])
def test_bad_folders_are_one_line_errors(tmp_path, kwargs, message):
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_image_text(write_folder(tmp_path / "d", **kwargs))


def test_a_caption_for_a_missing_image_is_an_error(tmp_path):
    folder = write_folder(tmp_path / "d")
    with open(folder / "captions.jsonl", "a") as f:
        f.write(json.dumps({"image_index": 40, "caption": "a dog"}) + "\n")
    with pytest.raises(DataError, match="refers to image 40 but there are only 12 images"):
        load_image_text(folder)


@pytest.mark.parametrize("arrays,message", [
    ({"images": np.zeros((3, 8, 8, 3), np.uint8), "captions": np.array(["a", "b"])}, "mismatched pair counts, 3 images "
                                                                                       "but 2 captions"),
    ({"captions": np.array(["a dog", "a cat"])}, "has captions but no 'images'"),
    ({"images": np.zeros((2, 8, 8, 3), np.uint8)}, "no 'captions' array"),
    ({"images": np.zeros((2, 8, 8, 3), np.uint8), "captions": np.array(["a", "b"]),
      "image_ids": np.array(["x"])}, "2 images but 1 image_ids"),
])
def test_bad_pair_files_are_one_line_errors(tmp_path, arrays, message):
    np.savez(tmp_path / "pairs.npz", **arrays)
    with pytest.raises(DataError, match=message):
        load_image_text(tmp_path / "pairs.npz")


def test_pair_npz_with_membership(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "pairs.npz", images=rng.integers(0, 256, (4, 20, 20, 3), dtype=np.uint8),
             captions=np.array(["a dog", "a cat", "a red ball", "snow"]), membership=np.array([1, 0, 1, 0], bool))
    ds = load_image_text(tmp_path / "pairs.npz", image_size=8)
    assert ds.images.shape == (4, 3, 8, 8) and list(ds.membership) == [True, False, True, False]


def test_the_real_flickr8k(shared_data):
    ds = load_image_text("flickr8k", data_dir=shared_data, image_size=32)
    assert ds.n_images == 8091 and len(ds.captions) == 40455
    assert {len(c) for c in ds.captions_of()} == {5} and ds.image_ids[0] == "1000268201_693b08cb0e.jpg"


# -- tokenizer, loss, training -----------------------------------------------------------------
def test_word_tokenizer_pads_cuts_and_marks_unknown_words():
    tok = WordTokenizer.build(["a dog runs", "a dog sits", "a cat"], min_count=2, max_words=3)
    assert tok.vocabulary == ["a", "dog"] and tok.vocab_size == 4
    np.testing.assert_array_equal(tok.encode(["A dog, a DOG", "zebra", "..."]), [[2, 3, 2], [1, 0, 0], [1, 0, 0]])


def test_clip_loss_matches_a_naive_loop():
    logits = torch.randn(4, 4, generator=torch.Generator().manual_seed(0))
    rows = [-torch.log_softmax(logits[i], 0)[i] for i in range(4)]
    cols = [-torch.log_softmax(logits[:, i], 0)[i] for i in range(4)]
    torch.testing.assert_close(clip_loss(logits), 0.5 * (torch.stack(rows).mean() + torch.stack(cols).mean()))


def test_augmentation_flips_and_shifts_within_the_padding():
    x = torch.rand(6, 3, 16, 16)
    a = augment_batch(x, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, augment_batch(x, torch.Generator().manual_seed(3)))
    assert a.shape == x.shape and not torch.equal(a, x)
    assert torch.allclose(a[:, :, 4:12, 4:12].mean(), x.mean(), atol=0.1)


def test_training_is_deterministic_and_learns_the_pairs():
    rng = np.random.default_rng(0)
    images = rng.random((32, 3, 16, 16)).astype(np.float32)
    tok = WordTokenizer(WORDS)
    captions = [" ".join(rng.choice(WORDS, 4)) for _ in range(32)]
    ids, caps = tok.encode(captions), [np.array([i]) for i in range(32)]
    cfg = DualEncoderTrainConfig(image_width=8, text_width=16, embed_dim=8, epochs=30, batch_size=16, lr=5e-3,
                                 augment=False)
    a = train_dual_encoder(images, ids, caps, tok.vocab_size, cfg, progress=False)
    b = train_dual_encoder(images, ids, caps, tok.vocab_size, cfg, progress=False)
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        torch.testing.assert_close(p, q)
    assert a.history[-1]["loss"] < 0.5 * a.history[0]["loss"]
    with pytest.raises(ConfigError, match="at least 2 pairs"):
        DualEncoderTrainConfig(batch_size=1)


# -- split by matching unit --------------------------------------------------------------------
@pytest.fixture(scope="module")
def folder_dataset(tmp_path_factory):
    return load_image_text(write_folder(tmp_path_factory.mktemp("mm") / "d", n_images=60, captions_per_image=4),
                           image_size=16)


SIZES = SplitSizes(n_members=8, n_nonmembers=8, n_shadow_members=6, n_shadow_nonmembers=6, n_mfe=5, n_gallery=7)


@pytest.mark.parametrize("unit", ["pair", "image", "caption"])
def test_split_roles_are_disjoint_and_follow_the_unit(folder_dataset, unit):
    split = make_pair_split(folder_dataset, SIZES, unit, seed=1)
    target, train = split.target.audited, split.target.train
    roles = [set(target.image), set(split.shadow.audited.image), set(split.mfe.images), set(split.gallery.image)]
    assert sum(len(r) for r in roles) == len(set().union(*roles))  # disjoint images
    trained = {(i, c) for i, cs in zip(train.images, train.captions_of) for c in cs}
    records = [(i, set(target.captions[target.owner == r])) for r, i in enumerate(target.image)]
    assert target.membership.sum() == 8
    if unit == "pair":
        assert all(len(c) == 1 for _, c in records) and len(set(target.image)) == 16
    if unit == "image":
        assert all(len(c) == 4 for _, c in records)
    if unit == "caption":
        assert len(set(target.image)) == 8 and set(target.image[~target.membership]) == set(target.image)
    for (i, caps), member in zip(records, target.membership):
        assert all(((i, c) in trained) == member for c in caps)


def test_split_of_a_model_the_user_brings_uses_the_membership(folder_dataset):
    ds = folder_dataset
    ds.membership = np.arange(ds.n_images) < 20
    try:
        split = make_pair_split(ds, SIZES, "image", seed=0, train_target=False)
        assert split.target.train is None
        assert ds.membership[split.target.audited.image].tolist() == split.target.audited.membership.tolist()
        assert not ds.membership[split.shadow.audited.image].any() and not ds.membership[split.gallery.image].any()
        with pytest.raises(ConfigError, match="only available for models miaudit trains"):
            make_pair_split(ds, SIZES, "caption", seed=0, train_target=False)
    finally:
        ds.membership = None
    with pytest.raises(DataError, match="no 'membership' array"):
        make_pair_split(ds, SIZES, "pair", seed=0, train_target=False)


def test_split_too_large_for_the_dataset(folder_dataset):
    with pytest.raises(DataError, match="lower the sizes in config.split"):
        make_pair_split(folder_dataset, SplitSizes(n_members=50, n_nonmembers=50), "pair", seed=0)


# -- signals -----------------------------------------------------------------------------------
def test_cosine_loss_and_retrieval_by_hand():
    rng = np.random.default_rng(0)
    s = pair_signals(np.array([True, False, True]), rng)
    s = PairSignals(s.ids, s.image_emb, np.vstack([s.text_emb, s.image_emb[0]]), np.array([0, 1, 2, 0]),
                    [*s.captions, "extra"], s.gallery_image_emb, s.gallery_text_emb, s.gallery_captions, 7.0)
    cos = pair_cosine(s)
    assert cos[3] == pytest.approx(1.0) and cos[0] == pytest.approx(s.image_emb[0] @ s.text_emb[0])
    np.testing.assert_allclose(per_record(cos, s.owner, 3), [(cos[0] + cos[3]) / 2, cos[1], cos[2]])
    loss = pair_contrastive_loss(s)
    for j, r in enumerate(s.owner):
        texts = np.vstack([s.text_emb[j], s.gallery_text_emb]) @ s.image_emb[r] * 7.0
        images = np.vstack([s.image_emb[r], s.gallery_image_emb]) @ s.text_emb[j] * 7.0
        want = 0.5 * (-torch.log_softmax(torch.tensor(texts), 0)[0] - torch.log_softmax(torch.tensor(images), 0)[0])
        assert loss[j] == pytest.approx(float(want))
    own, index = retrieve(s, 2)
    assert own[0, 0] and index[0, 0] == 3  # the identical "extra" caption ranks first for image 0


@pytest.mark.parametrize("top_k", [1, 3])
def test_retrieve_matches_brute_force(top_k):
    rng = np.random.default_rng(1)
    base = pair_signals(np.array([True, False, True, False]), rng)
    owner = np.array([0, 0, 1, 2, 3, 3, 3])
    s = PairSignals(base.ids, base.image_emb, rng.standard_normal((7, 16)), owner, [str(i) for i in range(7)],
                    base.gallery_image_emb, base.gallery_text_emb, base.gallery_captions, 5.0)
    own, index = retrieve(s, top_k)
    for r in range(4):
        candidates = [(s.image_emb[r] @ s.text_emb[j], True, j) for j in np.flatnonzero(owner == r)]
        candidates += [(s.image_emb[r] @ g, False, k) for k, g in enumerate(s.gallery_text_emb)]
        best = sorted(candidates, key=lambda c: -c[0])[:top_k]
        assert [(o, i) for _, o, i in best] == [(bool(o), int(i)) for o, i in zip(own[r], index[r])]


def test_pair_signals_refuse_bad_embeddings():
    s = pair_signals(np.array([True, False]), np.random.default_rng(0))
    bad = s.image_emb.copy()
    bad[0, 0] = np.nan
    with pytest.raises(SignalError, match="NaN"):
        PairSignals(s.ids, bad, s.text_emb, s.owner, s.captions, s.gallery_image_emb, s.gallery_text_emb,
                    s.gallery_captions, 1.0)
    with pytest.raises(SignalError, match="every record needs at least one caption"):
        PairSignals(s.ids, s.image_emb, s.text_emb, np.array([0, 0]), s.captions, s.gallery_image_emb,
                    s.gallery_text_emb, s.gallery_captions, 1.0)


def test_rouge_by_hand():
    assert rouge_n("the cat sat".split(), "the cat sat on the mat".split(), 1) == pytest.approx(2 / 3)
    assert rouge_n("the cat".split(), "a cat".split(), 2) == 0.0
    assert lcs_length("a b c d".split(), "a c d b".split()) == 3
    assert rouge_l("a b c d".split(), "a c d b".split()) == pytest.approx(0.75)
    np.testing.assert_allclose(rouge_scores("A dog runs.", ["a dog runs", "a cat"]), [(1 + 0.4) / 2, (1 + 0) / 2,
                                                                                       (1 + 0.4) / 2])


# -- targets -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A tiny CLIPModel saved with a word-level tokenizer (built here: no download)."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers

    folder = tmp_path_factory.mktemp("clip")
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", *WORDS, "a", "."])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")
    fast.save_pretrained(folder)
    config = transformers.CLIPConfig(
        text_config={"vocab_size": len(vocab), "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 16, "pad_token_id": 0, "eos_token_id": 1},
        vision_config={"image_size": 16, "patch_size": 8, "hidden_size": 16, "intermediate_size": 32,
                       "num_hidden_layers": 1, "num_attention_heads": 2},
        projection_dim=8)
    torch.manual_seed(0)
    transformers.CLIPModel(config).save_pretrained(folder)
    return folder


def test_hugging_face_clip_from_a_folder(tiny_clip):
    target = HFCLIPTarget.from_pretrained(str(tiny_clip), local_files_only=True)
    images = np.random.default_rng(0).random((5, 3, 24, 24)).astype(np.float32)
    emb = target.embed_images(images)
    text = target.embed_texts(["a dog runs .", "a cat", "snow"])
    assert emb.shape == (5, 8) and text.shape == (3, 8)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0)
    assert target.image_size == 16 and target.logit_scale == pytest.approx(np.exp(2.6592), rel=1e-4)
    with torch.no_grad():  # the same as the model's own projection of the resized, normalised images
        pixels = torch.nn.functional.interpolate(torch.from_numpy(images), size=(16, 16), mode="bilinear",
                                                 antialias=True)
        mean, std = torch.tensor(target.mean).view(1, 3, 1, 1), torch.tensor(target.std).view(1, 3, 1, 1)
        out = target.model.get_image_features(pixel_values=(pixels - mean) / std)
        out = out if isinstance(out, torch.Tensor) else out.pooler_output
    np.testing.assert_allclose(emb, torch.nn.functional.normalize(out, dim=-1).numpy(), atol=1e-5)


def test_hugging_face_load_failure_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="cannot load CLIP model"):
        HFCLIPTarget.from_pretrained(str(tmp_path / "nothing"), local_files_only=True)


class _FakeOpenCLIP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.visual = types.SimpleNamespace(image_size=(12, 12))
        self.image = torch.nn.Linear(3 * 12 * 12, 4)
        self.text = torch.nn.EmbeddingBag(50, 4)
        self.logit_scale = torch.nn.Parameter(torch.tensor(np.log(50.0), dtype=torch.float32))
        self.seen_sizes = []

    def encode_image(self, x):
        self.seen_sizes.append(tuple(x.shape[-2:]))
        return self.image(x.flatten(1))

    def encode_text(self, ids):
        return self.text(ids)


def test_open_clip_glue_with_a_stand_in_module(monkeypatch):
    """open_clip is not installable here (its torchvision needs CUDA torch): the glue runs on a stand-in module."""
    model = _FakeOpenCLIP()
    calls = {}

    def create_model_and_transforms(name, pretrained=None):
        calls["args"] = (name, pretrained)
        normalize = type("Normalize", (), {"mean": (0.5, 0.5, 0.5), "std": (0.2, 0.2, 0.2)})()
        return model, None, types.SimpleNamespace(transforms=[normalize])

    fake = types.SimpleNamespace(create_model_and_transforms=create_model_and_transforms,
                                 get_tokenizer=lambda name: lambda texts: torch.tensor([[len(t) % 50] for t in texts]))
    monkeypatch.setitem(sys.modules, "open_clip", fake)
    target = OpenCLIPTarget.from_pretrained("hf-hub:org/tiny", pretrained=None)
    assert calls["args"] == ("hf-hub:org/tiny", None) and target.mean == (0.5, 0.5, 0.5)
    assert target.embed_images(np.zeros((3, 3, 32, 32), np.float32) + 0.3).shape == (3, 4)
    assert model.seen_sizes == [(12, 12)] and target.embed_texts(["a", "bb"]).shape == (2, 4)
    assert target.logit_scale == pytest.approx(50.0)


def test_open_clip_missing_is_a_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)
    with pytest.raises(ConfigError, match="open_clip_torch"):
        OpenCLIPTarget.from_pretrained("ViT-B-32")


# -- attacks -----------------------------------------------------------------------------------
def test_calibrated_cosine_subtracts_the_reference_and_checks_the_records():
    reference, target, labels = make_case(None)
    attack = create_attack("cosine_calibrated").fit(reference)
    want = per_record(pair_cosine(target), target.owner, len(target)) - per_record(
        pair_cosine(reference.calibration), reference.calibration.owner, len(target))
    np.testing.assert_allclose(attack.score(target), want)
    with pytest.raises(SignalError, match="same audited records"):
        attack.score(reference.shadow[0])
    with pytest.raises(DataError, match="reference model's signals"):
        create_attack("cosine_calibrated").fit(MultimodalReference(reference.shadow, reference.shadow_membership))


def test_threshold_attacks_take_their_threshold_from_shadow_data_only():
    reference, target, labels = make_case(None)
    attack = create_attack("cosine_similarity").fit(None)
    assert attack.decision_threshold is None and roc_auc(labels, attack.score(target)) > 0.95
    assert create_attack("cosine_similarity").fit(reference).decision_threshold is not None


def test_m4i_features_need_their_inputs():
    reference, target, _ = make_case(None)
    bare = PairSignals(target.ids, target.image_emb, target.text_emb, target.owner, target.captions,
                       target.gallery_image_emb, target.gallery_text_emb, target.gallery_captions, 10.0)
    attack = create_attack("m4i_feature").fit(reference)
    with pytest.raises(SignalError, match="feature extractor"):
        attack.score(bare)
    with pytest.raises(DataError, match="MultimodalReference"):
        create_attack("m4i_metric").fit(target)
    with pytest.raises(SignalError, match="PairSignals"):
        create_attack("contrastive_loss").score(np.zeros(3))


def test_m4i_parameters_are_validated_and_the_learned_state_is_reported():
    with pytest.raises(ConfigError, match="top_k"):
        create_attack("m4i_metric", top_k=0)
    with pytest.raises(ConfigError, match="hidden"):
        create_attack("m4i_feature", hidden=[])
    state = create_attack("m4i_metric").fit(make_case(None)[0]).learned_state()
    assert state["n_features"] == 3 and 0.5 < state["shadow_train_auc"] <= 1


# -- the audit ---------------------------------------------------------------------------------
def _audit_config(folder, **changes):
    config = {"seed": 2, "dataset": {"source": str(folder), "options": {"image_size": 16}},
              "split": {"unit": "pair", "n_members": 12, "n_nonmembers": 12, "n_shadow_members": 12,
                        "n_shadow_nonmembers": 12, "n_mfe": 10, "n_gallery": 10},
              "model": {"epochs": 3, "batch_size": 8, "image_width": 8, "text_width": 16, "embed_dim": 8,
                        "min_word_count": 1},
              "evaluation": {"n_bootstrap": 20}}
    return {**config, **changes}


@pytest.fixture(scope="module")
def audit_folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("mm-audit") / "pairs", n_images=80, captions_per_image=2, seed=3)


def test_multimodal_audit_writes_the_standard_run_directory(audit_folder, tmp_path):
    metrics = run_multimodal_audit(_audit_config(audit_folder), tmp_path / "run", progress=False)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["kind"] == metrics["kind"] == "multimodal"
    assert [a["name"] for a in saved["attacks"]] == ["cosine_similarity", "cosine_calibrated", "contrastive_loss",
                                                     "m4i_metric", "m4i_feature"]
    for entry in saved["attacks"]:
        assert entry["auc_ci"][0] <= entry["auc"] <= entry["auc_ci"][1] and entry["citation"]
    assert saved["data"]["unit"] == "pair" and saved["data"]["n_members"] == 12 and "unit_description" in saved["data"]
    assert saved["shadow"]["n_train_images"] == 12 and saved["feature_extractor"]["n_train_captions"] == 20
    assert 0 <= saved["target"]["retrieval_top1_members"] <= 1
    signals = np.load(tmp_path / "run" / "pair_signals.npz")
    assert signals["cosine"].shape == (24,) and signals["membership"].sum() == 12
    again = run_multimodal_audit(_audit_config(audit_folder), tmp_path / "again", progress=False)
    assert [a["auc"] for a in again["attacks"]] == [a["auc"] for a in metrics["attacks"]]


def test_reference_free_audit_trains_no_shadow(audit_folder, tmp_path):
    config = _audit_config(audit_folder, attacks=[{"name": "cosine_similarity"}, {"name": "contrastive_loss"}],
                           split={"unit": "image", "n_members": 20, "n_nonmembers": 20, "n_gallery": 10})
    metrics = run_multimodal_audit(config, tmp_path / "run", progress=False)
    assert "shadow" not in metrics and metrics["data"]["n_record_captions"] == 80
    assert metrics["warnings"] == ["config.split.n_mfe is set but no attack uses the feature extractor; it was not "
                                   "trained", EvaluationConfig(n_bootstrap=20).interval_warning()]


def test_audit_of_a_hugging_face_clip_uses_the_dataset_membership(tiny_clip, tmp_path):
    rng = np.random.default_rng(0)
    n = 60
    np.savez(tmp_path / "pairs.npz", images=rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8),
             captions=np.array([" ".join(rng.choice(WORDS, 4)) for _ in range(n)]),
             membership=np.arange(n) < 20)
    config = _audit_config(tmp_path / "pairs.npz", target={"source": "huggingface", "name_or_path": str(tiny_clip),
                                                           "local_files_only": True},
                           split={"unit": "image", "n_members": 15, "n_nonmembers": 10, "n_shadow_members": 8,
                                  "n_shadow_nonmembers": 8, "n_mfe": 0, "n_gallery": 10},
                           attacks=[{"name": "cosine_similarity"}, {"name": "m4i_metric"}])
    metrics = run_multimodal_audit(config, tmp_path / "run", progress=False)
    assert metrics["target"]["source"] == "huggingface" and metrics["data"]["n_members"] == 15


@pytest.mark.parametrize("changes,message", [
    ({"split": {"n_members": 12, "n_nonmembers": 12, "n_shadow_members": 0, "n_shadow_nonmembers": 0}},
     "'cosine_calibrated' needs a shadow model"),
    ({"dataset": {"source": "flickr8k", "options": {"size": 3}}}, "unknown key 'size'"),
    ({"model": {"seed": 3}}, "config.model.seed: remove it"),
    ({"attacks": [{"name": "loss"}]}, "not multimodal"),
    ({"target": {"source": "huggingface"}}, "name_or_path: required"),
])
def test_bad_configs_are_config_errors(audit_folder, tmp_path, changes, message):
    with pytest.raises(ConfigError, match=message):
        run_multimodal_audit(_audit_config(audit_folder, **changes), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_cli_bad_dataset_exit_code_2_one_line(tmp_path, capsys):
    folder = write_folder(tmp_path / "captions-only", images=False)
    config = tmp_path / "audit.yaml"
    config.write_text(json.dumps({"kind": "multimodal", "dataset": {"source": str(folder)}}))
    assert main(["audit", str(config), "--out", str(tmp_path / "out"), "-q", "--no-store"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no images" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_the_example_config_parses_and_list_knows_the_kind(capsys):
    from pathlib import Path

    from miaudit.runs import parse_config

    config = parse_config(Path(__file__).parents[1] / "examples" / "multimodal_flickr8k.yaml")
    assert config.kind == "multimodal" and config.split.unit == "pair" and config.model.epochs == 30
    assert [a.name for a in config.attacks] == ["cosine_similarity", "cosine_calibrated", "contrastive_loss",
                                                "m4i_metric", "m4i_feature"]
    assert main(["list", "attacks", "--kind", "multimodal"]) == 0
    assert "m4i_feature" in capsys.readouterr().out
    assert main(["list", "attacks", "--kind", "nope"]) == 2
    assert "choose one of" in capsys.readouterr().err
