"""Controlled LLM audits (``kind: llm`` with ``training:``): corpus split, training recipes, run directory."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from miaudit.errors import ConfigError, DataError, MiauditError
from miaudit.llm.audit import parse_llm_config, run_llm_audit
from miaudit.llm.target import LLMModelConfig, load_tokenizer
from miaudit.llm.tiny_gpt import TinyGPTConfig, build_tiny_gpt, encode_training_texts, mean_token_loss
from miaudit.llm.training import (
    LoRAConfig,
    TrainingConfig,
    prepare_corpus,
    read_corpus_documents,
    split_corpus,
    train_model,
)

WORDS = ("cat dog sun moon tree river house bird fish star red blue green small big old new ran sat saw ate "
         "under over near with happy quiet").split()


def random_documents(n: int, seed: int = 0, length: tuple[int, int] = (8, 12)) -> list[str]:
    """Distinct documents of random words: unpredictable, so only memorisation lowers their loss."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(*length))) for _ in range(n)]


@pytest.fixture(scope="module")
def tokenizer(shared_data):
    return load_tokenizer(str(shared_data / "models" / "stories260K"), local_files_only=True)


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(random_documents(40)) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def base_model(tokenizer, tmp_path_factory) -> Path:
    """A tiny Llama saved in Hugging Face format: the 'pretrained' model that fine-tuning starts from."""
    folder = tmp_path_factory.mktemp("base")
    config = TinyGPTConfig(architecture="llama", n_layer=1, n_embd=32, n_head=2, block_size=64)
    model = build_tiny_gpt(config, tokenizer)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def scratch_config(corpus: Path, shared_data: Path, **training) -> dict:
    return {
        "kind": "llm", "seed": 3,
        "dataset": {"source": "corpus", "path": str(corpus)},
        "training": {"method": "scratch", "tokenizer": str(shared_data / "models" / "stories260K"),
                     "architecture": {"n_layer": 1, "n_embd": 32, "n_head": 2}, "block_size": 64,
                     "epochs": 2, "batch_size": 8, **training},
        "attacks": [{"name": "loss"}],
        "blind_baseline": {"enabled": False},
        "token_view": {"n_documents": 0},
        "evaluation": {"n_bootstrap": 20},
    }


# -- corpus and split -------------------------------------------------------------------------------

def test_split_is_deterministic_disjoint_and_complete():
    a = split_corpus(40, member_fraction=0.5, reference_fraction=0.25, with_reference=True, seed=7)
    b = split_corpus(40, member_fraction=0.5, reference_fraction=0.25, with_reference=True, seed=7)
    c = split_corpus(40, member_fraction=0.5, reference_fraction=0.25, with_reference=True, seed=8)
    for part in ("members", "nonmembers", "reference"):
        assert np.array_equal(getattr(a, part), getattr(b, part))
    assert not np.array_equal(a.members, c.members)
    parts = [set(a.members), set(a.nonmembers), set(a.reference)]
    assert sum(map(len, parts)) == 40 and set.union(*parts) == set(range(40))
    assert (len(parts[2]), len(parts[0]), len(parts[1])) == (10, 15, 15)
    none = split_corpus(40, member_fraction=0.25, reference_fraction=0.25, with_reference=False, seed=7)
    assert none.reference.size == 0 and (none.members.size, none.nonmembers.size) == (10, 30)
    with pytest.raises(DataError, match="too few to split"):
        split_corpus(10, member_fraction=0.5, reference_fraction=0.25, with_reference=True, seed=0)


