"""Do the reference models behave like the target? Accuracy and loss gaps, with warnings.

A pool trained with a different recipe (fewer epochs, another optimiser, no defense) than the
target produces a weak, misleading attack without any error; this check makes that visible.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from miaudit.classifier.outputs import ClassifierOutputs
from miaudit.classifier.reference.data import ReferencePool
from miaudit.errors import DataError


class FidelityWarning(UserWarning):
    """Reference models differ from the target beyond the tolerance."""


def train_test_stats(outputs: ClassifierOutputs, trained: np.ndarray) -> dict[str, float]:
    """Accuracy and mean loss of one model on the examples it trained on and on the others."""
    trained = np.asarray(trained, dtype=bool)
    if trained.all() or not trained.any():
        raise DataError("fidelity needs both examples the model trained on and examples it did not")
    correct, loss = outputs.correctness, outputs.loss
    return {"train_accuracy": float(correct[trained].mean()), "test_accuracy": float(correct[~trained].mean()),
            "train_loss": float(loss[trained].mean()), "test_loss": float(loss[~trained].mean())}


def check_fidelity(pool: ReferencePool, target: ClassifierOutputs, membership: np.ndarray, *,
                   accuracy_tolerance: float = 0.05, loss_tolerance: float = 0.5, warn: bool = True
                   ) -> dict[str, Any]:
    """Compare the target with the pool's models on the audited examples.

    ``target``: the target's outputs on the pool's ``n`` examples; ``membership`` (n,) True where
    the target trained on the example. Each reference model is measured on its own IN (train) and
    OUT (test) examples. Returns ``{"target", "reference" (mean over models), "reference_std",
    "gaps" (reference - target), "warnings"}``; a gap beyond ``accuracy_tolerance`` (absolute) or
    ``loss_tolerance`` (nats) is a warning that names it.
    """
    if len(target) != pool.keep.shape[1]:
        raise DataError(f"fidelity: target outputs on {len(target)} examples, the pool on {pool.keep.shape[1]}")
    target_stats = train_test_stats(target, membership)
    per_model = [train_test_stats(o, k) for o, k in zip(pool.outputs, pool.keep)]
    keys = list(target_stats)
    reference = {k: float(np.mean([s[k] for s in per_model])) for k in keys}
    spread = {k: float(np.std([s[k] for s in per_model])) for k in keys}
    gaps = {k: reference[k] - target_stats[k] for k in keys}
    gen_gap = {"target": target_stats["train_accuracy"] - target_stats["test_accuracy"],
               "reference": reference["train_accuracy"] - reference["test_accuracy"]}
    gaps["generalization_gap"] = gen_gap["reference"] - gen_gap["target"]
    messages = []
    for key, gap in gaps.items():
        tolerance = loss_tolerance if key.endswith("loss") else accuracy_tolerance
        if abs(gap) > tolerance:
            what = key.replace("_", " ")
            ref_value = gen_gap["reference"] if key == "generalization_gap" else reference[key]
            tgt_value = gen_gap["target"] if key == "generalization_gap" else target_stats[key]
            messages.append(f"reference models' {what} {ref_value:.3f} differs from the target's {tgt_value:.3f} "
                            f"by {gap:+.3f} (tolerance {tolerance:g}); train the pool with the target's exact "
                            "recipe (model, epochs, optimiser, defenses) and training-set size")
    if warn:
        for message in messages:
            warnings.warn(message, FidelityWarning, stacklevel=2)
    return {"target": target_stats, "reference": reference, "reference_std": spread, "gaps": gaps,
            "accuracy_tolerance": accuracy_tolerance, "loss_tolerance": loss_tolerance, "warnings": messages}


__all__ = ["FidelityWarning", "check_fidelity", "train_test_stats"]
