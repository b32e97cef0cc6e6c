"""GradNorm: the size of the loss gradient (white-box)."""

from __future__ import annotations

from miaudit.attacks.registry import register
from miaudit.llm.attacks._common import LLMAttack, need
from miaudit.llm.signals import TokenSignals


def gradnorm_score(sig: TokenSignals) -> float:
    """GradNorm (white-box; MIMIR): minus the gradient norm of the document's loss (members sit in
    flatter regions: smaller gradients)."""
    norm = need(sig, "grad_norm", "gradnorm", "gradient norm of the loss, white-box, see signals.gradient_norm")
    return -float(norm)


@register
class GradNorm(LLMAttack):
    """Minus the gradient norm of the document's mean loss; needs ``grad_norm``, computed by the
    forward-pass helper with :func:`miaudit.llm.signals.gradient_norm` (MIMIR's definition)."""

    name = "gradnorm"
    access = "white-box"
    signals = ("grad_norm",)
    citation = ("Maini et al. LLM Dataset Inference: Did you train on my dataset? NeurIPS 2024; "
                "Duan et al. Do Membership Inference Attacks Work on Large Language Models? (MIMIR) COLM 2024")

    def document_score(self, sig: TokenSignals) -> float:
        return gradnorm_score(sig)
