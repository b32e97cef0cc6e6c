"""``TextGeneratorTarget``: next-token ranks of a text-generation model on users' texts.

The wrapped model maps token ids ``(b, t)`` to next-token scores ``(b, t, V)`` (logits or
probabilities; only their order matters). The rank of the true next token is the number of vocabulary
entries scored strictly higher (0 = the model's top prediction). A model that cannot give per-position
scores over its vocabulary (e.g. one that only returns generated text) has no ranks: clear error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from miaudit.errors import SignalError
from miaudit.text_generator.features import UserRanks
from miaudit.text_generator.lm import LMTrainResult, pad_batch


class TextGeneratorTarget:
    """Ranks of a text model's next-token predictions; ``access = "probabilities"`` (only the order is used).

    ``model``: torch module or callable, ``(b, t)`` long tensor -> ``(b, t, V)`` scores (a tensor, an
    array, or an object with a ``logits`` attribute such as a Hugging Face output).
    ``encode``: text -> token ids. Each text is scored as ``[start_id] + ids`` predicting ``ids + [end_id]``
    (no end token when ``end_id`` is None); texts are truncated to ``max_length`` tokens.
    """

    access = "probabilities"

    def __init__(self, model: Callable[[torch.Tensor], Any], encode: Callable[[str], Sequence[int]], *,
                 start_id: int, end_id: int | None = None, max_length: int = 128, batch_size: int = 64):
        if not callable(model):
            raise SignalError(f"a text-generation target must be a torch module or callable giving next-token "
                              f"scores, got {type(model).__name__}")
        self.model = model
        self.encode = encode
        self.start_id = start_id
        self.end_id = end_id
        self.max_length = max_length
        self.batch_size = batch_size
        self.vocab_size_: int | None = None

    @classmethod
    def from_trained(cls, result: LMTrainResult, *, max_length: int = 128) -> TextGeneratorTarget:
        """A target over a model from :func:`~miaudit.text_generator.lm.train_language_model`."""
        eos = result.vocab.eos_id
        return cls(result.model, result.vocab.encode, start_id=eos, end_id=eos, max_length=max_length)

    def _scores(self, inputs: torch.Tensor) -> torch.Tensor:
        if isinstance(self.model, torch.nn.Module):
            self.model.eval()
        with torch.no_grad():
            out = self.model(inputs)
        out = getattr(out, "logits", out)
        if not isinstance(out, (torch.Tensor, np.ndarray)):
            raise SignalError(f"the text model returned {type(out).__name__}, not next-token scores; AuditMI needs "
                              "scores over the vocabulary at every position (batch, length, vocab), e.g. logits. "
                              "A model that only returns generated text has no next-token ranks")
        out = torch.as_tensor(out)
        if out.ndim != 3 or tuple(out.shape[:2]) != tuple(inputs.shape) or out.shape[2] < 2:
            raise SignalError(f"the text model returned scores of shape {tuple(out.shape)} for inputs of shape "
                              f"{tuple(inputs.shape)}; next-token ranks need (batch, length, vocab) scores")
        if self.vocab_size_ is not None and out.shape[2] != self.vocab_size_:
            raise SignalError(f"the text model's vocabulary size changed from {self.vocab_size_} to {out.shape[2]}")
        self.vocab_size_ = int(out.shape[2])
        return out.double()

    def next_token_ranks(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Per text, the ``(L,)`` int ranks of its true next tokens (empty array for an empty text)."""
        seqs = [list(self.encode(t))[:self.max_length] for t in texts]
        ranks: list[np.ndarray] = [np.zeros(0, np.int64)] * len(seqs)
        order = sorted((i for i, s in enumerate(seqs) if s), key=lambda i: len(seqs[i]))
        for b in range(0, len(order), self.batch_size):
            idx = order[b:b + self.batch_size]
            inputs, targets = pad_batch([seqs[i] for i in idx], self.start_id, self.end_id, pad_target=-1)
            scores = self._scores(inputs)  # (b, T, V)
            if int(targets.max()) >= scores.shape[2]:
                raise SignalError(f"token id {int(targets.max())} is outside the model's vocabulary of "
                                  f"{scores.shape[2]}; use the model's own tokenizer")
            if not torch.isfinite(scores).all():
                raise SignalError("the text model returned NaN or inf scores; fix the model before auditing")
            true = scores.gather(2, targets.clamp(min=0).unsqueeze(-1))  # (b, T, 1)
            rank = (scores > true).sum(dim=2)  # (b, T)
            for row, i in enumerate(idx):
                ranks[i] = rank[row][targets[row] >= 0].numpy().astype(np.int64)
        return ranks

    def user_ranks(self, user_texts: Sequence[Sequence[str]], user_ids: Sequence[str] | None = None) -> UserRanks:
        """:class:`UserRanks` of every user's texts (users without text are an error)."""
        user_ids = list(user_ids) if user_ids is not None else [str(i) for i in range(len(user_texts))]
        flat = [t for texts in user_texts for t in texts]
        per_text = self.next_token_ranks(flat)
        out, k = [], 0
        for texts in user_texts:
            out.append([r for r in per_text[k:k + len(texts)] if r.size])
            k += len(texts)
        if self.vocab_size_ is None:
            raise SignalError("no user has a non-empty text; nothing to rank")
        return UserRanks(out, self.vocab_size_, user_ids)
