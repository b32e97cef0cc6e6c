"""Source inference (Hu et al., ICDM 2021): which client holds a record known to be a member?

The honest-but-curious server sees every client's returned model ``w_k`` in every round. For a
training record ``(x, y)`` the Bayes-optimal guess of its source, under the paper's analysis, is the
client whose local model has the smallest prediction loss on it::

    source(x, y) = argmin_k  CE(f(x; w_k), y)

(the authors' code, ``SIA.attack``: "the party who has the smallest prediction loss owns the
sample"). Accuracy is compared with chance ``1 / n_clients`` (a Clopper-Pearson interval and a
one-sided binomial test against it), and with two guesses that never look at the updates: the
largest client, and the client holding the most examples of the record's label (both use the true
partition, i.e. oracle knowledge of the clients' sizes and label counts; under label skew the
label alone says much about the source, and only accuracy above that baseline is leakage through
the updates: an exact one-sided McNemar test on the same records says whether it is).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import log_softmax
from scipy.stats import binomtest

from miaudit.errors import DataError

HU_2021 = ("Hu, Salcic, Sun, Dobbie & Zhang, 'Source Inference Attacks in Federated Learning', IEEE ICDM 2021 "
           "(prediction-loss SIA)")


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-example cross-entropy ``(n,)`` of ``logits`` ``(n, K)`` at the true ``labels`` ``(n,)``."""
    logp = log_softmax(np.asarray(logits, dtype=np.float64), axis=1)
    return -logp[np.arange(len(labels)), labels]


def infer_sources(losses: np.ndarray) -> np.ndarray:
    """Guessed source ``(n,)`` from ``losses`` ``(n_clients, n)``: the client with the smallest loss."""
    losses = np.asarray(losses, dtype=np.float64)
    if losses.ndim != 2 or losses.shape[0] < 2:
        raise DataError(f"source inference needs the losses of at least 2 clients as (n_clients, n), got "
                        f"shape {losses.shape}")
    if not np.isfinite(losses).all():
        raise DataError("source inference got non-finite losses; a client's model produced NaN or inf outputs")
    return np.argmin(losses, axis=0)


def _proportion(correct: int, n: int, chance: float, confidence: float) -> dict[str, Any]:
    """Accuracy with its two-sided Clopper-Pearson interval, and the one-sided binomial p-value against chance."""
    ci = binomtest(correct, n, chance).proportion_ci(confidence_level=confidence, method="exact")
    p_value = binomtest(correct, n, chance, alternative="greater").pvalue
    return {"accuracy": correct / n, "accuracy_ci": [float(ci.low), float(ci.high)], "correct": int(correct),
            "n_records": int(n), "p_value_vs_chance": float(p_value)}


def evaluate_source_inference(losses: np.ndarray, owners: np.ndarray, labels: np.ndarray, label_counts: np.ndarray,
                              *, confidence: float = 0.95) -> dict[str, Any]:
    """Accuracy of the prediction-loss SIA with its Clopper-Pearson CI, against chance and two update-free guesses.

    ``losses`` ``(n_clients, n)``: each client's model's loss on the probed records; ``owners``
    ``(n,)``: the client that holds each record (the truth, from the partition); ``labels`` ``(n,)``;
    ``label_counts`` ``(n_clients, n_classes)``: every client's label histogram.
    """
    guesses = infer_sources(losses)
    owners = np.asarray(owners)
    n_clients = losses.shape[0]
    if owners.shape != guesses.shape:
        raise DataError(f"source inference: {owners.size} owners for {guesses.size} probed records")
    chance = 1.0 / n_clients
    correct = guesses == owners
    result = _proportion(int(correct.sum()), owners.size, chance, confidence)
    sizes = label_counts.sum(axis=1)
    by_label = owners == np.argmax(label_counts[:, labels], axis=0)
    # exact McNemar test on the records where exactly one of the two guesses is right
    wins, losses_ = int((correct & ~by_label).sum()), int((~correct & by_label).sum())
    result.update(
        chance=chance,
        largest_client_baseline=float((owners == np.argmax(sizes)).mean()),
        label_baseline=float(by_label.mean()),
        p_value_vs_label_baseline=float(binomtest(wins, wins + losses_, 0.5, alternative="greater").pvalue)
        if wins + losses_ else 1.0,
        per_client_accuracy=[float((guesses[owners == k] == k).mean()) if (owners == k).any() else None
                             for k in range(n_clients)],
    )
    return result


__all__ = ["HU_2021", "cross_entropy", "evaluate_source_inference", "infer_sources"]
