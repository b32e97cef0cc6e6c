"""The text-generator audit (``kind: text_generator``): AuditMI against word LSTMs the tool trains.

corpus -> users (WikiText-2 article chunks, Tiny Shakespeare speakers or the authors of a table's texts)
-> a seeded, disjoint draw of target member users, target non-member users and the auditor's own users
-> the target LM
trained on its member users' texts, ``shadow.n_models`` shadow LMs each trained on a random half
of the auditor's users, all with the same recipe -> every model's next-token ranks on its users'
texts -> user-level attacks (``auditmi``) fitted on the shadow models' users -> evaluation and the
standard run directory (written by :func:`miaudit.runs.run_audit`; example ids are user ids).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from miaudit.config import from_dict, refuse_nested_seed, resolved_without_seed
from miaudit.data.datasets import find_data_file
from miaudit.errors import ConfigError, DataError
from miaudit.evaluation.run_result import RunResult
from miaudit.runs.config import AttackSpec, EvaluationConfig, check_attack_specs
from miaudit.runs.pipeline import AuditOutcome, ScoredAttack, build_attacks, parse_config, register_kind, run_audit
from miaudit.text_generator.corpus import UserCorpus, load_shakespeare_users, load_table_users, load_wikitext_users
from miaudit.text_generator.features import TextShadowData, UserRanks
from miaudit.text_generator.lm import LMTrainConfig, Vocabulary, train_language_model
from miaudit.text_generator.target import TextGeneratorTarget
from miaudit.utils.atomic import save_npz_atomic
from miaudit.utils.fingerprint import module_fingerprint
from miaudit.utils.seed import derive_seed

log = logging.getLogger(__name__)

WikiTextFile = Literal["train", "valid", "test"]


@dataclass
class TextCorpusConfig:
    """Which real corpus, and how its texts are grouped into users.

    - ``wikitext2``: ``text/wikitext2/<file>.txt`` for each of ``files`` (default valid + test); each
      user is ``texts_per_user`` consecutive sentences of one article (contiguous chunks as users).
    - ``tinyshakespeare``: ``text/tinyshakespeare/input.txt``; each user is a speaker name with at
      least ``texts_per_user`` speeches (all of them are the user's texts).
    - ``table``: your own ``path`` (.jsonl, .json, .csv, .tsv or .parquet; relative to the working
      directory) with one text per row in ``text_column`` and its user's id in ``user_column``; each
      user is an id with at least ``texts_per_user`` texts (all of them are the user's texts).

    ``data_dir``: the folder holding ``text/`` (default ``$MIAUDIT_DATA`` or ``../shared/data``).
    """

    source: Literal["wikitext2", "tinyshakespeare", "table"]
    data_dir: str | None = None
    files: list[WikiTextFile] | None = None
    texts_per_user: int = 16
    path: str | None = None
    user_column: str = "user"
    text_column: str = "text"

    def __post_init__(self) -> None:
        if self.texts_per_user < 1:
            raise ConfigError(f"config.dataset.texts_per_user: must be >= 1, got {self.texts_per_user}")
        if self.source == "table" and not self.path:
            raise ConfigError("config.dataset.path: source table needs the file of your users' texts (.jsonl, .json, "
                              ".csv, .tsv or .parquet with a user id and a text per row)")
        table_keys = [k for k, default in (("path", None), ("user_column", "user"), ("text_column", "text"))
                      if getattr(self, k) != default]
        if self.source != "table" and table_keys:
            raise ConfigError(f"config.dataset.{table_keys[0]}: only for source table (your own file); remove it")
        if self.files is not None and self.source != "wikitext2":
            raise ConfigError("config.dataset.files: only for source wikitext2 (Tiny Shakespeare is one file); "
                              "remove it")
        if self.files is not None and (not self.files or len(set(self.files)) != len(self.files)):
            raise ConfigError(f"config.dataset.files: give distinct WikiText files (train, valid, test), "
                              f"got {self.files}")


@dataclass
class TextSplitConfig:
    """Disjoint random draws of users: the target's training users (members), audited non-member users,
    and the auditor's own users (each shadow model trains on a random half of them)."""

    n_members: int = 100
    n_nonmembers: int = 100
    n_shadow_users: int = 200

    def __post_init__(self) -> None:
        for name, least in (("n_members", 1), ("n_nonmembers", 1), ("n_shadow_users", 2)):
            if getattr(self, name) < least:
                raise ConfigError(f"config.split.{name}: must be >= {least}, got {getattr(self, name)}")


@dataclass
class TextShadowConfig:
    """``n_models`` shadow LMs trained with the target's recipe on random halves of the auditor's users."""

    n_models: int = 4

    def __post_init__(self) -> None:
        if self.n_models < 1:
            raise ConfigError(f"config.shadow.n_models: AuditMI learns from shadow models; need >= 1, "
                              f"got {self.n_models}")


def _default_attacks() -> list[AttackSpec]:
    return [AttackSpec("auditmi")]


@dataclass
class TextGeneratorAuditConfig:
    """A user-level membership audit of a text-generation model (``kind: text_generator``).

    ``vocabulary``: ``corpus`` = the ``lm.vocab_size`` most frequent words of the whole loaded corpus,
    shared by every model (measures memorisation, not out-of-vocabulary effects); ``own`` = each model
    builds it from its own training texts (the authors' setting).
    """

    dataset: TextCorpusConfig
    kind: Literal["text_generator"] = "text_generator"
    seed: int = 0
    split: TextSplitConfig = field(default_factory=TextSplitConfig)
    shadow: TextShadowConfig = field(default_factory=TextShadowConfig)
    lm: LMTrainConfig = field(default_factory=LMTrainConfig)
    vocabulary: Literal["corpus", "own"] = "corpus"
    attacks: list[AttackSpec] = field(default_factory=_default_attacks)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    def __post_init__(self) -> None:
        check_attack_specs(self.attacks)


def parse(data: dict[str, Any]) -> TextGeneratorAuditConfig:
    """Strict parse; ``lm.seed`` is refused (the top-level seed derives every model's seed)."""
    refuse_nested_seed(data, "lm")
    return from_dict(TextGeneratorAuditConfig, data)


def resolve(config: TextGeneratorAuditConfig) -> dict[str, Any]:
    return resolved_without_seed(config, "lm")


def load_corpus(config: TextCorpusConfig) -> UserCorpus:
    """The users of the configured corpus (files found under ``data_dir`` or the shared data folder)."""
    if config.source == "wikitext2":
        paths = [find_data_file(f"text/wikitext2/{name}.txt", config.data_dir)
                 for name in config.files or ("valid", "test")]
        return load_wikitext_users(paths, texts_per_user=config.texts_per_user)
    if config.source == "table":
        assert config.path is not None  # checked by the config
        return load_table_users(config.path, user_column=config.user_column, text_column=config.text_column,
                                min_texts=config.texts_per_user)
    path = find_data_file("text/tinyshakespeare/input.txt", config.data_dir)
    return load_shakespeare_users(path, min_texts=config.texts_per_user)


def _draw_users(corpus: UserCorpus, split: TextSplitConfig, seed: int) -> tuple[UserCorpus, np.ndarray, UserCorpus]:
    """``(audited users (members first), (n_audited,) membership, auditor's users)``, disjoint."""
    n_audited = split.n_members + split.n_nonmembers
    needed = n_audited + split.n_shadow_users
    if needed > len(corpus):
        raise DataError(f"the split needs {needed} users (n_members + n_nonmembers + n_shadow_users) but the corpus "
                        f"has {len(corpus)} ({corpus.source}); lower the split sizes or dataset.texts_per_user")
    order = np.random.default_rng(derive_seed(seed, "split")).permutation(len(corpus))
    membership = np.arange(n_audited) < split.n_members
    return corpus.subset(order[:n_audited]), membership, corpus.subset(order[n_audited:needed])


def _train_and_rank(train: UserCorpus, audited: UserCorpus, recipe: LMTrainConfig, vocab: Vocabulary | None,
                    desc: str, progress: bool) -> tuple[UserRanks, dict[str, Any]]:
    """Train one LM on ``train``'s texts; its next-token ranks on ``audited``'s texts, and a summary."""
    result = train_language_model(train.all_texts(), recipe, vocab=vocab, progress=progress, desc=desc)
    start = time.perf_counter()
    ranks = TextGeneratorTarget.from_trained(result, max_length=recipe.max_length).user_ranks(
        audited.texts, audited.user_ids)
    log.info("%s: %d epochs on %d users (%d tokens) in %.1f s, final train loss %.4f nats/token; ranked %d "
             "users in %.1f s", desc, recipe.epochs, len(train), train.n_tokens, result.seconds,
             result.history[-1]["loss"], len(audited), time.perf_counter() - start)
    info = {"n_parameters": int(sum(p.numel() for p in result.model.parameters())),
            "vocab_size": len(result.vocab), "train_seconds": round(result.seconds, 2),
            "final_train_loss": result.history[-1]["loss"], "fingerprint": module_fingerprint(result.model)}
    return ranks, info


def _top1_accuracy(ranks: UserRanks, users: np.ndarray) -> float:
    """Next-token top-1 accuracy (fraction of tokens ranked first) over all tokens of the ``users`` (bool mask)."""
    return float(np.mean(np.concatenate([r for r, keep in zip(ranks.flat(), users) if keep]) == 0))


def _save_ranks(path: Path, named: dict[str, tuple[UserRanks, np.ndarray]]) -> None:
    """Every model's ranks as flat arrays: ``<role>_ranks`` (users and texts in order), ``<role>_tokens``
    ``(n_users,)`` ranks per user, ``<role>_user_ids``, ``<role>_membership``."""
    arrays: dict[str, np.ndarray] = {}
    for role, (ranks, membership) in named.items():
        flat = ranks.flat()
        arrays |= {f"{role}_ranks": np.concatenate(flat), f"{role}_tokens": np.array([r.size for r in flat]),
                   f"{role}_user_ids": np.array(ranks.user_ids), f"{role}_membership": membership}
    save_npz_atomic(path, arrays, compressed=True)


def run_text_generator_outcome(config: TextGeneratorAuditConfig, folder: Path, *, progress: bool = True
                               ) -> AuditOutcome:
    """Train the target and shadow LMs, rank every user's texts, fit and score every attack."""
    attacks = build_attacks(config.attacks, kind="text_generator", seed=config.seed)
    corpus = load_corpus(config.dataset)
    audited, membership, auditor = _draw_users(corpus, config.split, config.seed)
    recipe = config.lm
    vocab = Vocabulary.build(corpus.all_texts(), recipe.vocab_size) if config.vocabulary == "corpus" else None

    members = audited.subset(np.flatnonzero(membership))
    target_ranks, target_info = _train_and_rank(members, audited, dataclasses.replace(
        recipe, seed=derive_seed(config.seed, "target")), vocab, "target lm", progress)
    n_auditor = len(auditor)
    shadow_ranks, shadow_membership, shadow_infos = [], [], []
    for k in range(config.shadow.n_models):
        inside = np.random.default_rng(derive_seed(config.seed, "shadow-split", k)).permutation(
            np.arange(n_auditor) < n_auditor // 2)
        ranks, info = _train_and_rank(auditor.subset(np.flatnonzero(inside)), auditor, dataclasses.replace(
            recipe, seed=derive_seed(config.seed, "shadow", k)), vocab,
            f"shadow lm {k + 1}/{config.shadow.n_models}", progress)
        shadow_ranks.append(ranks)
        shadow_membership.append(inside)
        shadow_infos.append({**info, "train_accuracy": _top1_accuracy(ranks, inside),
                             "test_accuracy": _top1_accuracy(ranks, ~inside)})
    _save_ranks(folder / "next_token_ranks.npz", {"target": (target_ranks, membership), **{
        f"shadow{k}": (r, m) for k, (r, m) in enumerate(zip(shadow_ranks, shadow_membership))}})

    reference = TextShadowData(shadow_ranks, shadow_membership)
    user_ids = np.array(audited.user_ids)
    scored = []
    for key, attack in attacks:
        start = time.perf_counter()
        scores = attack.fit(reference).score(target_ranks)
        scored.append(ScoredAttack(key, attack, user_ids, membership, scores, time.perf_counter() - start))

    sp = config.split
    target_info = {
        "source": "trained", "model": "lstm-lm", "access": TextGeneratorTarget.access,
        "description": f"word LSTM language model (embedding {recipe.embed_dim}, hidden {recipe.hidden}, vocabulary "
                       f"{target_info['vocab_size']} from {'the whole corpus' if vocab else 'its training texts'}) "
                       f"trained by miaudit on the texts of {sp.n_members} users for {recipe.epochs} epochs "
                       f"(batch {recipe.batch_size}, lr {recipe.lr:g}, texts truncated to {recipe.max_length} "
                       "tokens)",
        **target_info,
        "train_accuracy": _top1_accuracy(target_ranks, membership),
        "test_accuracy": _top1_accuracy(target_ranks, ~membership),
    }
    dataset = Path(config.dataset.path).name if config.dataset.path else config.dataset.source
    data_info = {"dataset": dataset, "users": corpus.source, "n_users_in_corpus": len(corpus),
                 "n_members": sp.n_members, "n_nonmembers": sp.n_nonmembers, "n_shadow_users": n_auditor,
                 "texts_per_user": config.dataset.texts_per_user, "vocabulary": config.vocabulary,
                 "member_tokens": members.n_tokens, "audited_tokens": audited.n_tokens,
                 "example_ids": "user ids"}
    shadow_info = {"n_models": config.shadow.n_models, "users_per_model": n_auditor // 2,
                   "mean_final_train_loss": float(np.mean([i["final_train_loss"] for i in shadow_infos])),
                   "train_accuracy_mean": float(np.mean([i["train_accuracy"] for i in shadow_infos])),
                   "test_accuracy_mean": float(np.mean([i["test_accuracy"] for i in shadow_infos])),
                   "train_seconds": round(sum(i["train_seconds"] for i in shadow_infos), 2),
                   "fingerprints": [i["fingerprint"] for i in shadow_infos]}
    return AuditOutcome(target=target_info, data=data_info, attacks=scored, sections={"shadow": shadow_info})


def run_text_generator_audit(config_dict: Mapping[str, Any], out_dir: str | Path, *, progress: bool = True,
                             overwrite: bool = False) -> RunResult:
    """Run a text-generator audit from a config mapping into the run directory ``out_dir``; return its result
    (``metrics.json``, read-only)."""
    config = parse_config({**config_dict, "kind": "text_generator"})
    return run_audit(config, out_dir, overwrite=overwrite, progress=progress)


register_kind("text_generator", TextGeneratorAuditConfig, run_text_generator_outcome, parse=parse, resolve=resolve)
