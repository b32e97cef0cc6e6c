"""User-level audits of text-generation models (AuditMI, Song & Shmatikov, KDD 2019): real corpora
split into users, small word-level LSTM language models, a next-token-rank target adapter and
rank-histogram features."""

from miaudit.text_generator.corpus import UserCorpus, load_shakespeare_users, load_table_users, load_wikitext_users
from miaudit.text_generator.features import TextShadowData, UserRanks, bin_edges, rank_histograms
from miaudit.text_generator.lm import (
    LMTrainConfig,
    LMTrainResult,
    LSTMLanguageModel,
    Vocabulary,
    train_language_model,
)
from miaudit.text_generator.target import TextGeneratorTarget

__all__ = [
    "LMTrainConfig", "LMTrainResult", "LSTMLanguageModel", "TextGeneratorTarget", "TextShadowData", "UserCorpus",
    "UserRanks", "Vocabulary", "bin_edges", "load_shakespeare_users", "load_table_users", "load_wikitext_users",
    "rank_histograms",
    "train_language_model",
]
