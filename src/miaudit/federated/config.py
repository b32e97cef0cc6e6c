"""Federated audit configuration (``kind: federated``): the federation, its defenses, the attacker's knowledge.

Parsed strictly from YAML (``miaudit.config.from_dict``). Shared sections (``attacks``,
``evaluation``, ``dataset``) are those of :mod:`miaudit.runs.config`; the local training recipe is
the classifier zoo's :class:`~miaudit.classifier.training.TrainConfig` (without ``epochs``: clients
run ``federation.local_epochs`` per round); shadow models are configured as in the classifier
audit, and defense rows as in ``miaudit defend`` (:class:`~miaudit.defenses.compare.DefenseSpec`)
plus the server-side ``dp_fedavg``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from miaudit.classifier.config import ShadowConfig
from miaudit.classifier.training import TrainConfig
from miaudit.defenses.compare import DefendSplit, DefenseSpec
from miaudit.errors import ConfigError
from miaudit.runs.config import AttackSpec, DatasetConfig, EvaluationConfig, check_attack_specs

#: name of the server-side defense (Flower's DP-FedAvg wrapper); every other name is a client-side defense
DP_FEDAVG = "dp_fedavg"
_LABEL = re.compile(r"[A-Za-z0-9_.\-]+")


@dataclass
class FederatedSplit(DefendSplit):
    """Disjoint parts of the dataset, drawn from the run's seed.

    ``n_members``: the union of the clients' training data (audited as members, partitioned over
    the clients); ``n_nonmembers``: held out, audited as non-members (and the test set of the
    global model's accuracy); ``n_shadow``: the attacker's data for shadow federations;
    ``n_population``: further data no model trained on (population attacks, RMIA's ``z``);
    ``n_reference``: public data the server hands to every client (LADP's public batch, any
    client defense that needs reference data), never audited.
    """


@dataclass
class FederationConfig:
    """FedAvg (McMahan et al. 2017) with ``n_clients`` clients, all taking part in each of ``rounds`` rounds.

    Each client trains ``local_epochs`` epochs per round with the ``training`` recipe.
    ``partition``: how the members are split over the clients: ``iid`` (uniformly at random),
    ``dirichlet`` (label skew: each class's examples spread over the clients with proportions
    drawn from Dir(``alpha``, default 0.5), Hsu, Qi & Brown 2019; small ``alpha`` = strongly
    non-IID) or ``shards`` (McMahan et al. 2017: sorted by label, cut into ``n_clients *
    shards_per_client`` shards, default 2 per client). A client with fewer than
    ``min_client_size`` examples is an error, never silently re-drawn.

    ``per_round``: audit the global model after every round (per-round leakage) or after the last
    one only. The Flower simulation engine runs the clients as Ray actors with ``client_cpus``
    CPUs (and ``client_gpus`` GPUs, for ``training.device: cuda``) each, on a local Ray instance
    with ``num_cpus`` CPUs (default: all) or on the running Ray cluster at ``ray_address``.
    """

    n_clients: int = 5
    rounds: int = 10
    local_epochs: int = 1
    partition: Literal["iid", "dirichlet", "shards"] = "iid"
    alpha: float | None = None
    shards_per_client: int | None = None
    min_client_size: int = 1
    per_round: bool = True
    client_cpus: float = 1.0
    client_gpus: float = 0.0
    num_cpus: int | None = None
    ray_address: str | None = None

    def __post_init__(self) -> None:
        for key, only, default in (("alpha", "dirichlet", 0.5), ("shards_per_client", "shards", 2)):
            if self.partition == only and getattr(self, key) is None:
                setattr(self, key, default)
            elif self.partition != only and getattr(self, key) is not None:
                raise ConfigError(f"config.federation.{key}: only for partition: {only} (got partition: "
                                  f"{self.partition}); remove it")
        checks = [
            (self.n_clients >= 2, "n_clients", "federated learning needs at least 2 clients"),
            (self.rounds >= 1, "rounds", "use an integer >= 1"),
            (self.local_epochs >= 1, "local_epochs", "use an integer >= 1"),
            (self.alpha is None or self.alpha > 0, "alpha",
             "the Dirichlet concentration must be > 0 (e.g. 0.5; smaller = more skewed)"),
            (self.shards_per_client is None or self.shards_per_client >= 1, "shards_per_client",
             "use an integer >= 1"),
            (self.min_client_size >= 1, "min_client_size", "every client needs at least 1 example"),
            (self.client_cpus > 0, "client_cpus", "give each client a positive number of CPUs (e.g. 1)"),
            (self.client_gpus >= 0, "client_gpus", "use a number >= 0 (e.g. 0.5: two clients share a GPU)"),
            (self.num_cpus is None or self.num_cpus >= 1, "num_cpus", "use an integer >= 1 or leave it unset"),
        ]
        for ok, key, fix in checks:
            if not ok:
                raise ConfigError(f"config.federation.{key}={getattr(self, key)!r} is invalid; {fix}")
        if self.ray_address is not None and self.num_cpus is not None:
            raise ConfigError("config.federation.num_cpus: sets the CPUs of a local Ray instance; a cluster at "
                              "ray_address uses its own resources, so remove num_cpus")


@dataclass
class FederatedReferenceConfig:
    """``n_models`` reference federations (LiRA / RMIA-style attacks) on paired halves of the audited examples.

    Each trains like the target (same clients, partition scheme, rounds and defense) on its half;
    ``n_models`` must be even (every audited example is IN for half of them).
    """

    n_models: int = 0

    def __post_init__(self) -> None:
        if self.n_models < 0 or self.n_models % 2:
            raise ConfigError(f"config.reference.n_models: must be an even number >= 0 (paired halves), "
                              f"got {self.n_models}")


@dataclass
class SourceInferenceConfig:
    """Source inference (Hu et al., ICDM 2021) by the honest-but-curious server.

    For ``n_records`` members (default: every member) the server computes each client's returned
    model's loss and names the client with the smallest loss as the record's source, after every
    round. ``enabled: false`` skips it.
    """

    enabled: bool = True
    n_records: int | None = None

    def __post_init__(self) -> None:
        if self.n_records is not None and self.n_records < 1:
            raise ConfigError(f"config.source_inference.n_records: must be >= 1 (or unset for every member), "
                              f"got {self.n_records}")


@dataclass
class FederatedConfig:
    """A membership and source-inference audit of federated learning (``kind: federated``)."""

    dataset: DatasetConfig
    split: FederatedSplit
    attacks: list[AttackSpec]
    kind: Literal["federated"] = "federated"
    seed: int = 0
    federation: FederationConfig = field(default_factory=FederationConfig)
    training: TrainConfig = field(default_factory=TrainConfig)
    defenses: list[DefenseSpec] = field(default_factory=lambda: [DefenseSpec(name="none")])
    shadow: ShadowConfig = field(default_factory=ShadowConfig)
    reference: FederatedReferenceConfig = field(default_factory=FederatedReferenceConfig)
    source_inference: SourceInferenceConfig = field(default_factory=SourceInferenceConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    def __post_init__(self) -> None:
        check_attack_specs(self.attacks)
        if not self.defenses:
            raise ConfigError("config.defenses: list at least one defense (e.g. {name: none})")
        labels = [defense_label(d) for d in self.defenses]
        for i, label in enumerate(labels):
            if not _LABEL.fullmatch(label):
                raise ConfigError(f"config.defenses[{i}]: label {label!r} must use only letters, digits, '_', '.' "
                                  "and '-' (it names attacks and files); give the row a 'label'")
            if labels.count(label) > 1:
                raise ConfigError(f"config.defenses[{i}]: {label!r} appears twice; give each repeat a distinct "
                                  "'label'")
        if self.shadow.n_models and not self.split.n_shadow:
            raise ConfigError("config.split.n_shadow: shadow federations need shadow data; give a positive size")
        if self.split.n_shadow and not self.shadow.n_models:
            raise ConfigError("config.split.n_shadow: no shadow federation uses it; set shadow.n_models or remove it")


def defense_label(spec: DefenseSpec) -> str:
    """The row's name: its ``label``, its defense's name, or the composed names joined by ``-``."""
    return spec.label or spec.name or "-".join(c.name for c in spec.compose)


__all__ = ["DP_FEDAVG", "FederatedConfig", "FederatedReferenceConfig", "FederatedSplit", "FederationConfig",
           "SourceInferenceConfig", "defense_label"]