def test_prepare_corpus_filters_cuts_deduplicates_and_subsamples():
    texts = ["= Title =", "a b c d e f", "a b c d e f", "one two three four five six seven", "x y z w v"]
    ids = [f"c:{i}" for i in range(len(texts))]
    out = prepare_corpus(texts, ids, name="c", min_words=4, max_words=5)
    assert out.texts == ["a b c d e", "one two three four five", "x y z w v"]
    assert out.ids == ["c:1", "c:3", "c:4"]
    assert (out.n_too_short, out.n_cut, out.n_duplicates) == (1, 3, 1)
    small = prepare_corpus(texts, ids, name="c", min_words=4, max_words=5, max_documents=2, seed=1)
    assert len(small.texts) == 2 and set(small.ids) <= set(out.ids) and small.n_subsampled_out == 1
    assert prepare_corpus(texts, ids, name="c", max_documents=2, seed=1).ids == \
        prepare_corpus(texts, ids, name="c", max_documents=2, seed=1).ids


def test_read_corpus_formats(tmp_path):
    (tmp_path / "c.jsonl").write_text('{"body": "first doc"}\n{"body": "second doc"}\n', encoding="utf-8")
    texts, ids, _ = read_corpus_documents(tmp_path / "c.jsonl", text_column="body")
    assert texts == ["first doc", "second doc"] and ids == ["c:0", "c:1"]
    (tmp_path / "t.csv").write_text("text,other\nhello there,1\n,2\nbye now,3\n", encoding="utf-8")
    with pytest.raises(DataError, match="row 1"):
        read_corpus_documents(tmp_path / "t.csv")
    texts, ids, skipped = read_corpus_documents(tmp_path / "t.csv", on_empty="skip")
    assert texts == ["hello there", "bye now"] and ids == ["t:0", "t:2"] and skipped[0][0] == "t:1"
    with pytest.raises(DataError, match="available columns: text, other"):
        read_corpus_documents(tmp_path / "t.csv", text_column="body")
    (tmp_path / "p.txt").write_text("one\nline\n\ntwo\n", encoding="utf-8")
    assert read_corpus_documents(tmp_path / "p.txt", separator="blank_line")[0] == ["one\nline", "two"]
    with pytest.raises(DataError, match="plain-text corpus without columns; id_column"):
        read_corpus_documents(tmp_path / "p.txt", id_column="key")
    pq.write_table(pa.table({"content": ["a parquet doc", None], "n": [1, 2]}), tmp_path / "c.parquet")
    texts, ids, skipped = read_corpus_documents(tmp_path / "c.parquet", text_column="content", on_empty="skip")
    assert texts == ["a parquet doc"] and ids == ["c:0"] and skipped == [("c:1", "empty or missing text")]


def test_corpus_ids_from_an_id_column(tmp_path):
    (tmp_path / "c.csv").write_text("key,text\nk1,hello there\nk2,\nk3,bye now\n", encoding="utf-8")
    texts, ids, skipped = read_corpus_documents(tmp_path / "c.csv", id_column="key", on_empty="skip")
    assert texts == ["hello there", "bye now"] and ids == ["k1", "k3"] and skipped == [("k2", "empty or missing text")]
    (tmp_path / "d.csv").write_text("key,text\nk1,hello there\nk1,bye now\n", encoding="utf-8")
    with pytest.raises(DataError, match="rows 0 and 1 share the id 'k1'"):
        read_corpus_documents(tmp_path / "d.csv", id_column="key")
    with pytest.raises(DataError, match="no column 'id'.*dataset.id_column"):
        read_corpus_documents(tmp_path / "c.csv", id_column="id")


# -- configuration ----------------------------------------------------------------------------------

