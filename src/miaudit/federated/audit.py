"""``kind: federated``: FedAvg under Flower, attacked by the classifier attacks and by source inference.

Membership ground truth comes from the split: ``split.n_members`` examples are partitioned over
the clients (their union is the members), ``split.n_nonmembers`` are held out. For every defense
row the audit runs, in one Flower simulation (:mod:`miaudit.federated.simulation`):

- the **target federation** on the members (same partition, initial weights and client seeds for
  every defense, so rows differ only by their defense);
- the attacker's **shadow federations** (``shadow.n_models``, each on its own draw of members and
  non-members from the shadow data, partitioned the same way) and **reference federations**
  (``reference.n_models``, on paired halves of the audited examples), trained with the same
  defense: the attacks are adaptive.

Then, after every round (``federation.per_round``) and for the final global model:

- every configured classifier attack scores the global model's outputs on the audited examples,
  fitted on the shadow / reference federations' global models *of the same round* and on the
  global model's outputs on population data (attacks that query the model itself, label-only
  robustness and white-box, run on the final global model only);
- source inference (Hu et al. 2021) by the server, from the clients' returned models;
- the privacy spent so far (:mod:`miaudit.federated.privacy`) and the global model's accuracy.

The final global model's attacks are the run's attacks (``metrics.json`` ``attacks``, scores,
ROC); everything per round and per defense is in ``metrics.json`` ``federated`` and in
``federated.md`` / ``federated_rounds.png``. With several defense rows an attack's name is
``<attack>.<defense>``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from miaudit.attacks.base import Attack
from miaudit.classifier.experiment import check_reference_needs
from miaudit.classifier.outputs import ClassifierOutputs
from miaudit.classifier.queried import ShadowModel, run_queried_attacks, signal_type
from miaudit.classifier.reference import AttackReference, ReferencePool, ShadowData
from miaudit.classifier.targets import TorchClassifierTarget
from miaudit.classifier.training import TrainConfig
from miaudit.config import from_dict, refuse_nested_seed, resolved_without_seed
from miaudit.data import ArrayDataset, load_dataset, make_split, paired_keep_matrix
from miaudit.defenses.base import DefenseContext, DefenseError, OutputDefense, n_classes_of
from miaudit.defenses.dp import private_optimiser
from miaudit.defenses.registry import DefenseChain, build_chain, get_defense_class
from miaudit.errors import ConfigError, DataError
from miaudit.evaluation import evaluate
from miaudit.federated.config import DP_FEDAVG, FederatedConfig, defense_label
from miaudit.federated.local import federated_model, is_private
from miaudit.federated.partition import HSU_2019, MCMAHAN_2017, label_counts, partition
from miaudit.federated.privacy import DP_FEDAVG_CITATION, ServerDP, client_epsilon
from miaudit.federated.report import plot_rounds, render_federated
from miaudit.federated.simulation import (
    FLOWER_CITATION,
    FederationJob,
    FederationResult,
    SimulationBackend,
    require_flower,
    run_federations,
)
from miaudit.federated.source_inference import HU_2021, evaluate_source_inference
from miaudit.runs.pipeline import AuditOutcome, ScoredAttack, build_attacks, register_kind
from miaudit.utils.seed import derive_seed

log = logging.getLogger(__name__)
REPORT_FILE, PLOT_FILE = "federated.md", "federated_rounds.png"
_ROUND_METRICS = ("auc", "auc_ci", "advantage", "advantage_ci", "tpr_at_fpr", "tpr_at_fpr_ci")


def parse(data: dict[str, Any]) -> FederatedConfig:
    """Strict parse; ``training.seed`` and ``training.epochs`` are refused (the top-level ``seed`` and
    ``federation.local_epochs`` decide them)."""
    refuse_nested_seed(data, "training")
    if isinstance(data.get("training"), dict) and "epochs" in data["training"]:
        raise ConfigError("config.training.epochs: clients train federation.local_epochs epochs per round; set that "
                          "instead")
    return from_dict(FederatedConfig, data)


def resolve(config: FederatedConfig) -> dict[str, Any]:
    """The config as written to ``config.yaml`` (re-running it reproduces the run)."""
    resolved = resolved_without_seed(config, "training")
    resolved["training"].pop("epochs", None)
    return resolved


# -- data -----------------------------------------------------------------------------------------
@dataclass
class FederatedData:
    """Dataset rows of every part of the split, and every federation's partition over the clients."""

    dataset: ArrayDataset
    members: np.ndarray
    nonmembers: np.ndarray
    population: np.ndarray
    reference: np.ndarray
    target_parts: list[np.ndarray]
    shadow: list[tuple[np.ndarray, np.ndarray, list[np.ndarray]]] = field(default_factory=list)  # members, non, parts
    keep: np.ndarray | None = None  # (n_reference_models, n_audited)
    reference_parts: list[list[np.ndarray]] = field(default_factory=list)
    source_records: np.ndarray | None = None  # dataset rows probed by source inference

    @property
    def audited(self) -> np.ndarray:
        return np.concatenate([self.members, self.nonmembers])

    @property
    def membership(self) -> np.ndarray:
        return np.r_[np.ones(self.members.size, bool), np.zeros(self.nonmembers.size, bool)]

    @property
    def n_classes(self) -> int:
        return n_classes_of(self.dataset)

    def owners(self, records: np.ndarray) -> np.ndarray:
        """The client holding each of ``records`` (dataset rows of members)."""
        client_of = {int(row): k for k, part in enumerate(self.target_parts) for row in part}
        return np.array([client_of[int(row)] for row in records])

    def client_sizes(self) -> list[int]:
        return [int(p.size) for p in self.target_parts]

    def all_client_sizes(self) -> tuple[int, ...]:
        parts = [self.target_parts, *[s[2] for s in self.shadow], *self.reference_parts]
        return tuple(sorted({int(p.size) for ps in parts for p in ps}))


