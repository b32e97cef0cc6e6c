"""Code named in a config: ``"package.module:attribute"`` imported only when the user opts in.

A config field that names a callable (``neighbourhood.perturb``, ``target.torch_module.class``,
a training function, a black-box prediction function...) makes miaudit import a module and call
into it: it runs code. The rules, the same for every such field:

1. the config must say so explicitly, ``trust_code: true`` in the section of the field;
2. the spec reads ``"package.module:attribute"`` (the attribute may be dotted: ``"pkg.mod:Class.method"``);
3. standard-library and builtin callables are refused even then: neither the module (``os:system``,
   ``subprocess:run``, ``builtins:eval``) nor what the attribute resolves to (a user module that
   re-exports ``os.system``, a ``functools.partial`` around it, a method of a standard-library
   object) may belong to the standard library, so a document can never become a shell command.

Use it in two steps, both raising a one-line :class:`~miaudit.errors.ConfigError` that names the
config key::

    # when the config is parsed (no import yet): format, opt-in and standard-library module
    check_callable_spec(section.perturb, trust_code=section.trust_code, where="neighbourhood.perturb")
    # when the callable is needed
    perturb = import_trusted_callable(section.perturb, trust_code=section.trust_code,
                                      where="neighbourhood.perturb")
    Model = import_trusted_callable(spec, trust_code=True, where="target.torch_module.class",
                                    accept=lambda obj: isinstance(obj, type) and issubclass(obj, nn.Module),
                                    expected="a torch.nn.Module subclass")

``where`` is the field's key (the opt-in key is reported as ``<section>.trust_code``, or as
``trust_key`` when given).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import re
import sys
import types
from collections.abc import Callable
from typing import Any

from miaudit.errors import ConfigError

_SPEC = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")


def _trust_key(where: str, trust_key: str | None) -> str:
    if trust_key:
        return trust_key
    section = where.rsplit(".", 1)[0] if "." in where else ""
    return f"{section}.trust_code" if section else "trust_code"


def is_standard_library(module: str | None) -> bool:
    """Whether a module name belongs to Python's standard library or builtins (None counts as unknown: yes)."""
    if not module:
        return True
    top = module.split(".")[0]
    return top in sys.stdlib_module_names or top in sys.builtin_module_names


def _origins(obj: Any) -> list[str | None]:
    """The modules a callable comes from: its own, and those of what it wraps or is bound to."""
    modules: list[str | None] = []
    for _ in range(32):
        if isinstance(obj, functools.partial):
            obj = obj.func
        elif inspect.ismethod(obj):
            modules.append(type(obj.__self__).__module__ if not isinstance(obj.__self__, type)
                           else obj.__self__.__module__)
            obj = obj.__func__
        else:
            break
    owner = getattr(obj, "__self__", None)
    if owner is not None and not isinstance(obj, type):  # a builtin method: of a module or of an object
        modules.append(owner.__name__ if isinstance(owner, types.ModuleType)
                       else owner.__module__ if isinstance(owner, type) else type(owner).__module__)
    module = obj.__module__ if isinstance(obj, type) else getattr(obj, "__module__", None)
    if not isinstance(module, str):
        module = type(obj).__module__ if not isinstance(obj, (types.BuiltinFunctionType, types.MethodWrapperType)) \
            else None
    modules.append(module)
    return modules


def check_callable_spec(spec: str, *, trust_code: bool, where: str, trust_key: str | None = None) -> None:
    """Check a ``"package.module:attribute"`` spec without importing anything (rules 1-3 of the module doc)."""
    if not isinstance(spec, str) or not _SPEC.fullmatch(spec):
        raise ConfigError(f"{where}: {spec!r} must read \"package.module:attribute\" (a module path, a colon, the "
                          "name of a function or class in it)")
    if not trust_code:
        raise ConfigError(f"{where}: {spec!r} names code that miaudit would import and run; allow it with "
                          f"{_trust_key(where, trust_key)}: true, only for code you wrote or trust")
    module = spec.partition(":")[0]
    if is_standard_library(module):
        raise ConfigError(f"{where}: {spec!r} is from Python's standard library ({module}), which is never run "
                          "from a config; name a function of your own package")


def import_trusted_callable(spec: str, *, trust_code: bool, where: str, trust_key: str | None = None,
                            accept: Callable[[Any], bool] | None = None, expected: str = "a callable"
                            ) -> Callable[..., Any]:
    """Import the callable ``spec`` names under the rules of the module doc; return it.

    ``accept`` is an extra test of the imported object (described by ``expected`` in the error).
    """
    check_callable_spec(spec, trust_code=trust_code, where=where, trust_key=trust_key)
    module_name, _, attr = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # the user's module may raise anything while it is imported
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ConfigError(f"{where}: cannot import {module_name!r} ({type(exc).__name__}: {first}); install it or "
                          "add its folder to PYTHONPATH") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{where}: {module_name!r} has no {attr!r}; check the name after the colon")
        obj = getattr(obj, part)
    if not callable(obj) or (accept is not None and not accept(obj)):
        raise ConfigError(f"{where}: {spec!r} is not {expected}")
    refused = [m for m in _origins(obj) if is_standard_library(m)]
    if refused:
        origin = refused[0] or "an unknown module"
        raise ConfigError(f"{where}: {spec!r} resolves to a callable of Python's standard library or builtins "
                          f"({origin}), which is never run from a config; name a function of your own package")
    return obj


__all__ = ["check_callable_spec", "import_trusted_callable", "is_standard_library"]
