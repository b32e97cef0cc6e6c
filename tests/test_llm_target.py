"""The Hugging Face causal-LM target on the real tiny Llama (stories260K): BOS, batching, windows,
cache, extra passes, bad input; the tiny GPT trainer; the token view."""

import math

import numpy as np
import pytest
import torch

from miaudit.errors import ConfigError, DataError
from miaudit.llm.target import HFCausalLM, _plan_windows, load_tokenizer
from miaudit.llm.tiny_gpt import TinyGPTConfig, build_tiny_gpt, train_tiny_gpt
from miaudit.llm.token_view import render_html, text_pieces, token_view

TEXTS = ["Once upon a time there was a cat.", "Tom ran home fast.", "Lily saw a big red ball in the park."]
FAST = {"betas": (0.5, 1.0, 2.0)}  # a short inverse-temperature grid keeps the engine quick


@pytest.fixture(scope="module")
def stories(shared_data):
    return HFCausalLM.from_pretrained(str(shared_data / "models" / "stories260K"), local_files_only=True,
                                      progress=False, signal_params=FAST)


def _reference_log_probs(model, ids, first):
    """log p of ids[first:] from one plain forward pass on the whole sequence."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
    return torch.log_softmax(logits, -1)[torch.arange(first - 1, len(ids) - 1), torch.tensor(ids[first:])].numpy()


def test_bos_is_prepended_so_every_text_token_is_scored(stories):
    text_ids = stories.tokenizer(TEXTS[0], add_special_tokens=False)["input_ids"]
    ids = stories.encode(TEXTS[0])
    assert ids == [stories.tokenizer.bos_token_id] + text_ids
    (signals,) = stories.token_signals(TEXTS[:1])
    assert signals.n_tokens == len(text_ids) and signals.token_ids.tolist() == text_ids
    np.testing.assert_allclose(signals.log_prob, _reference_log_probs(stories.model, ids, 1), atol=1e-4)
    assert signals.text == TEXTS[0]


def test_without_bos_the_first_token_is_context_only(stories):
    no_bos = HFCausalLM(stories.model, stories.tokenizer, bos="never", progress=False, signal_params=FAST)
    (signals,) = no_bos.token_signals(TEXTS[:1])
    text_ids = stories.tokenizer(TEXTS[0], add_special_tokens=False)["input_ids"]
    assert signals.token_ids.tolist() == text_ids[1:]
    one_token = stories.tokenizer.decode(text_ids[:1]).strip()
    with pytest.raises(DataError, match="one token and no BOS"):
        no_bos.token_signals([one_token])


def test_batching_does_not_change_signals(stories):
    single = HFCausalLM(stories.model, stories.tokenizer, batch_size=1, progress=False, signal_params=FAST)
    for a, b in zip(single.token_signals(TEXTS), stories.token_signals(TEXTS)):
        np.testing.assert_allclose(a.log_prob, b.log_prob, atol=1e-4)
        np.testing.assert_allclose(a.beta_mu, b.beta_mu, atol=1e-3)


def test_window_plan_scores_every_target_once():
    for n, first, m, stride in [(10, 1, 4, 2), (50, 1, 16, 5), (50, 20, 16, 15), (7, 1, 8, 3)]:
        covered = []
        for begin, end, start in _plan_windows(n, first, m, stride, "sliding_window"):
            assert end - begin <= m and begin < start
            covered += list(range(start, end))
        assert covered == list(range(first, n))


def test_sliding_window_and_truncation(stories):
    long_text = " ".join(["The little dog ran to the park and played with a ball."] * 6)
    ids = stories.encode(long_text)
    assert len(ids) > 60
    windowed = HFCausalLM(stories.model, stories.tokenizer, max_length=32, stride=8, progress=False,
                          signal_params=FAST)
    (signals,) = windowed.token_signals([long_text])
    assert signals.n_tokens == len(ids) - 1
    np.testing.assert_allclose(signals.log_prob[:31], _reference_log_probs(stories.model, ids[:32], 1), atol=1e-4)
    # the last window starts at a multiple of the stride, so its tokens see that window's context only
    begin, end, start = _plan_windows(len(ids), 1, 32, 8, "sliding_window")[-1]
    tail = _reference_log_probs(stories.model, ids[begin:end], start - begin)
    np.testing.assert_allclose(signals.log_prob[start - 1:], tail, atol=1e-4)
    truncated = HFCausalLM(stories.model, stories.tokenizer, max_length=32, long_documents="truncate",
                           progress=False, signal_params=FAST)
    assert truncated.token_signals([long_text])[0].n_tokens == 31
    with pytest.raises(ConfigError, match="exceeds the model's context"):
        HFCausalLM(stories.model, stories.tokenizer, max_length=4096)


def test_cache_answers_the_second_call_without_a_forward_pass(stories, tmp_path, monkeypatch):
    cached = HFCausalLM(stories.model, stories.tokenizer, cache_dir=tmp_path, shard_size=2, progress=False,
                        signal_params=FAST)
    first = cached.token_signals(TEXTS)
    first_ll = cached.lowercase_log_likelihoods(TEXTS)
    assert len(list(tmp_path.rglob("*.npz"))) == 4  # 2 signal shards + 2 log-likelihood shards

    def no_forward(*args, **kwargs):
        raise AssertionError("forward pass despite a cache hit")

    monkeypatch.setattr(cached, "_logits", no_forward)
    again = cached.token_signals(TEXTS)
    for a, b in zip(first, again):
        for name in ("token_ids", "log_prob", "entropy", "var_logp", "beta_log_prob", "beta_sigma"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_array_equal(cached.lowercase_log_likelihoods(TEXTS), first_ll)
    other = HFCausalLM(stories.model, stories.tokenizer, cache_dir=tmp_path, progress=False,
                       signal_params={"betas": (1.0,)})
    assert other.fingerprint() != cached.fingerprint()  # engine parameters are part of the key


def test_extra_passes(stories):
    plain = stories.mean_log_likelihoods(TEXTS)
    signals = stories.token_signals(TEXTS)
    np.testing.assert_allclose(plain, [s.log_prob.mean() for s in signals], atol=1e-6)
    np.testing.assert_allclose(stories.lowercase_log_likelihoods(TEXTS),
                               stories.mean_log_likelihoods([t.lower() for t in TEXTS]))
    prefixed = stories.prefix_log_likelihoods(TEXTS, ["The bird sang a song.", "Ben had a toy car."])
    assert prefixed.shape == (3,) and not np.allclose(prefixed, plain)
    neighbours = stories.neighbour_log_likelihoods(TEXTS, lambda t: [t.replace("a", "the"), t + " The end."])
    assert [n.shape for n in neighbours] == [(2,)] * 3
    with pytest.raises(DataError, match="returned no neighbours"):
        stories.neighbour_log_likelihoods(TEXTS, lambda t: [])
    norms = stories.gradient_norms(TEXTS[:2])
    ids = stories.encode(TEXTS[0])
    stories.model.zero_grad()
    loss = torch.nn.functional.cross_entropy(stories.model(torch.tensor([ids])).logits[0, :-1], torch.tensor(ids[1:]))
    loss.backward()
    expected = np.mean([p.grad.abs().max().item() for p in stories.model.parameters()])
    stories.model.zero_grad()
    assert norms[0] == pytest.approx(expected, rel=1e-4) and np.isfinite(norms).all()


def _per_document_gradient_norm(target, text, p):
    """The per-document definition: one backward pass through all of the document's windows."""
    from miaudit.llm.signals import gradient_norm
    from miaudit.llm.target import _pad

    segments = target._segments([target._document(text)], 0)
    ids, mask = _pad([s.ids for s in segments], target._pad_id, target.device)
    logits = target.model(input_ids=ids, attention_mask=mask).logits
    rows = torch.cat([logits[r, s.first - 1:len(s.ids) - 1] for r, s in enumerate(segments)])
    targets = torch.cat([ids[r, s.first:len(s.ids)] for r, s in enumerate(segments)])
    return gradient_norm(torch.nn.functional.cross_entropy(rows.float(), targets), target.model.parameters(), p=p)