def _partition(config: FederatedConfig, dataset: ArrayDataset, rows: np.ndarray, what: str,
               *labels: Any) -> list[np.ndarray]:
    fed = config.federation
    positions = partition(dataset.y[rows], fed.n_clients, fed.partition, seed=derive_seed(config.seed, *labels),
                          alpha=fed.alpha, shards_per_client=fed.shards_per_client,
                          min_client_size=fed.min_client_size, what=what)
    return [rows[p] for p in positions]


def prepare_data(config: FederatedConfig, dataset: ArrayDataset) -> FederatedData:
    """Split, partition the target's, shadow and reference federations' data, pick the SIA records."""
    sp = config.split
    split = make_split(len(dataset), n_members=sp.n_members, n_nonmembers=sp.n_nonmembers, n_shadow=sp.n_shadow,
                       n_population=sp.n_population, seed=derive_seed(config.seed, "split"))
    free = np.setdiff1d(np.arange(len(dataset)), np.concatenate([split.audited, split.shadow, split.population]))
    if sp.n_reference > free.size:
        raise DataError(f"split.n_reference={sp.n_reference} but only {free.size} examples of {dataset.name} are "
                        "left after the other parts; lower the sizes")
    public = np.sort(np.random.default_rng(derive_seed(config.seed, "public")).permutation(free)[:sp.n_reference])
    data = FederatedData(dataset, split.target_members, split.target_nonmembers, split.population, public,
                 _partition(config, dataset, split.target_members, "the target federation", "partition", "target"))
    sh = config.shadow
    if sh.n_models:
        n_in = sh.members_per_model or min(sp.n_members, split.shadow.size // 2)
        n_out = sh.nonmembers_per_model or min(sp.n_nonmembers, split.shadow.size - n_in)
        if n_in < 1 or n_out < 1 or n_in + n_out > split.shadow.size:
            raise ConfigError(f"shadow federations need {n_in} members + {n_out} non-members each but split.n_shadow "
                              f"is {split.shadow.size}; raise split.n_shadow or lower shadow.members_per_model")
        for m in range(sh.n_models):
            draw = np.random.default_rng(derive_seed(config.seed, "shadow-data", m)).permutation(split.shadow)
            members, nonmembers = np.sort(draw[:n_in]), np.sort(draw[n_in:n_in + n_out])
            parts = _partition(config, dataset, members, f"shadow federation {m}", "partition", "shadow", m)
            data.shadow.append((members, nonmembers, parts))
    if config.reference.n_models:
        audited = data.audited
        data.keep = paired_keep_matrix(config.reference.n_models, audited.size,
                                       seed=derive_seed(config.seed, "reference-keep"))
        data.reference_parts = [_partition(config, dataset, np.sort(audited[row]), f"reference federation {j}",
                                           "partition", "reference", j) for j, row in enumerate(data.keep)]
    si = config.source_inference
    if si.enabled:
        n = data.members.size if si.n_records is None else si.n_records
        if n > data.members.size:
            raise ConfigError(f"config.source_inference.n_records={n} but there are {data.members.size} members; "
                              "lower it or leave it unset (every member)")
        rng = np.random.default_rng(derive_seed(config.seed, "source-records"))
        data.source_records = np.sort(rng.permutation(data.members)[:n])
    return data


# -- defenses -------------------------------------------------------------------------------------
@dataclass
class _Row:
    """One defense row: its label, local recipe, client-side chain and server-side DP."""

    label: str
    recipe: TrainConfig
    chain: DefenseChain | None
    server_dp: ServerDP | None
    components: list[dict[str, Any]]
    notes: list[str]

    def client_delta(self) -> float | None:
        """``delta`` of the clients' private optimiser, if any."""
        private = private_optimiser(self.chain.training) if self.chain else None
        return None if private is None else float(private.delta)


def _row(config: FederatedConfig, index: int, data: FederatedData) -> _Row:
    """Build and check one defense row before any training."""
    spec = config.defenses[index]
    label = defense_label(spec)
    where = f"config.defenses[{index}] ({label!r})"
    if "epochs" in spec.training:
        raise ConfigError(f"{where}.training.epochs: every row's clients train federation.local_epochs per round; "
                          "remove it")
    try:
        recipe = dataclasses.replace(config.training, **spec.training, epochs=config.federation.local_epochs)
    except TypeError as exc:
        raise ConfigError(f"{where}.training: {exc}") from None
    components = spec.components()
    server = [params for name, params in components if name == DP_FEDAVG]
    client = [(name, params) for name, params in components if name != DP_FEDAVG]
    if len(server) > 1:
        raise DefenseError(f"{where}: dp_fedavg appears twice; give it once")
    for name, _ in client:
        if name != "none" and issubclass(get_defense_class(name), OutputDefense):
            raise DefenseError(f"{where}: {name!r} post-processes a deployed model's outputs; a federated audit "
                               "applies training defenses on the clients and dp_fedavg on the server")
    rounds = config.federation.rounds
    server_dp = ServerDP.from_params(server[0], rounds, where) if server else None
    reference = data.dataset.subset(data.reference) if data.reference.size else None
    context = DefenseContext(dataclasses.replace(recipe, epochs=recipe.epochs * rounds), data.dataset.input_shape,
                             data.n_classes, data.all_client_sizes(), reference)
    chain = build_chain(client, context, label=label) if client else None
    described = chain.components() if chain else []
    if server_dp is not None:
        described.append({"name": DP_FEDAVG, "kind": "server", "citation": DP_FEDAVG_CITATION,
                          "params": dataclasses.asdict(server_dp)})
    notes = [n for n in chain.notes if "training examples -> noise multiplier" not in n] if chain else []
    private = private_optimiser(chain.training) if chain else None
    if private is not None:  # one line instead of one per training-set size
        sizes = data.client_sizes()
        sigmas = [private.noise_for(n) for n in sizes]
        notes.append(f"{label}: the target's clients ({min(sizes)}-{max(sizes)} examples) train with noise multiplier "
                     f"{min(sigmas):.4g}-{max(sigmas):.4g}, accounted over {rounds} rounds x "
                     f"{recipe.epochs} local epochs")
    if server_dp is not None:
        notes.append(f"{label}: the server adds N(0, {server_dp.noise_std(config.federation.n_clients):.4g}^2) to "
                     f"every coordinate of the averaged model (z={server_dp.noise_multiplier:.4g}, "
                     f"C={server_dp.clipping_norm:g}, {config.federation.n_clients} clients)")
    return _Row(label, recipe, chain if chain and chain.training else None, server_dp, described, notes)


# -- jobs -----------------------------------------------------------------------------------------
def _jobs(config: FederatedConfig, row: _Row, data: FederatedData, keep_models: bool) -> list[FederationJob]:
    """The target, shadow and reference federations of one defense row."""
    rounds = config.federation.rounds
    audit_rounds = tuple(range(1, rounds + 1)) if config.federation.per_round else (rounds,)
    probes = {"audited": data.audited}
    if data.population.size:
        probes["population"] = data.population

    def job(key: str, parts: list[np.ndarray], seed: int, **kwargs: Any) -> FederationJob:
        recipe = dataclasses.replace(row.recipe, seed=seed)
        return FederationJob(f"{row.label}/{key}", parts, recipe, rounds, row.chain, row.server_dp,
                             audit_rounds=audit_rounds, **kwargs)

    jobs = [job("target", data.target_parts, derive_seed(config.seed, "target"), probes=probes,
                source_records=data.source_records, keep_model=keep_models)]
    for m, (members, nonmembers, parts) in enumerate(data.shadow):
        jobs.append(job(f"shadow-{m}", parts, derive_seed(config.seed, "shadow", m),
                        probes={"own": np.r_[members, nonmembers]}, keep_model=keep_models))
    for j, parts in enumerate(data.reference_parts):
        jobs.append(job(f"reference-{j}", parts, derive_seed(config.seed, "reference", j), probes=probes))
    return jobs


# -- attacks --------------------------------------------------------------------------------------
def _check_attacks(config: FederatedConfig, attacks: list[tuple[str, Attack]]) -> None:
    for key, attack in attacks:
        check_reference_needs(key, attack, shadow=bool(config.shadow.n_models), pool=config.reference.n_models,
                              population=bool(config.split.n_population),
                              population_fix="split.n_population (data no client trained on)", models="federations")


def _outputs(dataset: ArrayDataset, rows: np.ndarray, logits: np.ndarray) -> ClassifierOutputs:
    return ClassifierOutputs(dataset.y[rows], logits=logits)


@dataclass
class _Signals:
    """What the attacks see after one round of one defense row."""

    target: ClassifierOutputs
    reference: AttackReference


def _signals(round_: int, data: FederatedData, target: FederationResult, shadows: list[FederationResult],
             references: list[FederationResult]) -> _Signals:
    ds = data.dataset
    population = (_outputs(ds, data.population, target.logits[round_]["population"])
                  if data.population.size else None)
    shadow = None
    if shadows:
        shadow = ShadowData([_outputs(ds, np.r_[m, n], s.logits[round_]["own"]) for (m, n, _), s in
                             zip(data.shadow, shadows)],
                            [np.r_[np.ones(m.size, bool), np.zeros(n.size, bool)] for m, n, _ in data.shadow])
    pool = None
    if references and data.keep is not None:
        pool = ReferencePool([_outputs(ds, data.audited, r.logits[round_]["audited"]) for r in references], data.keep,
                             [_outputs(ds, data.population, r.logits[round_]["population"]) for r in references]
                             if data.population.size else None)
    return _Signals(_outputs(ds, data.audited, target.logits[round_]["audited"]),
                    AttackReference(shadow=shadow, pool=pool, population=population))


def _model(row: _Row, data: FederatedData, state: Any) -> TorchClassifierTarget:
    """The zoo model of ``row`` with the weights ``state`` (a global model the server recorded)."""
    private = row.chain is not None and is_private(row.chain.training)
    model = federated_model(row.recipe, data.dataset.input_shape, data.n_classes, private=private)
    model.load_state_dict(state)
    return TorchClassifierTarget(model.eval())


def _queried_attacks(config: FederatedConfig, row: _Row, data: FederatedData, target: FederationResult,
                     shadows: list[FederationResult], progress: bool) -> list[tuple[str, Attack, np.ndarray, float,
                                                                               dict[str, Any]]]:
    """Attacks that query the model itself (label-only robustness, white-box), on the final global model.

    Shadow federations' final global models stand in for the shadow models. Returns ``(key, attack,
    scores, seconds, cost)`` in config order.
    """
    queried = [(k, a) for k, a in build_attacks(config.attacks, kind="classifier", seed=config.seed)
               if signal_type(a)]
    if not queried:
        return []
    shadow_models = [ShadowModel(_model(row, data, s.final_state).model, data.dataset.subset(np.r_[m, n]),
                                 np.r_[np.ones(m.size, bool), np.zeros(n.size, bool)])
                     for (m, n, _), s in zip(data.shadow, shadows)]
    results = run_queried_attacks(queried, _model(row, data, target.final_state), data.dataset.subset(data.audited),
                                  shadow=shadow_models, progress=progress)
    return [(r.key, r.attack, r.scores, r.seconds, r.cost) for r in results]


def _round_attacks(config: FederatedConfig, signals: _Signals) -> list[tuple[str, Attack, np.ndarray, float]]:
    """Output-based attacks after one round, fitted on that round's shadow / reference federations.

    Returns ``(key, fitted attack, scores, seconds)`` in config order.
    """
    fitted = []
    for key, attack in build_attacks(config.attacks, kind="classifier", seed=config.seed):
        if not signal_type(attack):
            start = time.perf_counter()
            scores = attack.fit(signals.reference).score(signals.target)
            fitted.append((key, attack, scores, time.perf_counter() - start))
    return fitted


def _round_metrics(config: FederatedConfig, key: str, attack: Attack, scores: np.ndarray,
                   membership: np.ndarray) -> dict[str, Any]:
    """AUC, advantage and TPR at the configured FPRs with bootstrap CIs (the pipeline's seed and settings)."""
    ev = config.evaluation
    m = evaluate(membership, scores, threshold=attack.decision_threshold, fprs=tuple(ev.fprs),
                 n_bootstrap=ev.n_bootstrap, confidence=ev.confidence, seed=derive_seed(config.seed, "bootstrap"))
    return {"name": key, **{k: m[k] for k in _ROUND_METRICS}}


def _accuracy(outputs: ClassifierOutputs, mask: np.ndarray) -> float:
    return float(outputs.correctness[mask].mean())


def _privacy(row: _Row, target: FederationResult, round_: int) -> dict[str, Any]:
    """Privacy spent by the end of ``round_`` (record-level unless said otherwise)."""
    out: dict[str, Any] = {}
    delta = row.client_delta()
    if delta is not None:
        reports = [[target.client_reports[r][k] for r in range(1, round_ + 1)]
                   for k in range(len(target.client_reports[1]))]
        per_client = [client_epsilon(r, delta) for r in reports]
        out.update(client_dp_epsilon=max(per_client), client_dp_per_client=per_client, client_dp_delta=delta)
    if row.server_dp is not None:
        eps = row.server_dp.epsilons(round_)
        out.update(dp_fedavg_client_level_epsilon=eps["client_epsilon"],
                   dp_fedavg_record_epsilon=eps["record_epsilon"], dp_fedavg_delta=row.server_dp.delta)
    record = [v for k, v in out.items() if k in ("client_dp_epsilon", "dp_fedavg_record_epsilon")]
    out["epsilon"] = min(record) if record else None  # each bound holds for the released global models
    out["epsilon_against_server"] = out.get("client_dp_epsilon")  # the server sees raw updates: client DP only
    return out


def _evaluate_row(config: FederatedConfig, row: _Row, data: FederatedData, results: dict[str, FederationResult],
                  qualify: bool, progress: bool) -> tuple[dict[str, Any], list[ScoredAttack]]:
    """Per-round leakage, source inference and privacy of one defense row; the final round's scored attacks."""
    target = results[f"{row.label}/target"]
    shadows = [results[f"{row.label}/shadow-{m}"] for m in range(len(data.shadow))]
    references = [results[f"{row.label}/reference-{j}"] for j in range(len(data.reference_parts))]
    membership = data.membership
    counts = label_counts(data.dataset.y, data.target_parts, data.n_classes)
    records = data.source_records

    def source_inference(round_: int) -> dict[str, Any] | None:
        if records is None:
            return None
        return evaluate_source_inference(target.source_losses[round_], data.owners(records), data.dataset.y[records],
                                         counts, confidence=config.evaluation.confidence)

    rounds, final_fits = [], []
    for round_ in sorted(target.logits):
        signals = _signals(round_, data, target, shadows, references)
        fits = _round_attacks(config, signals)
        entry: dict[str, Any] = {"round": round_, "train_accuracy": _accuracy(signals.target, membership),
                                 "test_accuracy": _accuracy(signals.target, ~membership),
                                 "privacy": _privacy(row, target, round_),
                                 "attacks": [_round_metrics(config, k, a, sc, membership) for k, a, sc, _ in fits]}
        si = source_inference(round_)
        if si is not None:
            entry["source_inference"] = si
        rounds.append(entry)
        final_fits = fits
        log.info("[%s] round %d: test accuracy %.4f%s", row.label, round_, entry["test_accuracy"],
                 f", source inference accuracy {si['accuracy']:.3f}" if si is not None else "")
    final = rounds[-1]
    queried = _queried_attacks(config, row, data, target, shadows, progress)
    final["attacks"] += [{**_round_metrics(config, k, a, sc, membership), "final_only": True}
                         for k, a, sc, _, _ in queried]
    # rounds not audited for membership (per_round: false) still have the server's source-inference view
    for round_ in sorted(set(target.source_losses) - set(target.logits)):
        rounds.append({"round": round_, "source_inference": source_inference(round_),
                       "privacy": _privacy(row, target, round_)})
    rounds.sort(key=lambda r: r["round"])
    ids = np.asarray(data.dataset.ids)[data.audited]
    by_key = {k: ScoredAttack(f"{k}.{row.label}" if qualify else k, a, ids, membership, sc, sec,
                              extra={"defense": row.label}) for k, a, sc, sec in final_fits}
    by_key.update({k: ScoredAttack(f"{k}.{row.label}" if qualify else k, a, ids, membership, sc, sec,
                                   extra={"defense": row.label, "cost": cost}) for k, a, sc, sec, cost in queried})
    scored = [by_key[spec.key] for spec in config.attacks]
    entry = {"label": row.label, "components": row.components, "notes": row.notes,
             "train_accuracy": final["train_accuracy"], "test_accuracy": final["test_accuracy"],
             "privacy": final["privacy"], "source_inference": final.get("source_inference"),
             "client_rounds": [{"round": r, "train_loss": [c["train-loss"] for c in target.client_reports[r]]}
                               for r in sorted(target.client_reports)],
             "seconds": round(target.seconds + sum(s.seconds for s in shadows + references), 2),
             "rounds": rounds}
    return entry, scored


# -- the runner -----------------------------------------------------------------------------------
def _describe(config: FederatedConfig, flower: str, ray: str) -> str:
    fed, tr = config.federation, config.training
    scheme = {"iid": "IID", "dirichlet": f"Dirichlet label skew, alpha {fed.alpha:g}",
              "shards": f"{fed.shards_per_client} label shards per client"}[fed.partition]
    return (f"FedAvg global {tr.model} of {fed.n_clients} clients ({scheme}) after {fed.rounds} rounds x "
            f"{fed.local_epochs} local epochs ({tr.optimizer}, lr {tr.lr:g}, batch {tr.batch_size}), trained by "
            f"Flower {flower}'s simulation engine (Ray {ray})")


def run_federated_audit(config: FederatedConfig, folder: Path, *, progress: bool = True) -> AuditOutcome:
    """Check everything, run every federation in one Flower simulation, attack and report."""
    flower_version, ray_version = require_flower()
    attacks = build_attacks(config.attacks, kind="classifier", seed=config.seed)
    _check_attacks(config, attacks)
    fed = config.federation
    if config.training.device.startswith("cuda") and not fed.client_gpus:
        raise ConfigError("config.training.device is cuda but federation.client_gpus is 0, so Ray hides the GPUs "
                          "from the clients; set federation.client_gpus (e.g. 0.5: two clients per GPU)")
    ds = config.dataset
    dataset = load_dataset(ds.source, data_dir=ds.data_dir, seed=config.seed, **ds.options)
    log.info("dataset %s: %d examples, %d classes, input shape %s", dataset.name, len(dataset), dataset.n_classes,
             dataset.input_shape)
    data = prepare_data(config, dataset)
    rows = [_row(config, i, data) for i in range(len(config.defenses))]
    for note in (n for r in rows for n in r.notes):
        log.info("note: %s", note)
    keep_models = any(signal_type(a) for _, a in attacks)
    jobs = [job for row in rows for job in _jobs(config, row, data, keep_models)]
    log.info("federation: %d clients (%s partition, sizes %s), %d rounds x %d local epochs, %d defense rows, "
             "%d federations in all", fed.n_clients, fed.partition, data.client_sizes(), fed.rounds, fed.local_epochs,
             len(rows), len(jobs))
    start = time.perf_counter()
    backend = SimulationBackend(client_cpus=fed.client_cpus, client_gpus=fed.client_gpus, num_cpus=fed.num_cpus,
                                ray_address=fed.ray_address)
    results = run_federations(jobs, dataset, backend, progress=progress)
    simulation_seconds = time.perf_counter() - start
    qualify = len(rows) > 1
    entries, scored = [], []
    for row in rows:
        entry, row_scored = _evaluate_row(config, row, data, results, qualify, progress)
        entries.append(entry)
        scored += row_scored
    counts = label_counts(dataset.y, data.target_parts, data.n_classes)
    section = {
        "framework": {"name": "flower", "version": flower_version, "engine": "simulation (Ray backend)",
                      "ray_version": ray_version, "citation": FLOWER_CITATION, "strategy": "FedAvg",
                      "strategy_citation": MCMAHAN_2017},
        "n_clients": fed.n_clients, "rounds": fed.rounds, "local_epochs": fed.local_epochs,
        "partition": {"scheme": fed.partition, "alpha": fed.alpha, "shards_per_client": fed.shards_per_client,
                      "citation": HSU_2019 if fed.partition == "dirichlet" else MCMAHAN_2017
                      if fed.partition == "shards" else None},
        "client_sizes": data.client_sizes(), "client_label_counts": counts.tolist(),
        "per_round": fed.per_round, "n_federations": len(jobs),
        "simulation_seconds": round(simulation_seconds, 2),
        "source_inference": {"citation": HU_2021, "n_records": int(data.source_records.size)
                             if data.source_records is not None else 0,
                             "chance": 1.0 / fed.n_clients} if config.source_inference.enabled else None,
        "defenses": entries,
    }
    target = {"source": "federated", "model": config.training.model, "access": "logits",
              "description": _describe(config, flower_version, ray_version)}
    if not qualify:
        target.update(train_accuracy=entries[0]["train_accuracy"], test_accuracy=entries[0]["test_accuracy"])
    data_info = {"dataset": dataset.name, "n_examples": len(dataset), "n_classes": dataset.n_classes,
                 "n_members": int(data.members.size), "n_nonmembers": int(data.nonmembers.size),
                 "n_shadow": config.split.n_shadow, "n_population": int(data.population.size),
                 "n_reference": int(data.reference.size), "n_clients": fed.n_clients}
    (folder / REPORT_FILE).write_text(render_federated(section, target, data_info, config.evaluation.fprs),
                                      encoding="utf-8")
    plot_rounds(section, folder / PLOT_FILE)
    return AuditOutcome(target=target, data=data_info, attacks=scored, sections={"federated": section})


register_kind("federated", FederatedConfig, run_federated_audit, parse=parse, resolve=resolve)

__all__ = ["FederatedData", "parse", "prepare_data", "resolve", "run_federated_audit"]
