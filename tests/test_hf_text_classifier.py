"""Hugging Face text classifiers as classifier targets, with a tiny BERT built here (no downloads)."""

import csv
import json
import warnings

import numpy as np
import pytest
import torch

from miaudit.classifier.families import ModelFactory, TorchFamily
from miaudit.classifier.targets.hf_text import HFTextClassifier, HFTextSource, load_tokenizer, text_examples
from miaudit.classifier.training import TrainConfig, train_classifier
from miaudit.errors import ConfigError, DataError
from miaudit.runs import parse_config, run_audit

transformers = pytest.importorskip("transformers")
WORDS = [f"w{i}" for i in range(60)] + ["good", "great", "bad", "awful"]
RECIPE = {"epochs": 40, "batch_size": 16, "lr": 0.003}


def _texts(n: int, seed: int) -> list[dict]:
    """Random word strings; the label follows a sentiment word in 60% of them, else it is a coin flip."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        label = int(rng.integers(2))
        words = list(rng.choice(WORDS[:60], size=8))
        if rng.random() < 0.6:
            words[int(rng.integers(8))] = rng.choice(["good", "great"] if label else ["bad", "awful"])
        rows.append({"text": " ".join(words), "label": ["neg", "pos"][label]})
    return rows


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    """A 1-layer BERT (hidden 16) saved as the base checkpoint, then fine-tuned on 40 member texts (the target)."""
    folder = tmp_path_factory.mktemp("bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = transformers.BertTokenizer(str(folder / "vocab.txt"), do_lower_case=True)  # positional: v4 and v5
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=32, max_position_embeddings=32,
                                     num_labels=2, id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1})
    torch.manual_seed(0)
    transformers.BertForSequenceClassification(config).save_pretrained(folder / "base")
    tokenizer.save_pretrained(folder / "base")
    for name, (n, seed) in {"members": (40, 1), "nonmembers": (40, 2), "population": (40, 3),
                            "shadow": (80, 4)}.items():
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _texts(n, seed)))
    with open(folder / "nonmembers.csv", "w", newline="") as handle:  # the same texts as CSV, labels as indices
        writer = csv.DictWriter(handle, fieldnames=["label", "text"])
        writer.writeheader()
        writer.writerows({"label": ["neg", "pos"].index(r["label"]), "text": r["text"]} for r in _texts(40, 2))
    members = text_examples(folder / "members.jsonl", tokenizer, max_length=12, label2id=config.label2id,
                            n_classes=2)
    torch.manual_seed(1)
    model = HFTextClassifier(str(folder / "base"))
    train_classifier(model, members, TrainConfig(seed=1, **RECIPE), progress=False)
    model.model.save_pretrained(folder / "target")
    tokenizer.save_pretrained(folder / "target")
    return folder


def _config(folder, **target):
    return {
        "seed": 0,
        "dataset": {"source": str(folder / "shadow.jsonl")},
        "split": {"n_shadow": 80},
        "target": {"hf_classifier": {"path": str(folder / "target"), "base": str(folder / "base"), "max_length": 12},
                   "members": str(folder / "members.jsonl"), "nonmembers": str(folder / "nonmembers.csv"),
                   "population": str(folder / "population.jsonl"), **target},
        "training": RECIPE,
        "shadow": {"n_models": 1},
        "reference": {"n_models": 2},
        "attacks": [{"name": "loss"}, {"name": "confidence", "params": {"per_class": True}},
                    {"name": "gradient_norm"}, {"name": "lira", "params": {"variance": "global"}},
                    {"name": "rmia", "params": {"online": True}}],
        "evaluation": {"n_bootstrap": 20},
    }


def test_texts_are_tokenised_into_ids_and_masks(bert):
    tokenizer = load_tokenizer(str(bert / "target"))
    data = text_examples(bert / "members.jsonl", tokenizer, max_length=12, label2id={"neg": 0, "pos": 1},
                         n_classes=2)
    assert data.x.shape == (40, 2, 12) and data.x.dtype == np.float32 and set(data.y) == {0, 1}
    assert tokenizer.unk_token_id not in data.x[:, 0]  # every word is in the vocabulary
    first = tokenizer(json.loads((bert / "members.jsonl").read_text().splitlines()[0])["text"], max_length=12,
                      padding="max_length", truncation=True)
    np.testing.assert_array_equal(data.x[0, 0], first["input_ids"])
    np.testing.assert_array_equal(data.x[0, 1], first["attention_mask"])
    (bert / "odd.csv").write_text("text,label\nhello,maybe\n")
    with pytest.raises(DataError, match="label 'maybe' is neither a class index nor a label the model knows"):
        text_examples(bert / "odd.csv", tokenizer, max_length=12, label2id={"neg": 0, "pos": 1})


def test_hf_text_classifier_audit_with_fine_tuned_reference_and_shadow_models(bert, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_audit(parse_config(_config(bert)), tmp_path / "run", progress=False)
    target = result["target"]
    assert target["source"] == "hf_classifier" and target["access"] == "logits"
    assert target["train_accuracy"] == 1.0 and target["test_accuracy"] < 1.0  # the fine-tuned model memorised
    reference = result["reference"]
    assert reference["models"].startswith(f"{bert / 'base'} fine-tuned trained by miaudit's loop (40 epochs")
    assert reference["fidelity"]["reference"]["train_accuracy"] > 0.9  # fine-tuned by the same recipe
    assert result["shadow"]["train_accuracy_mean"] > 0.9
    attacks = {a["name"]: a for a in result["attacks"]}
    assert attacks["loss"]["auc"] > 0.6 and np.isfinite(attacks["gradient_norm"]["auc"])
    assert result["data"]["n_population"] == 40


def test_reference_models_start_from_the_base_checkpoint_not_the_target(bert):
    factory = ModelFactory((2, 12), 2, TrainConfig(**RECIPE), "miaudit.classifier.targets.hf_text:HFTextClassifier",
                           {"source": str(bert / "base"), "n_labels": 2})
    fresh = TorchFamily(factory).factory.build(seed=5)
    base = transformers.AutoModelForSequenceClassification.from_pretrained(bert / "base")
    target = transformers.AutoModelForSequenceClassification.from_pretrained(bert / "target")
    weight = "bert.encoder.layer.0.attention.self.query.weight"
    torch.testing.assert_close(fresh.model.state_dict()[weight], base.state_dict()[weight])
    assert not torch.equal(fresh.model.state_dict()[weight], target.state_dict()[weight])


def test_csv_jsonl_and_parquet_files_give_the_same_examples(bert, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in (bert / "nonmembers.jsonl").read_text().splitlines()]
    pq.write_table(pa.table({"text": [r["text"] for r in rows], "label": [r["label"] for r in rows]}),
                   tmp_path / "nonmembers.parquet")
    source = HFTextSource({"path": str(bert / "target"), "max_length": 12})
    from_csv, from_jsonl = source.examples(bert / "nonmembers.csv"), source.examples(bert / "nonmembers.jsonl")
    from_parquet = source.examples(tmp_path / "nonmembers.parquet")
    for other in (from_jsonl, from_parquet):
        np.testing.assert_array_equal(from_csv.x, other.x)
        np.testing.assert_array_equal(from_csv.y, other.y)


def test_hf_text_classifier_config_errors(bert, tmp_path):
    config = _config(bert)
    config["target"]["hf_classifier"].pop("base")
    with pytest.raises(ConfigError, match="hf_classifier.base: shadow and reference models are fine-tuned"):
        run_audit(parse_config(config), tmp_path / "a", progress=False)
    with pytest.raises(ConfigError, match="perturbs the inputs, which are token ids"):
        run_audit(parse_config(_config(bert) | {"attacks": [{"name": "augmentation_robustness"}]}), tmp_path / "b",
                  progress=False)
    with pytest.raises(ConfigError, match="unknown key 'tokenizer'"):
        parse_config(_config(bert, hf_classifier={"path": "x", "tokenizer": "y"}))
    missing = _config(bert, hf_classifier={"path": str(tmp_path / "nowhere")}) | {"reference": {"n_models": 0},
                                                                                  "shadow": {"n_models": 0}}
    with pytest.raises(DataError, match="cannot load the tokenizer"):
        run_audit(parse_config(missing | {"attacks": [{"name": "loss"}]}), tmp_path / "c", progress=False)


# -- a decoder classifier (Llama), whose head reads the last token that is not padding ----------------

def _word_tokenizer(folder):
    """A word-level fast tokenizer over WORDS with an end-of-text token and, like Llama's, no padding token."""
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {word: i for i, word in enumerate(["<unk>", "</s>", *WORDS])}
    model = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    model.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=model, unk_token="<unk>", eos_token="</s>")
    assert tokenizer.pad_token is None
    return tokenizer