def test_config_errors_name_the_field(corpus, shared_data):
    good = scratch_config(corpus, shared_data)
    assert parse_llm_config(good).training.method == "scratch"

    def refused(match: str, **change) -> None:
        config = json.loads(json.dumps(good))
        for key, value in change.items():
            section, _, field = key.partition("__")
            if field:
                config[section][field] = value
            else:
                config[section] = value
        with pytest.raises(ConfigError, match=match):
            parse_llm_config(config)

    refused("unknown key 'epoch'", training__epoch=3)
    refused("unknown key 'depth'", training__architecture={"depth": 2})
    refused("'scratch' needs a tokenizer", training__tokenizer=None)
    refused("method 'finetune' needs the model to fine-tune", training__method="finetune", training__tokenizer=None)
    refused("'base' needs a base model", training__reference="base")
    refused("member_fraction: must lie in", training__member_fraction=1.0)
    refused("max_words .* below min_words", training__min_words=10, training__max_words=5)
    refused("divisible", training__architecture={"n_embd": 30, "n_head": 4})
    refused("remove model", model={"name_or_path": "x"})
    refused("use source: corpus", dataset={"source": "wikimia", "path": "32"})
    refused("needs path", dataset={"source": "corpus"})
    refused("not used with source 'corpus'", dataset__members="m.txt")
    refused("needs a reference model", training__reference="none", attacks=[{"name": "ref"}])
    without = {**{k: v for k, v in good.items() if k != "training"}, "model": {"name_or_path": "x"}}
    with pytest.raises(ConfigError, match="add a 'training' section"):
        parse_llm_config(without)


