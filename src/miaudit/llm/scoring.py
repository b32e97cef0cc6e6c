""":func:`score_logits`, the public entry point for anyone holding next-token logits.

Which attacks apply and which parameters exist come from the registered LLM attack classes (their
``signals``, ``__init__`` parameters and ``fit_input``); each attack's formula lives next to its class in
:mod:`miaudit.llm.attacks`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from miaudit.errors import ConfigError
from miaudit.llm.signals import DEFAULT_BETAS, OPTIONAL_SIGNALS, Method, compute_token_signals

#: score_logits parameters that are signals from other passes (stored on TokenSignals; ``text`` has its own)
SIGNAL_PARAMS = tuple(s for s in OPTIONAL_SIGNALS if s != "text")


def score_logits(logits: Any, token_ids: Any, *, text: str | None = None, attacks: Sequence[str] | None = None,
                 betas: Iterable[float] = DEFAULT_BETAS, method: Method = "fast", **params: Any) -> dict[str, float]:
    """Membership scores of one document from its next-token logits (higher = member).

    ``logits`` (T, V): row t predicts ``token_ids[t]`` (T,) (numpy or torch, any float dtype).
    ``text`` enables ``zlib``. ``params``: the attacks' hyper-parameters, each given to every attack that
    has it (``k`` for min_k / min_k_pp, ``a`` and ``token_freq`` for dc_pdd, ``beta`` for ac / deriv_ac /
    norm_ac), and signals from other passes (``lowercase_logprob``, ``ref_logprob``, ``prefix_logprob``,
    ``grad_norm``, ``neighbour_logprobs``). ``attacks``: names to compute (default: every LLM attack whose
    signals are present and that needs no fitting; a named attack whose input is missing is an error).
    Attacks that learn from labelled calibration documents (``acmia``) cannot score one document.
    ``betas`` / ``method``: the signal engine's grid and path.
    """
    from miaudit.attacks.registry import attack_names, create_attack, get_attack_class

    classes = {n: get_attack_class(n, "llm") for n in attack_names(target_kind="llm")}
    classes = {n: cls for n, cls in classes.items() if "calibration" not in cls.fit_input}
    hyper_params = sorted({p for cls in classes.values() for p in cls.param_names()})
    unknown = sorted(set(params) - set(SIGNAL_PARAMS) - set(hyper_params))
    if unknown:
        raise ConfigError(f"score_logits has no parameter {unknown[0]!r}; allowed: "
                          f"{', '.join((*SIGNAL_PARAMS, *hyper_params))}")
    if attacks is not None:
        bad = [n for n in attacks if n not in classes]
        if bad:
            raise ConfigError(f"score_logits cannot compute attack {bad[0]!r}; choose from {', '.join(classes)}")
    built = {}
    for name in classes if attacks is None else attacks:
        hyper = {k: v for k, v in params.items() if k in classes[name].param_names() and v is not None}
        built[name] = create_attack(name, target_kind="llm", **hyper)
    if attacks is None:  # those whose optional signals are given and that need no fitting
        given = {k for k, v in params.items() if v is not None} | ({"text"} if text is not None else set())
        built = {n: a for n, a in built.items()
                 if not a.fit_required() and set(a.signals) & set(OPTIONAL_SIGNALS) <= given}
    signals = {k: params[k] for k in SIGNAL_PARAMS if params.get(k) is not None}
    sig = compute_token_signals(logits, token_ids, betas=betas, method=method, text=text, **signals)
    return {name: float(attack.score([sig])[0]) for name, attack in built.items()}