@pytest.fixture(scope="module")
def llama(bert, tmp_path_factory):
    """A 1-layer Llama classifier base without a padding id, and its fine-tuned copy padded with the end token."""
    folder = tmp_path_factory.mktemp("llama")
    tokenizer = _word_tokenizer(folder)
    config = transformers.LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                      max_position_embeddings=32, num_labels=2, pad_token_id=None,
                                      id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1})
    torch.manual_seed(0)
    transformers.LlamaForSequenceClassification(config).save_pretrained(folder / "base")
    tokenizer.save_pretrained(folder / "base")
    tokenizer.pad_token = tokenizer.eos_token  # what a user fine-tuning Llama does
    members = text_examples(bert / "members.jsonl", tokenizer, max_length=12, label2id=config.label2id, n_classes=2)
    model = HFTextClassifier(str(folder / "base"), pad_token_id=tokenizer.pad_token_id)
    train_classifier(model, members, TrainConfig(seed=1, epochs=10, batch_size=16, lr=0.003), progress=False)
    model.model.save_pretrained(folder / "target")
    tokenizer.save_pretrained(folder / "target")
    return folder


def _llama_config(bert, llama):
    config = _config(bert)
    config["target"]["hf_classifier"] |= {"path": str(llama / "target"), "base": str(llama / "base")}
    return config | {"training": {"epochs": 2, "batch_size": 16, "lr": 0.003}, "shadow": {"n_models": 0},
                     "attacks": ["loss", {"name": "rmia", "params": {"online": True}}]}