def test_a_corpus_too_small_to_split_is_one_line(tmp_path, shared_data):
    path = tmp_path / "tiny.txt"
    path.write_text("\n".join(random_documents(6)) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="too few to split"):
        run_llm_audit(scratch_config(path, shared_data), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_a_base_model_that_cannot_be_loaded_is_one_line(corpus, tmp_path, shared_data):
    config = scratch_config(corpus, shared_data, method="finetune", tokenizer=None,
                            base_model={"name_or_path": str(tmp_path / "missing"), "local_files_only": True})
    with pytest.raises(MiauditError) as info:
        run_llm_audit(config, tmp_path / "run", progress=False)
    assert "missing" in str(info.value) and "\n" not in str(info.value)


def test_lora_without_peft_names_the_extra(monkeypatch, corpus, base_model, tmp_path, shared_data):
    monkeypatch.setitem(sys.modules, "peft", None)  # import peft -> ImportError
    config = scratch_config(corpus, shared_data, method="lora", tokenizer=None,
                            base_model={"name_or_path": str(base_model), "local_files_only": True})
    with pytest.raises(ConfigError, match=r"needs the peft package.*miaudit\[llm\]"):
        run_llm_audit(config, tmp_path / "run", progress=False)


# -- training -----------------------------------------------------------------------------------------

def test_a_model_trained_on_members_gives_them_a_lower_loss(tokenizer, tmp_path):
    docs = random_documents(48, seed=1)
    members, nonmembers = docs[:24], docs[24:]
    training = TrainingConfig(tokenizer="unused", epochs=25, lr=1e-2, batch_size=8, block_size=64)
    trained = train_model(members, tokenizer, training, seed=0, folder=tmp_path / "m", role="target", progress=False)

    def losses(texts: list[str]) -> np.ndarray:
        return np.array([mean_token_loss(trained.model, encode_training_texts([t], tokenizer, 64), pad_id=0)
                         for t in texts])

    member_loss, nonmember_loss = losses(members), losses(nonmembers)
    # the loss attack's score is minus the loss: members score higher in this easy, memorisable setting
    auc = (member_loss[:, None] < nonmember_loss[None, :]).mean()
    assert auc > 0.9, auc
    assert trained.history[-1]["train_loss"] < trained.history[0]["train_loss"]
    assert (tmp_path / "m" / "model.safetensors").is_file() and (tmp_path / "m" / "tokenizer.json").is_file()


def test_full_finetuning_and_lora_change_the_base_model(base_model, tokenizer, tmp_path):
    pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    docs = random_documents(12, seed=2)
    base = LLMModelConfig(name_or_path=str(base_model), local_files_only=True)
    original = AutoModelForCausalLM.from_pretrained(base_model).state_dict()
    for method in ("finetune", "lora"):
        training = TrainingConfig(method=method, base_model=base, epochs=2, batch_size=4, lr=1e-2,
                                  lora=LoRAConfig(r=4, alpha=8))
        trained = train_model(docs, tokenizer, training, seed=0, folder=tmp_path / method, role="target",
                              progress=False)
        saved = AutoModelForCausalLM.from_pretrained(tmp_path / method)
        state = saved.state_dict()
        assert set(state) == set(original), f"{method}: a plain model of the base's architecture is saved"
        changed = [k for k in state if not torch.equal(state[k], original[k])]
        assert changed, method
        if method == "lora":
            assert trained.n_trainable < trained.n_parameters / 2
            assert all(("q_proj" in k or "v_proj" in k) for k in changed), changed  # peft's Llama default
        else:
            assert trained.n_trainable == trained.n_parameters


# -- the whole audit ---------------------------------------------------------------------------------

def test_controlled_audit_writes_models_split_and_scores(corpus, tmp_path, shared_data):
    config = scratch_config(corpus, shared_data, epochs=3)
    config["attacks"] = [{"name": "loss"}, {"name": "ref"}, {"name": "dc_pdd", "params": {"a": 0.01}}]
    metrics = run_llm_audit(config, tmp_path / "run", progress=False)
    run = tmp_path / "run"
    for name in ("metrics.json", "config.yaml", "report.md", "models/target/model.safetensors",
                 "models/target/tokenizer.json", "models/reference/model.safetensors", "scores/loss.scores.npz"):
        assert (run / name).is_file(), name
    assert not [p for p in (run / "models").iterdir() if p.name.startswith(".")]  # no temporary folders left
    training = metrics["training"]
    split = training["split"]
    members, nonmembers, reference = map(set, (split["member_ids"], split["nonmember_ids"], split["reference_ids"]))
    assert (len(members), len(nonmembers), len(reference)) == (15, 15, 10)
    assert not (members & nonmembers) and not (reference & (members | nonmembers))
    assert training["reference"]["kind"] == "trained" and training["reference"]["folder"] == "models/reference"
    assert training["dc_pdd_corpus"] == "the reference split"
    assert metrics["target"]["reference_model"] == "models/reference"
    for key in ("final_train_loss", "loss_members", "loss_nonmembers", "perplexity_members"):
        assert np.isfinite(training["target"][key])
    assert training["recipe"]["epochs"] == 3 and training["recipe"]["architecture"]["n_embd"] == 32
    report = (run / "report.md").read_text(encoding="utf-8")
    assert "**Membership ground truth**: the target was trained from scratch (3 epochs" in report
    assert "the same recipe on the reference split (`models/reference`)" in report
    scores = np.load(run / "scores" / "loss.scores.npz")
    truth = {i: int(i in members) for i in members | nonmembers}
    assert [truth[str(i)] for i in scores["ids"]] == scores["labels"].astype(int).tolist()
    assert set(map(str, scores["ids"])) <= members | nonmembers
    # the same config gives the same split and the same trained weights
    again = run_llm_audit(config, tmp_path / "again", progress=False)
    assert again["training"]["split"] == split
    first = np.load(run / "scores" / "loss.scores.npz")["scores"]
    assert np.array_equal(np.load(tmp_path / "again" / "scores" / "loss.scores.npz")["scores"], first)


def test_finetuning_audit_uses_the_base_model_as_reference(corpus, base_model, tmp_path, shared_data):
    config = scratch_config(corpus, shared_data, method="finetune", tokenizer=None,
                            base_model={"name_or_path": str(base_model), "local_files_only": True})
    del config["training"]["architecture"], config["training"]["block_size"]
    config["attacks"] = [{"name": "loss"}, {"name": "ref"}]
    metrics = run_llm_audit(config, tmp_path / "run", progress=False)
    reference = metrics["training"]["reference"]
    assert reference["kind"] == "base" and reference["model"] == str(base_model)
    assert metrics["target"]["reference_model"] == str(base_model)
    assert metrics["training"]["split"]["n_reference"] == 0  # nothing needs a reference split
    assert not (tmp_path / "run" / "models" / "reference").exists()
    assert metrics["training"]["recipe"]["base_model"] == str(base_model)
