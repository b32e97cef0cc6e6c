"""AuditMI: user corpora, word LSTM language models, next-token ranks, rank histograms, the audit."""

import numpy as np
import pytest
import torch

from contract.text_generator import make_case, user_ranks
from miaudit.attacks.registry import create_attack
from miaudit.errors import DataError, SignalError
from miaudit.evaluation import roc_auc
from miaudit.text_generator import (
    LMTrainConfig,
    TextGeneratorTarget,
    TextShadowData,
    UserCorpus,
    UserRanks,
    Vocabulary,
    bin_edges,
    load_shakespeare_users,
    load_wikitext_users,
    rank_histograms,
    train_language_model,
)


# -- corpora -----------------------------------------------------------------------------------
def test_wikitext_users_are_contiguous_sentences_of_one_article(tmp_path):
    path = tmp_path / "wiki.txt"
    path.write_text(" \n = Alpha = \n \n a b c . d e f . g h i . \n = = Sub = = \n j k l . m n o . \n"
                    " = Beta = \n p q r . s t u . \n", encoding="utf-8")
    corpus = load_wikitext_users([path], texts_per_user=2)
    assert corpus.user_ids == ["wiki:0:Alpha#0", "wiki:0:Alpha#1", "wiki:1:Beta#0"]
    assert corpus.texts[0] == ["a b c .", "d e f ."] and corpus.texts[1] == ["g h i .", "j k l ."]
    assert corpus.n_tokens == 6 * 4


def test_real_corpora_split_into_users(shared_data):
    wiki = load_wikitext_users([shared_data / "text/wikitext2/valid.txt"], texts_per_user=16)
    assert len(wiki) > 300 and all(len(t) == 16 for t in wiki.texts)
    plays = load_shakespeare_users(shared_data / "text/tinyshakespeare/input.txt", min_texts=50)
    assert "ROMEO" in plays.user_ids and min(len(t) for t in plays.texts) >= 50


def test_users_without_texts_are_an_error():
    with pytest.raises(DataError, match="'bob' has no texts"):
        UserCorpus(["ann", "bob"], [["hello there"], ["", "  "]])
    with pytest.raises(DataError, match="'u1' has no texts"):
        UserRanks([[np.array([0, 1])], [np.zeros(0, int)]], 5, ["u0", "u1"])


# -- language model and ranks ------------------------------------------------------------------
def test_vocabulary_keeps_frequent_words_and_maps_the_rest_to_unk():
    vocab = Vocabulary.build(["a a a b b c", "a b d"], size=4)
    assert vocab.words == ["<eos>", "<unk>", "a", "b"]
    assert vocab.encode("a d b zzz") == [2, 1, 3, 1]


class _FixedScores(torch.nn.Module):
    """Scores depend only on the previous token: a fixed (V, V) table."""

    def __init__(self, table):
        super().__init__()
        self.table = torch.as_tensor(table)

    def forward(self, ids):
        return self.table[ids]


def test_next_token_ranks_match_a_naive_count():
    rng = np.random.default_rng(0)
    table = rng.standard_normal((6, 6))
    target = TextGeneratorTarget(_FixedScores(table), lambda t: [int(w) for w in t.split()], start_id=0, end_id=5)
    texts = ["1 2 3", "4", "2 2 2 2 1"]
    ranks = target.next_token_ranks(texts)
    for text, got in zip(texts, ranks):
        ids = [int(w) for w in text.split()]
        inputs, targets = [0, *ids], [*ids, 5]
        want = [int((table[i] > table[i][t]).sum()) for i, t in zip(inputs, targets)]
        assert got.tolist() == want


def test_a_text_model_without_next_token_scores_is_an_error():
    def generator_only(ids):
        return ["generated text"] * len(ids)

    target = TextGeneratorTarget(generator_only, lambda t: [1, 2], start_id=0)
    with pytest.raises(SignalError, match="no next-token ranks"):
        target.next_token_ranks(["x"])
    one_score = TextGeneratorTarget(lambda ids: torch.zeros(len(ids)), lambda t: [1, 2], start_id=0)
    with pytest.raises(SignalError, match=r"\(batch, length, vocab\)"):
        one_score.next_token_ranks(["x"])
    nan = TextGeneratorTarget(lambda ids: torch.full((*ids.shape, 4), float("nan")), lambda t: [1, 2], start_id=0)
    with pytest.raises(SignalError, match="NaN"):
        nan.next_token_ranks(["x"])


def test_a_trained_lm_ranks_its_own_users_higher(shared_data):
    corpus = load_wikitext_users([shared_data / "text/wikitext2/valid.txt"], texts_per_user=8)
    users = corpus.subset(np.random.default_rng(0).permutation(len(corpus))[:12])
    members = users.subset(range(6))  # users 6..11 are the non-members
    cfg = LMTrainConfig(embed_dim=16, hidden=32, epochs=25, batch_size=16, lr=1e-2)
    vocab = Vocabulary.build(users.all_texts(), 300)  # shared: out-of-vocabulary words would favour non-members
    result = train_language_model(members.all_texts(), cfg, vocab=vocab, progress=False)
    again = train_language_model(members.all_texts(), cfg, vocab=vocab, progress=False)
    assert [h["loss"] for h in result.history] == [h["loss"] for h in again.history]
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    ranks = TextGeneratorTarget.from_trained(result).user_ranks(users.texts, users.user_ids)
    mean_log_rank = np.array([np.log1p(r).mean() for r in ranks.flat()])
    assert mean_log_rank[:6].max() < mean_log_rank[6:].min()


# -- features and the attack -------------------------------------------------------------------
def test_rank_histograms_count_every_token_and_clip_large_ranks():
    edges = bin_edges(4, max_rank=7)
    h = rank_histograms([np.array([0, 1, 2, 9, 100]), np.array([7])], edges, max_rank=7)
    assert h.tolist() == [[2, 1, 0, 2], [0, 0, 0, 1]]
    log_edges = bin_edges(5, max_rank=99, binning="log")
    assert log_edges[0] == 0 and log_edges[-1] == 100 and np.all(np.diff(log_edges) > 0)


def test_auditmi_uses_only_max_texts_per_user():
    reference, signals, labels = make_case(None, seed=1)
    full = create_attack("auditmi").fit(reference)
    one = create_attack("auditmi", max_texts=1).fit(reference)
    assert roc_auc(labels, full.score(signals)) >= roc_auc(labels, one.score(signals)) - 0.05
    truncated = UserRanks([texts[:1] for texts in signals.ranks], signals.vocab_size, signals.user_ids)
    np.testing.assert_allclose(one.score(signals), one.score(truncated))


def test_auditmi_refuses_wrong_inputs():
    reference, signals, _ = make_case(None)
    attack = create_attack("auditmi").fit(reference)
    other_vocab = UserRanks(signals.ranks, 80, signals.user_ids)
    with pytest.raises(SignalError, match="vocabulary"):
        attack.score(other_vocab)
    with pytest.raises(DataError, match="TextShadowData"):
        create_attack("auditmi").fit(signals)
    with pytest.raises(DataError, match="both member and non-member users"):
        TextShadowData([signals], [np.ones(len(signals), bool)])
    rng = np.random.default_rng(0)
    logistic = create_attack("auditmi", classifier="logistic", binning="log").fit(
        TextShadowData([user_ranks(np.arange(40) < 20, rng)], [np.arange(40) < 20]))
    assert logistic.score(signals).shape == (len(signals),)
