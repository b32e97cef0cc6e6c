"""Starting Ray (or joining a cluster) the same way wherever miaudit uses it.

One place for what every start needs: Ray's notice about a future default for GPU visibility,
printed on every start, is silenced; a cluster address that does not answer is a
:class:`~miaudit.errors.ConfigError` naming the config key and the fix.
"""

from __future__ import annotations

import warnings
from typing import Any

from miaudit.errors import ConfigError


def init_ray(*, address: str | None, where: str, **kwargs: Any) -> None:
    """``ray.init(address=address, **kwargs)``; ``where`` is the config key of the address, for the error."""
    import ray

    if address:
        kwargs["address"] = address
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO.*", category=FutureWarning)
            ray.init(**kwargs)
    except ConnectionError as exc:
        raise ConfigError(f"{where}={address!r}: cannot connect to a Ray cluster ({str(exc).splitlines()[0]}); start "
                          f"one with 'ray start --head' or remove {where}") from None