@pytest.mark.parametrize("p", [math.inf, 2])
def test_batched_gradient_norms_equal_the_per_document_result(stories, p):
    long_text = " ".join(["The little dog ran to the park and played with a ball."] * 6)
    windowed = HFCausalLM(stories.model, stories.tokenizer, max_length=32, stride=8, batch_size=3, progress=False)
    texts = TEXTS + [long_text, "Tom ran."]
    batched = windowed.gradient_norms(texts, p=p)
    expected = [_per_document_gradient_norm(windowed, t, p) for t in texts]
    np.testing.assert_allclose(batched, expected, rtol=1e-5)
    with pytest.raises(ConfigError, match="p=3"):
        windowed.gradient_norms(texts, p=3)


def test_batched_gradient_norms_of_a_gpt2_shape_equal_the_per_document_result(stories):
    """GPT-2's position embedding is computed once for the batch ((1, L) position ids, broadcast): its
    per-row gradients come from one row at a time, and still equal the per-document result."""
    model = build_tiny_gpt(TinyGPTConfig(n_layer=1, n_embd=32, n_head=2, block_size=32), stories.tokenizer)
    target = HFCausalLM(model, stories.tokenizer, batch_size=3, progress=False)
    batched = target.gradient_norms(TEXTS, p=math.inf)
    expected = [_per_document_gradient_norm(target, t, math.inf) for t in TEXTS]
    np.testing.assert_allclose(batched, expected, rtol=1e-5)


