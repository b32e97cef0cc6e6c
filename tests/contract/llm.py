"""Synthetic, separable language-model case for the attack contract (and the LLM attack tests).

Each document has ``T`` tokens drawn uniformly from a vocabulary of ``V``; a model's logits at each
position are standard normal, plus ``BONUS`` on the document's actual next token when the document
is a member (the model memorised it). Every optional signal is supplied, with the behaviour its
attack expects from a memorised text: the lowercased text, the reference model, the non-member
prefix and the neighbours all bring a member's log-likelihood down to a non-member's level, and a
member's loss gradient is smaller.

``make_case(attack_cls, seed) -> (reference, signals, labels)``: ``reference`` is what the attack's
``fit`` takes (token counts of a reference corpus for ``dc_pdd``, labelled calibration documents
for ``acmia``, else None); ``signals`` a list of TokenSignals; ``labels`` (n,) with 1 = member.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from miaudit.llm.attacks.dc_pdd import token_counts
from miaudit.llm.selection import LLMCalibration
from miaudit.llm.signals import TokenSignals, compute_token_signals

V = 1000
T = 16
N_DOCS = 40
BONUS = 2.0


def make_documents(seed: int, n_docs: int = N_DOCS) -> tuple[list[TokenSignals], np.ndarray]:
    """``n_docs`` documents (half members) with every optional signal, and their labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n_docs) % 2
    docs = []
    for member in labels:
        ids = rng.integers(0, V, size=T)
        logits = rng.standard_normal((T, V))
        logits[np.arange(T), ids] += BONUS * member
        sig = compute_token_signals(torch.from_numpy(logits).float(), ids)
        plain = float(np.mean(sig.log_prob)) - BONUS * member  # the non-member level of this document
        docs.append(sig.with_signals(
            text=" ".join(f"w{i}" for i in ids),
            lowercase_logprob=plain + 0.1 * rng.standard_normal(),
            ref_logprob=plain + 0.1 * rng.standard_normal(),
            prefix_logprob=plain - 0.5 + 0.1 * rng.standard_normal(),
            grad_norm=float(np.exp(rng.standard_normal() * 0.2) * (1.0 - 0.5 * member)),
            neighbour_logprobs=plain + 0.1 * rng.standard_normal(4),
        ))
    return docs, labels


def make_case(attack_cls: type, seed: int) -> tuple[Any, list[TokenSignals], np.ndarray]:
    signals, labels = make_documents(seed)
    reference: Any = None
    if attack_cls.name == "dc_pdd":
        rng = np.random.default_rng(seed + 1)
        reference = token_counts([rng.integers(0, V, size=200) for _ in range(20)], V)
    elif attack_cls.needs_reference == "calibration":
        calibration, cal_labels = make_documents(seed + 1, n_docs=20)
        reference = LLMCalibration(calibration, cal_labels)
    return reference, signals, labels
