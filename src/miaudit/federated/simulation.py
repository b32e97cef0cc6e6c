"""FedAvg federations run by Flower's simulation engine (Ray backend), with the server's view recorded.

One call of :func:`run_federations` starts one Flower simulation (one Ray session): ``n_clients``
virtual SuperNodes run the :class:`~flwr.clientapp.ClientApp` as Ray actors, and one
:class:`~flwr.serverapp.ServerApp` runs every :class:`FederationJob` of the audit in turn (the
target federation of each defense, the attacker's shadow and reference federations) with Flower's
``FedAvg`` strategy, wrapped in Flower's ``DifferentialPrivacyServerSideFixedClipping`` for
DP-FedAvg. Client ``k`` of a job trains on that job's ``partitions[k]``. Batching all federations
into one simulation pays Ray's start-up once; on a cluster (``ray_address``) the same code runs the
clients on its nodes.

What the server records (its view, nothing the clients would not send it):

- after every round in ``audit_rounds``, the global model's logits on each probe set;
- in every round, each client's returned model's loss on ``source_records`` (source inference,
  computed when the update arrives, before any server-side clipping or noise);
- each client's round report (size, local loss, its DP accounting);
- the final global weights when ``keep_model`` is set.

Data reach the actors through Ray's object store (one copy of the dataset, read zero-copy), not
inside every message. Client failures that are bad input (a :class:`~miaudit.errors.MiauditError`,
e.g. a loss that became NaN) come back as the same one-line error; Flower's telemetry is turned
off unless ``FLWR_TELEMETRY_ENABLED`` is set.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch

from miaudit import errors
from miaudit.classifier.training import TrainConfig, predict_logits
from miaudit.data import ArrayDataset
from miaudit.defenses.base import n_classes_of
from miaudit.defenses.registry import DefenseChain
from miaudit.errors import ConfigError, DataError, MiauditError
from miaudit.federated.local import federated_model, is_private, state_of, train_client
from miaudit.federated.privacy import ServerDP
from miaudit.federated.source_inference import cross_entropy
from miaudit.utils.logs import progress as progress_bar
from miaudit.utils.ray_session import init_ray
from miaudit.utils.seed import derive_seed

log = logging.getLogger(__name__)
FLOWER_CITATION = ("Beutel, Topal, Mathur, Qiu, Fernandez-Marques, Gao, Sani, Li, Parcollet, de Gusmão & Lane, "
                   "'Flower: A Friendly Federated Learning Research Framework', arXiv:2007.14390, 2020")
_INSTALL = "pip install 'miaudit[federated]' (Flower with its Ray simulation engine)"


@dataclass
class FederationJob:
    """One federated training run: who holds what, how clients train, what the server records.

    ``partitions``: dataset rows of each client (one array per client); ``recipe``: the local
    recipe (``epochs`` = local epochs per round; ``seed`` = the job's seed: initial weights, and
    with the client and round, each local run's seed); ``chain``: client-side training defenses
    (fresh plugins per client and round); ``server_dp``: DP-FedAvg on the server; ``probes``:
    name -> dataset rows on which the global model's logits are recorded after each round in
    ``audit_rounds``; ``source_records``: dataset rows on which the server scores every client's
    returned model in every round.
    """

    key: str
    partitions: list[np.ndarray]
    recipe: TrainConfig
    rounds: int
    chain: DefenseChain | None = None
    server_dp: ServerDP | None = None
    probes: dict[str, np.ndarray] = field(default_factory=dict)
    audit_rounds: tuple[int, ...] = ()
    source_records: np.ndarray | None = None
    keep_model: bool = False

    @property
    def n_clients(self) -> int:
        return len(self.partitions)

    @property
    def private(self) -> bool:
        """Clients train with a private optimiser (DP-SGD or LADP)."""
        return self.chain is not None and is_private(self.chain.training)


@dataclass
class FederationResult:
    """What the server recorded of one job (see the module docstring); rounds count from 1."""

    key: str
    logits: dict[int, dict[str, np.ndarray]]  # round -> probe -> (n, K) float32
    source_losses: dict[int, np.ndarray]  # round -> (n_clients, n_records)
    client_reports: dict[int, list[dict[str, float]]]  # round -> one report per client, by client index
    final_state: dict[str, torch.Tensor] | None
    seconds: float


@dataclass(frozen=True)
class SimulationBackend:
    """Where the clients run: Ray actors with ``client_cpus`` CPUs (and ``client_gpus`` GPUs) each, on a
    local Ray instance with ``num_cpus`` CPUs (default: all) or on the running cluster at ``ray_address``."""

    client_cpus: float = 1.0
    client_gpus: float = 0.0
    num_cpus: int | None = None
    ray_address: str | None = None


@dataclass
class ClientJob:
    """The part of a job the clients need (shipped once through Ray's object store); one chain per client."""

    partitions: list[np.ndarray]
    recipe: TrainConfig
    chains: list[DefenseChain | None]
    private: bool

    @classmethod
    def of(cls, job: FederationJob) -> ClientJob:
        return cls(job.partitions, job.recipe, [_chain_for(job.chain, len(p)) for p in job.partitions], job.private)


def _chain_for(chain: DefenseChain | None, n: int) -> DefenseChain | None:
    """``chain`` for a client with ``n`` examples, a private optimiser's ``target_epsilon`` resolved to its noise
    multiplier here, once (the same value the plugin would compute itself, in every client and round)."""
    if chain is None:
        return None
    training = []
    for plugin in chain.training:
        params = plugin.get_params()
        if params.get("target_epsilon") is not None and "noise_multiplier" in params:
            params.update(target_epsilon=None, noise_multiplier=cast(Any, plugin).noise_for(n))
            plugin = type(plugin)(**params).bind(plugin.context)
        training.append(plugin)
    return DefenseChain(chain.label, training, list(chain.outputs), list(chain.notes))


def require_flower() -> tuple[str, str]:
    """Import Flower and Ray (telemetry off unless the user set it); their versions, or a one-line error."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    try:
        with warnings.catch_warnings():  # Flower's CLI dependencies (typer, click) warn about each other on import
            warnings.simplefilter("ignore", DeprecationWarning)
            import flwr
            import ray
    except ImportError as exc:
        raise ConfigError(f"federated audits need Flower's simulation engine ({exc.name} is missing): "
                          f"{_INSTALL}") from None
    return flwr.__version__, ray.__version__


# -- the client side (runs in Ray actors) -----------------------------------------------------
_FETCHED: dict[str, Any] = {}


def _fetch(ref: Any) -> Any:
    """The object behind a Ray object reference, fetched once per actor process."""
    import ray

    key = ref.hex()
    if key not in _FETCHED:
        _FETCHED[key] = ray.get(ref)
    return _FETCHED[key]


def local_round(job: ClientJob, dataset: ArrayDataset, client: int, round_: int,
                state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Client ``client``'s training in round ``round_`` of ``job``, from the global ``state``.

    Its seed is derived from the job's seed, the client and the round, so the update does not depend
    on which Ray actor runs it or in which order.
    """
    recipe = dataclasses.replace(job.recipe, seed=derive_seed(job.recipe.seed, "client", client, "round", round_))
    chain = job.chains[client]
    return train_client(state, dataset.subset(job.partitions[client]), recipe,
                        chain.plugins() if chain is not None else [], private=job.private)


def _train_message(msg: Any, context: Any, data_ref: Any, jobs_ref: Any, threads: int) -> Any:
    """Handle one ``train`` message: local training of client ``partition-id`` of the job the config names."""
    from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

    torch.set_num_threads(threads)
    config = msg.content["config"]
    job_id, round_ = int(config["job"]), int(config["server-round"])
    client = int(context.node_config["partition-id"])
    try:
        state, report = local_round(_fetch(jobs_ref)[job_id], _fetch(data_ref), client, round_,
                                    msg.content["arrays"].to_torch_state_dict())
    except MiauditError as exc:  # bad input: sent back as a one-line error, raised again by the server
        failure = ConfigRecord({"type": type(exc).__name__, "message": str(exc), "client": client})
        return Message(RecordDict({"failure": failure}), reply_to=msg)
    metrics = MetricRecord({**report, "unit-weight": 1, "partition-id": client})
    return Message(RecordDict({"arrays": ArrayRecord(state), "metrics": metrics}), reply_to=msg)


def _client_app(data_ref: Any, jobs_ref: Any, threads: int) -> Any:
    from flwr.clientapp import ClientApp

    app = ClientApp()

    @app.train()
    def train(msg: Any, context: Any) -> Any:
        return _train_message(msg, context, data_ref, jobs_ref, threads)

    return app


# -- the server side (runs in a thread of this process) ---------------------------------------
def failure_error(where: str, failure: dict[str, Any]) -> MiauditError:
    """The :class:`MiauditError` subclass a client's failure report names (``type``, ``message``, ``client``)."""
    cls = getattr(errors, str(failure.get("type")), None)
    cls = cls if isinstance(cls, type) and issubclass(cls, MiauditError) else MiauditError
    return cls(f"{where}, client {failure.get('client', '?')}: {failure.get('message')}")


def _client_failure(message: Any, job: FederationJob, round_: int) -> MiauditError:
    """The error a failed client reply stands for, as a one-line :class:`MiauditError`."""
    where = f"federation {job.key!r}, round {round_}"
    if message.has_error():  # not bad input: an unexpected exception, whose traceback Flower logged
        reason = str(message.error.reason).strip().splitlines()
        return MiauditError(f"{where}: a client failed ({reason[-1] if reason else 'no reason given'}); see the "
                            "log above for its traceback")
    return failure_error(where, dict(message.content["failure"]))


class _Recorder:
    """The server's record of one job (see the module docstring)."""

    def __init__(self, job: FederationJob, dataset: ArrayDataset, bar: Any):
        self.job = job
        self.dataset = dataset
        self.bar = bar
        self.model = federated_model(job.recipe, dataset.input_shape, n_classes_of(dataset), private=job.private)
        self.result = FederationResult(job.key, {}, {}, {}, None, 0.0)
        if job.source_records is not None:
            self.source_x = dataset.x[job.source_records]
            self.source_y = dataset.y[job.source_records]

    def _logits(self, state: dict[str, torch.Tensor], x: np.ndarray) -> np.ndarray:
        self.model.load_state_dict(state)
        return predict_logits(self.model, x)

    def replies(self, round_: int, replies: list[Any]) -> list[Any]:
        """Check that every client answered, order the replies by client, record reports and SIA losses."""
        for message in replies:
            if message.has_error() or "failure" in message.content:
                raise _client_failure(message, self.job, round_)
        if len(replies) != self.job.n_clients:
            raise MiauditError(f"federation {self.job.key!r}, round {round_}: {len(replies)} of "
                               f"{self.job.n_clients} clients answered; a Ray actor may have died (out of memory?)")
        reports = [dict(next(iter(m.content.metric_records.values()))) for m in replies]
        order = np.argsort([int(r["partition-id"]) for r in reports])
        replies = [replies[i] for i in order]
        self.result.client_reports[round_] = [reports[i] for i in order]
        if self.job.source_records is not None:
            self.result.source_losses[round_] = np.stack([
                cross_entropy(self._logits(m.content["arrays"].to_torch_state_dict(), self.source_x), self.source_y)
                for m in replies])
        return replies

    def evaluate(self, round_: int, arrays: Any) -> None:
        """Flower's centralised-evaluation hook: the global model after ``round_`` (0 = initial weights)."""
        if round_ == 0:
            return None
        state = arrays.to_torch_state_dict()
        if round_ in self.job.audit_rounds:
            self.result.logits[round_] = {name: self._logits(state, self.dataset.x[rows])
                                          for name, rows in self.job.probes.items()}
        if round_ == self.job.rounds and self.job.keep_model:
            self.result.final_state = {k: v.clone() for k, v in state.items()}
        self.bar.update(1)
        return None


@contextlib.contextmanager
def _seeded_numpy(seed: int) -> Iterator[None]:
    """Seed NumPy's global generator inside the block (Flower draws DP-FedAvg's noise from it), then restore it."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _strategy(job: FederationJob, recorder: _Recorder) -> Any:
    """Flower's FedAvg (or DP-FedAvg), with the server's record taken from the replies before aggregation."""
    from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg, Strategy

    n = job.n_clients
    # DP-FedAvg averages with equal weights (its noise is calibrated to a sum over m clients); FedAvg by size
    fedavg = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n, min_evaluate_nodes=0,
                    min_available_nodes=n, weighted_by_key="unit-weight" if job.server_dp else "num-examples")
    inner: Any = fedavg
    if job.server_dp is not None:
        inner = DifferentialPrivacyServerSideFixedClipping(fedavg, noise_multiplier=job.server_dp.noise_multiplier,
                                                           clipping_norm=job.server_dp.clipping_norm,
                                                           num_sampled_clients=n)

    class RecordingStrategy(Strategy):
        def configure_train(self, server_round: int, arrays: Any, config: Any, grid: Any) -> Any:
            return inner.configure_train(server_round, arrays, config, grid)

        def aggregate_train(self, server_round: int, replies: Any) -> Any:
            ordered = recorder.replies(server_round, list(replies))
            with _seeded_numpy(derive_seed(job.recipe.seed, "server-noise", server_round)):
                return inner.aggregate_train(server_round, ordered)

        def configure_evaluate(self, server_round: int, arrays: Any, config: Any, grid: Any) -> Any:
            return []  # no federated evaluation: the server evaluates the global model itself

        def aggregate_evaluate(self, server_round: int, replies: Any) -> Any:
            return None

        def summary(self) -> None:
            inner.summary()

    return RecordingStrategy()


def _server_app(jobs: list[FederationJob], dataset: ArrayDataset, results: dict[str, FederationResult],
                progress: bool) -> Any:
    from flwr.app import ArrayRecord, ConfigRecord
    from flwr.serverapp import ServerApp

    app = ServerApp()

    @app.main()
    def main(grid: Any, context: Any) -> None:
        with progress_bar(total=sum(j.rounds for j in jobs), desc="federated rounds", enabled=progress,
                          unit="round") as bar:
            for job_id, job in enumerate(jobs):
                start = time.perf_counter()
                recorder = _Recorder(job, dataset, bar)
                initial = ArrayRecord(state_of(recorder.model))  # recipe.seed: the job's initial weights
                bar.set_postfix(federation=job.key)
                _strategy(job, recorder).start(grid=grid, initial_arrays=initial, num_rounds=job.rounds,
                                               train_config=ConfigRecord({"job": job_id}),
                                               evaluate_fn=recorder.evaluate)
                recorder.result.seconds = time.perf_counter() - start
                results[job.key] = recorder.result
                log.info("federation %s: %d clients, %d rounds in %.1f s", job.key, job.n_clients, job.rounds,
                         recorder.result.seconds)

    return app


@contextlib.contextmanager
def _flower_logs_quiet() -> Iterator[None]:
    """Flower logs every round at INFO and its Python API's deprecation at WARNING; keep its errors only."""
    logger = logging.getLogger("flwr")
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _init_ray(backend: SimulationBackend) -> None:
    """Start (or connect to) Ray before Flower does, so the data can go into its object store first.

    Flower's Ray backend reuses this session and shuts it down when the simulation ends.
    """
    import ray

    if ray.is_initialized():
        log.warning("Ray is already initialised in this process; the simulation uses that session and Flower shuts "
                    "it down when it ends")
        return
    env = {"FLWR_TELEMETRY_ENABLED": os.environ["FLWR_TELEMETRY_ENABLED"]}
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.ERROR, "log_to_driver": False}
    if not backend.ray_address:  # the actors import this process's packages (as Flower's own Ray backend arranges)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        kwargs["num_cpus"] = backend.num_cpus
    init_ray(address=backend.ray_address, where="federation.ray_address", runtime_env={"env_vars": env}, **kwargs)
    cpus = ray.cluster_resources().get("CPU", 0)
    if cpus < backend.client_cpus:
        raise ConfigError(f"federation.client_cpus={backend.client_cpus:g} but Ray has {cpus:g} CPUs; lower "
                          "client_cpus")


def run_federations(jobs: list[FederationJob], dataset: ArrayDataset, backend: SimulationBackend = SimulationBackend(),
                    *, progress: bool = True) -> dict[str, FederationResult]:
    """Run every job (same number of clients) in one Flower simulation; the server's record of each, by key."""
    require_flower()
    if not jobs:
        raise ConfigError("run_federations needs at least one federation job")
    sizes = {j.n_clients for j in jobs}
    if len(sizes) != 1:
        raise ConfigError(f"every federation of one simulation needs the same number of clients, got {sorted(sizes)}")
    for job in jobs:
        empty = [k for k, p in enumerate(job.partitions) if len(p) == 0]
        if empty:
            raise DataError(f"federation {job.key!r}: client {empty[0]} has no data; give every client examples")
    import ray
    from flwr.simulation import run_simulation

    _init_ray(backend)
    data_ref = ray.put(dataset)
    jobs_ref = ray.put([ClientJob.of(j) for j in jobs])
    threads = max(1, int(backend.client_cpus))
    results: dict[str, FederationResult] = {}
    log.info("Flower simulation: %d federations x %d clients (Ray actors with %g CPU each)", len(jobs),
             sizes.pop(), backend.client_cpus)
    with _flower_logs_quiet():
        run_simulation(server_app=_server_app(jobs, dataset, results, progress),
                       client_app=_client_app(data_ref, jobs_ref, threads), num_supernodes=jobs[0].n_clients,
                       backend_config={"client_resources": {"num_cpus": backend.client_cpus,
                                                           "num_gpus": backend.client_gpus}})
    missing = [j.key for j in jobs if j.key not in results]
    if missing:
        raise MiauditError(f"the Flower simulation ended before federation {missing[0]!r} finished; see the log")
    return results


__all__ = ["FLOWER_CITATION", "ClientJob", "FederationJob", "FederationResult", "SimulationBackend", "failure_error",
           "local_round", "require_flower", "run_federations"]