def test_prefix_scores_the_same_tokens_and_fits_the_context(stories):
    prefix = stories.prefix_ids(["The bird sang a song.", "Ben had a toy car."])
    for bos in ("auto", "never"):
        for mode in ("truncate", "sliding_window"):
            target = HFCausalLM(stories.model, stories.tokenizer, bos=bos, max_length=24, long_documents=mode,
                                progress=False)
            plain_ids, plain_first = target._document(TEXTS[2])
            ids, first = target._document(TEXTS[2], prefix)
            assert ids[first:] == plain_ids[plain_first:]  # the same targets, scored after the prefix
            kept = len(ids) - len(plain_ids)
            n_bos = int(bos == "auto")
            room = 24 - len(plain_ids)
            assert kept == (room if mode == "truncate" else max(room, (24 - n_bos) // 2)) and 0 < kept < len(prefix)
            assert ids[n_bos:n_bos + kept] == prefix[-kept:]  # the prefix's end, next to the document
    long_text = " ".join([TEXTS[2]] * 4)
    windows = HFCausalLM(stories.model, stories.tokenizer, max_length=24, stride=8, progress=False,
                         signal_params=FAST)
    assert windows.prefix_log_likelihoods([long_text], ["The bird sang."]).shape == (1,)


def test_bad_input_and_mismatched_tokenizers(stories, shared_data):
    with pytest.raises(DataError, match="empty or whitespace-only"):
        stories.token_signals(["fine text", "   "])
    gpt2 = load_tokenizer(str(shared_data / "tokenizers" / "gpt2"), local_files_only=True)
    with pytest.raises(ConfigError, match="do not belong together"):
        HFCausalLM(stories.model, gpt2)
    other = HFCausalLM(stories.model, stories.tokenizer, bos="never")
    with pytest.raises(ConfigError, match="another tokenizer"):
        stories.check_same_tokenizer(other)
    stories.check_same_tokenizer(HFCausalLM(stories.model, stories.tokenizer))
    with pytest.raises(ConfigError, match="cannot load causal LM .*no-such-model'?: no such folder"):
        HFCausalLM.from_pretrained(str(shared_data / "no-such-model"), local_files_only=True)
    with pytest.raises(ConfigError, match="no such folder \\(a relative path is read from the working directory"):
        HFCausalLM.from_pretrained("../models/stories260K", local_files_only=True)
    with pytest.raises(ConfigError, match="cannot load causal LM 'someone/no-such-model': .*or a hub id"):
        HFCausalLM.from_pretrained("someone/no-such-model", local_files_only=True)


def test_dtype_bfloat16_loads_and_scores(shared_data):
    target = HFCausalLM.from_pretrained(str(shared_data / "models" / "stories260K"), local_files_only=True,
                                        dtype="bfloat16", progress=False, signal_params=FAST)
    assert next(target.model.parameters()).dtype == torch.bfloat16
    (signals,) = target.token_signals(TEXTS[:1])
    assert np.isfinite(signals.log_prob).all() and np.isfinite(signals.beta_sigma).all()


def test_tiny_gpt_is_deterministic_and_learns(stories):
    texts = TEXTS * 2
    config = TinyGPTConfig(n_layer=1, n_embd=32, n_head=2, block_size=32, epochs=3, batch_size=2, lr=1e-2,
                           warmup_steps=1)
    seen = []
    a = train_tiny_gpt(texts, stories.tokenizer, config, progress=False,
                       on_epoch_end=lambda epoch, model: seen.append(epoch))
    b = train_tiny_gpt(texts, stories.tokenizer, config, progress=False)
    assert seen == [1, 2, 3]
    assert a.history[-1]["train_loss"] < a.history[0]["train_loss"]
    for (name, p), q in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(p, q), name
    llama = train_tiny_gpt(texts, stories.tokenizer, TinyGPTConfig(architecture="llama", n_layer=1, n_embd=32,
                                                                   n_head=2, block_size=32, batch_size=3),
                           progress=False)
    target = HFCausalLM(llama.model, stories.tokenizer, progress=False, signal_params=FAST)
    assert target.token_signals(TEXTS[:1])[0].n_tokens == len(stories.encode(TEXTS[0])) - 1
    with pytest.raises(ConfigError, match="divisible"):
        TinyGPTConfig(n_embd=30, n_head=4)


def test_token_view_aligns_text_and_escapes_html(stories):
    text = "Tom said <hi> & ran."
    pieces = text_pieces(stories.tokenizer, text)
    assert "".join(pieces) == text
    view = token_view(stories, text, doc_id="doc-1", label=1)
    assert view.scores.shape == (len(pieces),) and view.first_scored == 0
    page = render_html([view])
    body = page.split('<div class="text">')[1]
    assert body.count('<span style="background') == len(pieces) and body.count('<span class="best">') == 1
    assert "&lt;hi&gt;" in page and "<hi>" not in page and "member" in page
    assert math.isfinite(float(view.scores.mean()))
