"""Token-level view: which passage of a document looks memorised?

Each scored token gets a membership score, higher = more member-like:

- ``"min_k_pp"`` (default): Min-K%++'s per-token statistic (Zhang et al. 2024),
  ``(log p(x_t) - E_p[log p]) / std_p[log p]``: how much more likely the actual next token is than a
  token drawn from the model's own prediction, in standard deviations. Models put unusually high
  probability on tokens they were trained on, so long runs of high values mark memorised spans.
- ``"loss"``: ``log p(x_t)`` (Yeom et al. 2018's loss, per token).

:func:`token_view` aligns the scores with the document's text (offsets of a fast tokenizer, or
incremental decoding otherwise) and finds the highest-scoring span; :func:`render_html` writes a
self-contained HTML page (no scripts, no external files) colouring each token red (member-like) or
blue (non-member-like), with the score in a tooltip.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from miaudit.errors import ConfigError, SignalError
from miaudit.llm.signals import TokenSignals

Method = Literal["min_k_pp", "loss"]


def token_scores(signals: TokenSignals, method: Method = "min_k_pp") -> np.ndarray:
    """Per-token membership scores ``(T,)`` of one document, higher = more member-like (module doc)."""
    if method == "loss":
        return np.asarray(signals.log_prob, dtype=np.float64)
    if method == "min_k_pp":
        if signals.var_logp is None or signals.mean_logp is None:
            raise SignalError(f"the min_k_pp token view needs logits access; these signals come from "
                              f"{signals.access}: use token_view.method: loss")
        sigma = np.sqrt(np.asarray(signals.var_logp, dtype=np.float64))
        centred = signals.log_prob - signals.mean_logp
        return np.divide(centred, sigma, out=np.zeros_like(centred), where=sigma > 0)
    raise ConfigError(f"token score method {method!r} is not allowed; choose min_k_pp or loss")


def text_pieces(tokenizer: Any, text: str) -> list[str]:
    """The text of each token of ``tokenizer(text, add_special_tokens=False)``; each piece includes the
    characters before it (spaces), so the pieces concatenate to the text up to its last token."""
    try:
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        offsets = encoded["offset_mapping"]
    except (NotImplementedError, ValueError, KeyError, TypeError):
        offsets = None
    if offsets is not None:
        pieces, previous = [], 0
        for _start, end in offsets:
            end = max(end, previous)
            pieces.append(text[previous:end])
            previous = end
        return pieces
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    decoded = [tokenizer.decode(ids[:i]) for i in range(len(ids) + 1)]
    return [decoded[i + 1][len(decoded[i]):] for i in range(len(ids))]


@dataclass
class TokenView:
    """One document's tokens and scores. ``pieces`` (n_text_tokens,) text of every token; the last
    ``len(scores)`` of them are scored (without a BOS the first token is context only)."""

    doc_id: str
    pieces: list[str]
    scores: np.ndarray  # (T,) higher = member-like
    log_prob: np.ndarray  # (T,)
    method: str
    label: int | None = None
    document_score: float | None = None  # the audit's score of the whole document, if given
    span: tuple[int, int] = (0, 0)  # [start, end) in scored-token positions of the highest-scoring span

    @property
    def first_scored(self) -> int:
        return len(self.pieces) - len(self.scores)


def _best_span(scores: np.ndarray, width: int) -> tuple[int, int]:
    width = max(1, min(width, scores.size))
    sums = np.convolve(scores, np.ones(width), mode="valid")
    start = int(np.argmax(sums))
    return start, start + width


def token_view(target: Any, text: str, signals: TokenSignals | None = None, *, doc_id: str = "",
               label: int | None = None, document_score: float | None = None, method: Method = "min_k_pp",
               span_tokens: int = 16) -> TokenView:
    """Per-token scores of ``text`` under ``target`` (a :class:`~miaudit.llm.target.HFCausalLM`, or an
    :class:`~miaudit.llm.api.APICausalLM` whose token strings are the server's, with ``method="loss"``);
    ``signals`` from an earlier pass are reused, else one forward pass computes them."""
    if signals is None:
        (signals,) = target.token_signals([text], attach_text=False)
    if hasattr(target, "token_pieces"):  # an API target: the server's token strings
        pieces, unscored = target.token_pieces(text)
        scored = pieces[unscored:]
    else:
        pieces = text_pieces(target.tokenizer, text)
        n_ids = len(target.encode(text)) - int(target.has_bos)
        if n_ids != len(pieces):
            raise SignalError(f"document {doc_id!r}: the tokenizer's offsets give {len(pieces)} tokens but encoding "
                              f"gives {n_ids}; cannot align the token view")
        scored = pieces if target.has_bos else pieces[1:]
    if signals.n_tokens > len(scored):
        raise SignalError(f"document {doc_id!r}: {signals.n_tokens} scored tokens but the text has {len(scored)}; "
                          "the signals belong to another text")
    shown = pieces[: len(pieces) - len(scored) + signals.n_tokens]  # truncated documents end early
    scores = token_scores(signals, method)
    return TokenView(doc_id, shown, scores, np.asarray(signals.log_prob, dtype=np.float64), method, label,
                     document_score, _best_span(scores, span_tokens))


_STYLE = """
body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em;color:#222}
.doc{border-top:1px solid #ccc;padding:1em 0}
.text{font-family:ui-monospace,monospace;white-space:pre-wrap;line-height:1.7}
.text span{border-radius:2px}
.best{outline:2px solid #222;outline-offset:2px;border-radius:3px}
.meta{color:#555;font-size:.9em}
.legend span{padding:0 .5em;font-family:ui-monospace,monospace}
"""


def _colour(score: float, scale: float) -> str:
    strength = min(1.0, abs(score) / scale) * 0.85
    rgb = "214,39,40" if score > 0 else "31,119,180"
    return f"rgba({rgb},{strength:.2f})"


def _render_view(view: TokenView, scale: float) -> str:
    first = view.first_scored
    out = []
    for i, piece in enumerate(view.pieces):
        if i < first:
            out.append(f'<span title="context only (no BOS before it): not scored">{html.escape(piece)}</span>')
            continue
        t = i - first
        score, logp = view.scores[t], view.log_prob[t]
        if t == view.span[0]:
            out.append('<span class="best">')
        tip = html.escape(f"{piece!r}: {view.method} score {score:+.2f}, log p {logp:.2f}", quote=True)
        out.append(f'<span style="background:{_colour(score, scale)}" title="{tip}">{html.escape(piece)}</span>')
        if t == view.span[1] - 1:
            out.append("</span>")
    label = {1: "member", 0: "non-member"}.get(view.label, "unknown") if view.label is not None else "unknown"
    span_text = "".join(view.pieces[first + view.span[0]:first + view.span[1]])
    doc_score = "" if view.document_score is None else f" &middot; document score {view.document_score:.4g}"
    return (f'<section class="doc"><h2>{html.escape(view.doc_id or "document")}</h2>'
            f'<p class="meta">ground truth: {label}{doc_score} &middot; mean token score {view.scores.mean():+.3f}'
            f' &middot; {view.scores.size} scored tokens &middot; highest-scoring span (outlined, mean '
            f'{view.scores[view.span[0]:view.span[1]].mean():+.2f}): <q>{html.escape(span_text.strip())}</q></p>'
            f'<div class="text">{"".join(out)}</div></section>')


def render_html(views: Sequence[TokenView], *, title: str = "Token-level membership view", scale: float = 3.0) -> str:
    """A self-contained HTML page for ``views``; colours saturate at ``|score| = scale``."""
    legend = (f'<p class="legend">Colour: <span style="background:{_colour(scale, scale)}">member-like</span>'
              f'<span style="background:{_colour(0.5, 3)}">slightly</span>'
              f'<span style="background:{_colour(-scale, scale)}">non-member-like</span> '
              f'(saturates at |score| = {scale:g}). Hover a token for its score.</p>')
    method = views[0].method if views else "min_k_pp"
    explain = ("Token score = Min-K%++ per-token statistic (log p(x_t) - E[log p]) / std[log p] "
               "(Zhang et al. 2024)" if method == "min_k_pp" else "Token score = log p(x_t)")
    body = "".join(_render_view(v, scale) for v in views)
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1><p>{explain}; higher = more '
            f'member-like.</p>{legend}{body}</body></html>\n')


def write_html(path: str | Path, views: Sequence[TokenView], **kwargs: Any) -> Path:
    path = Path(path)
    path.write_text(render_html(views, **kwargs), encoding="utf-8")
    return path


__all__ = ["TokenView", "render_html", "text_pieces", "token_scores", "token_view", "write_html"]
