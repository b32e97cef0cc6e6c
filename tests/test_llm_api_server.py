"""The API target against a real llama.cpp server (llama-cpp-python, the ``server`` extra) serving the real
stories260K weights in GGUF form, compared with the Hugging Face path on the HF copy of the same weights.

The server does not score the first prompt token (OpenAI's convention: its log-probability is null),
so the HF records are compared without their first scored token (``TokenSignals.without_first``).
"""

import os

import numpy as np
import pytest
import torch

from miaudit.attacks.registry import create_attack
from miaudit.errors import ConfigError
from miaudit.llm.api import APICausalLM, APITargetConfig
from miaudit.llm.attacks.dc_pdd import smooth_counts
from miaudit.llm.llama_server import llama_server
from miaudit.llm.target import HFCausalLM

if os.environ.get("CI"):
    import llama_cpp.server  # noqa: F401  (CI installs miaudit[server]: a missing server is a failure there)
else:
    pytest.importorskip("llama_cpp.server", reason="needs the server extra: pip install 'miaudit[server]'")

TEXTS = ["Once upon a time there was a little girl named Lily. She loved to play in the park.",
         "Tom had a big red ball. He threw it to his dog, and the dog ran after it.",
         "One day, a cat saw a bird in the tree. The cat wanted to catch the bird, but it flew away.",
         "Sue and Ben made a cake for their mom. It was a sunny day and everyone was happy.",
         "The old man walked to the shop to buy some bread and milk for his family."]
CORPUS = ["The dog was happy.", "Lily and Tom played with a ball in the garden.", "The sun was warm and bright."]


@pytest.fixture(scope="module")
def server(shared_data):
    with llama_server(shared_data / "models" / "stories260K-gguf" / "stories260K.gguf") as url:
        yield url


@pytest.fixture(scope="module")
def hf(shared_data):
    return HFCausalLM.from_pretrained(str(shared_data / "models" / "stories260K"), local_files_only=True,
                                      progress=False, signal_params={"betas": (0.5, 1.0, 2.0)})


@pytest.fixture(scope="module")
def api(server):
    return APICausalLM(APITargetConfig(endpoint=server, model="stories260K", top_k=5, vocab_size=512),
                       progress=False)


def _hf_mean_ll_without_first(hf, texts):
    return np.array([r.without_first(1).log_prob.mean() for r in hf.token_signals(texts)])


def test_token_log_probs_agree_with_the_hf_path_except_the_unscored_first_token(api, hf):
    errors = []
    for a, h in zip(api.token_signals(TEXTS), hf.token_signals(TEXTS)):
        assert a.n_tokens == h.n_tokens - 1
        errors.append(np.abs(a.log_prob - h.log_prob[1:]).max())
        # the server's token strings are the HF tokens (same identity pattern: first occurrences coincide)
        np.testing.assert_array_equal(a.first_occurrence, h.without_first(1).first_occurrence)
    assert max(errors) < 1e-4, max(errors)
    assert api.info()["leading_unscored_tokens"] == [1]
    print(f"largest |log p(API) - log p(HF)| over {len(TEXTS)} documents: {max(errors):.2e}")


def test_every_top_k_attack_scores_as_on_the_hf_path(api, hf):
    counts_api, counts_hf = api.token_counts(CORPUS), hf.token_counts(CORPUS)
    assert sorted(counts_api[counts_api > 0].tolist()) == sorted(counts_hf[counts_hf > 0].tolist())
    extra_api = {"lowercase_logprob": api.lowercase_log_likelihoods(TEXTS), "ref_logprob": np.full(len(TEXTS), -3.0),
                 "neighbour_logprobs": [api.mean_log_likelihoods([t.replace("a", "the", 1), t.upper()]) for t in TEXTS]}
    extra_hf = {"lowercase_logprob": _hf_mean_ll_without_first(hf, [t.lower() for t in TEXTS]),
                "ref_logprob": np.full(len(TEXTS), -3.0),
                "neighbour_logprobs": [_hf_mean_ll_without_first(hf, [t.replace("a", "the", 1), t.upper()])
                                       for t in TEXTS]}
    api_docs = [r.with_signals(**{k: v[i] for k, v in extra_api.items()})
                for i, r in enumerate(api.token_signals(TEXTS))]
    hf_docs = [r.without_first(1).with_signals(**{k: v[i] for k, v in extra_hf.items()})
               for i, r in enumerate(hf.token_signals(TEXTS))]
    attacks = {"loss": {}, "zlib": {}, "lowercase": {}, "ref": {}, "min_k": {"k": 0.3}, "neighbourhood": {},
               "dc_pdd": {"a": 1.0}}
    for name, params in attacks.items():
        a, h = create_attack(name, target_kind="llm", **params), create_attack(name, target_kind="llm", **params)
        if name == "dc_pdd":
            a.fit(counts_api)
            h.fit(counts_hf)
        np.testing.assert_allclose(a.score(api_docs), h.score(hf_docs), rtol=1e-4, atol=1e-5, err_msg=name)
    # the same smoothed frequency for every token the documents use
    assert np.allclose(sorted(smooth_counts(counts_api)), sorted(smooth_counts(counts_hf)))


def test_recall_prefix_scores_the_documents_tokens_after_the_prefix(api, hf):
    separator = "\n\n"
    prefix = separator.join(CORPUS) + separator
    got = api.prefix_log_likelihoods(TEXTS, CORPUS, separator=separator)
    expected = []
    tokenizer = hf.tokenizer
    for text in TEXTS:  # the HF equivalent: prefix + text tokenised as one string, the text's tokens but its first
        enc = tokenizer(prefix + text, add_special_tokens=False, return_offsets_mapping=True)
        ids = [tokenizer.bos_token_id] + enc["input_ids"]
        first = 1 + next(j for j, (start, _) in enumerate(enc["offset_mapping"]) if start >= len(prefix))
        with torch.no_grad():
            logp = torch.log_softmax(hf.model(torch.tensor([ids])).logits[0].double(), -1)
        expected.append(float(np.mean([logp[j - 1, ids[j]] for j in range(first + 1, len(ids))])))
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_an_audit_through_the_server_refuses_min_k_pp_and_runs_the_rest(server, tmp_path, shared_data):
    from miaudit.llm.audit import run_llm_audit

    members, nonmembers = tmp_path / "m.txt", tmp_path / "n.txt"
    members.write_text("\n".join(TEXTS * 4) + "\n")
    nonmembers.write_text("\n".join(t.replace(".", "!") for t in TEXTS * 4) + "\n")
    config = {"dataset": {"source": "text", "members": str(members), "nonmembers": str(nonmembers)},
              "api": {"endpoint": server, "model": "stories260K", "top_k": 2},
              "attacks": [{"name": "loss"}, {"name": "min_k_pp"}], "evaluation": {"n_bootstrap": 20}}
    with pytest.raises(ConfigError, match="min_k_pp.*needs logits access"):
        run_llm_audit(config, tmp_path / "refused", progress=False)
    config["attacks"] = [{"name": "loss"}, {"name": "zlib"}, {"name": "min_k"}]
    metrics = run_llm_audit(config, tmp_path / "run", progress=False)
    assert metrics["target"]["access"] == "top-k log-probs" and metrics["target"]["retries"] == 0
    assert {a["name"] for a in metrics["attacks"]} == {"loss", "zlib", "min_k", "min_k.oracle"}
