"""Differential privacy in a federation: DP-FedAvg on the server, and accounting across rounds.

Two places to add noise, two guarantees:

- **Client-side** (DP-SGD through Opacus, or the project's layer-adaptive DP, run by every client
  on its own data): each round client ``k`` runs ``steps`` Poisson-subsampled Gaussian steps with
  noise multiplier ``sigma_k`` and rate ``q_k``; the model it returns is post-processing of them.
  Over all rounds its records are ``(epsilon_k, delta)``-DP (record level, add/remove one record)
  by RDP composition of every step it ran (:func:`client_epsilon`); the run's epsilon is the
  largest over the clients. This holds against the server too (it sees only private updates).
- **Server-side** (DP-FedAvg, McMahan et al. 2018, through Flower's
  ``DifferentialPrivacyServerSideFixedClipping``): the server clips each client's update
  ``w_k - w`` to L2 norm ``C``, averages them with equal weights and adds ``N(0, (z C / m)^2)``
  to every coordinate (``m`` clients per round). Every client takes part in every round (no
  sampling amplification), so each round is a Gaussian mechanism with sensitivity ``C`` on the
  sum and noise multiplier ``z``: after ``r`` rounds the released global models are
  client-level ``(epsilon, delta)``-DP (add/remove one client's whole data set),
  :func:`server_epsilon`. For one *record*, the clipped update of its client moves by at most
  ``2C`` (both updates lie in the clipping ball), which is a noise multiplier of ``z / 2``:
  :func:`server_record_epsilon`. The guarantee protects the global models from everyone who
  sees them; the server itself sees the raw updates before clipping and noise (trusted server).

All epsilons come from Opacus's RDP accountant (an upper bound), as everywhere in miaudit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from miaudit.defenses.base import DefenseError

DP_FEDAVG_CITATION = ("McMahan, Ramage, Talwar & Zhang, 'Learning Differentially Private Recurrent Language Models', "
                      "ICLR 2018 (DP-FedAvg); Geyer, Klein & Nabi, 'Differentially Private Federated Learning: A "
                      "Client Level Perspective', arXiv:1712.07557, 2017; Flower's "
                      "DifferentialPrivacyServerSideFixedClipping (flwr.serverapp.strategy)")
_DP_FEDAVG_PARAMS = ("noise_multiplier", "target_epsilon", "clipping_norm", "delta")


def _rdp_epsilon(history: Sequence[tuple[float, float, int]], delta: float) -> float:
    """Epsilon at ``delta`` of a composition of ``(noise_multiplier, sample_rate, steps)`` Gaussian mechanisms."""
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history = [(float(s), float(q), int(n)) for s, q, n in history if n > 0]
    return float(accountant.get_epsilon(delta=delta)) if accountant.history else 0.0


@dataclass(frozen=True)
class ServerDP:
    """DP-FedAvg's parameters: noise multiplier ``z``, clipping norm ``C`` of client updates, ``delta``.

    ``target_epsilon`` is recorded when ``z`` was derived from it (client-level, over all rounds).
    """

    noise_multiplier: float
    clipping_norm: float
    delta: float
    target_epsilon: float | None = None

    @classmethod
    def from_params(cls, params: dict[str, Any], rounds: int, where: str) -> ServerDP:
        """Check ``params`` (``noise_multiplier`` or ``target_epsilon``, ``clipping_norm``, ``delta``)."""
        unknown = sorted(set(params) - set(_DP_FEDAVG_PARAMS))
        if unknown:
            raise DefenseError(f"{where}: dp_fedavg has no parameter {unknown[0]!r}; allowed: "
                               f"{', '.join(_DP_FEDAVG_PARAMS)}")
        z, target = params.get("noise_multiplier"), params.get("target_epsilon")
        clip, delta = params.get("clipping_norm", 1.0), params.get("delta", 1e-5)
        if (z is None) == (target is None):
            raise DefenseError(f"{where}: dp_fedavg needs exactly one of noise_multiplier and target_epsilon")
        for key, value in (("noise_multiplier", z), ("target_epsilon", target), ("clipping_norm", clip)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
                raise DefenseError(f"{where}: dp_fedavg {key} must be a number > 0, got {value!r}")
        if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0 < delta < 1:
            raise DefenseError(f"{where}: dp_fedavg delta must lie in (0, 1), got {delta!r}")
        if target is not None:
            return cls(noise_for_epsilon(float(target), rounds, float(delta), where), float(clip), float(delta),
                       float(target))
        return cls(float(cast(float, z)), float(clip), float(delta))

    def noise_std(self, n_clients: int) -> float:
        """Standard deviation Flower adds to each coordinate of the averaged model: ``z C / m``."""
        return self.noise_multiplier * self.clipping_norm / n_clients

    def epsilons(self, rounds: int) -> dict[str, float]:
        """Client-level and record-level epsilon of the global models after ``rounds`` rounds."""
        return {"client_epsilon": server_epsilon(self.noise_multiplier, rounds, self.delta),
                "record_epsilon": server_record_epsilon(self.noise_multiplier, rounds, self.delta)}


def noise_for_epsilon(target_epsilon: float, rounds: int, delta: float, where: str) -> float:
    """DP-FedAvg's noise multiplier for client-level ``target_epsilon`` after ``rounds`` rounds of every client."""
    from opacus.accountants.utils import get_noise_multiplier

    try:
        return float(get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta, sample_rate=1.0,
                                          steps=rounds, accountant="rdp"))
    except ValueError:
        raise DefenseError(f"{where}: dp_fedavg target_epsilon={target_epsilon:g} at delta={delta:g} cannot be "
                           f"reached in {rounds} rounds; raise target_epsilon or give noise_multiplier") from None


def server_epsilon(noise_multiplier: float, rounds: int, delta: float) -> float:
    """Client-level epsilon of DP-FedAvg after ``rounds`` rounds (every client in every round: sample rate 1)."""
    return _rdp_epsilon([(noise_multiplier, 1.0, rounds)], delta)


def server_record_epsilon(noise_multiplier: float, rounds: int, delta: float) -> float:
    """Record-level epsilon of DP-FedAvg: one record moves its client's clipped update by <= 2C, i.e. ``z / 2``."""
    return _rdp_epsilon([(noise_multiplier / 2, 1.0, rounds)], delta)


def client_epsilon(rounds: Sequence[dict[str, float]], delta: float) -> float:
    """Record-level epsilon of one client's data after the rounds whose DP reports are given.

    Each report holds the round's ``noise_multiplier``, ``sample_rate`` and ``steps`` (Opacus).
    """
    return _rdp_epsilon([(r["noise_multiplier"], r["sample_rate"], int(r["steps"])) for r in rounds], delta)


__all__ = ["DP_FEDAVG_CITATION", "ServerDP", "client_epsilon", "noise_for_epsilon",
           "server_epsilon", "server_record_epsilon"]