def test_a_decoder_classifier_is_audited_with_reference_models_padded_like_the_target(bert, llama, tmp_path):
    """The base checkpoint has no pad_token_id (Llama's head cannot batch texts of different lengths without one):
    the reference models get the target's, so fine-tuning them works and pads as the target does."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_audit(parse_config(_llama_config(bert, llama)), tmp_path / "run", progress=False)
    assert result["reference"]["fidelity"]["reference"]["train_accuracy"] > 0.5
    assert {a["name"] for a in result["attacks"]} == {"loss", "rmia"}
    eos = load_tokenizer(str(llama / "target")).eos_token_id
    factory = ModelFactory((2, 12), 2, TrainConfig(**RECIPE), "miaudit.classifier.targets.hf_text:HFTextClassifier",
                           {"source": str(llama / "base"), "n_labels": 2, "pad_token_id": eos})
    assert TorchFamily(factory).factory.build(seed=0).model.config.pad_token_id == eos


def test_a_classifier_without_any_padding_token_is_a_clear_error(llama, tmp_path):
    folder = tmp_path / "unpadded"
    model = transformers.AutoModelForSequenceClassification.from_pretrained(llama / "target")
    model.config.pad_token_id = None
    model.save_pretrained(folder)
    _word_tokenizer(folder).save_pretrained(folder)
    with pytest.raises(DataError, match="defines no padding token .* tokenizer.pad_token = tokenizer.eos_token"):
        HFTextSource({"path": str(folder)})
    model.config.pad_token_id = 1  # the config names it: the tokenizer pads with it
    model.save_pretrained(folder)
    source = HFTextSource({"path": str(folder), "max_length": 12})
    assert source.pad_token_id == 1 and source.tokenizer.pad_token == "</s>"
