"""Tinker SDK compatibility: the official ``tinker`` SDK (pinned ``tinker==0.38.*``, extra
``tinker-nb[tinker]``) trains against ``tinker-nb serve`` with DP enforced on the server.

:func:`mount` adds the Tinker ``/api/v1`` routes under ``/tinker`` (so the SDK's ``base_url`` is
``http://host:port/tinker``), authenticated with the server's API keys and tenants. Without the SDK
installed nothing is mounted and the rest of the server is unchanged. docs/TINKER_COMPAT.md.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["PREFIX", "SDK_PIN", "mount"]

PREFIX = "/tinker"
SDK_PIN = "0.38"

log = logging.getLogger("tinker_nb.server.tinker")


def sdk_version() -> str | None:
    try:
        from tinker._version import __version__
    except ImportError:
        return None
    return str(__version__)


def mount(app: Any, state: Any, *, prefix: str = PREFIX) -> bool:
    """Mount the Tinker routes on ``app`` (a FastAPI app over ``state``); False when the SDK is missing."""
    ver = sdk_version()
    if ver is None:
        log.info("Tinker SDK routes not mounted: pip install 'tinker-nb[tinker]' to serve the official SDK.")
        return False
    if not ver.startswith(SDK_PIN + "."):
        log.warning("tinker SDK %s installed; these routes are tested against %s.* only.", ver, SDK_PIN)
    from .routes import build_tinker_router
    from .runtime import TinkerCompat

    compat = TinkerCompat(state)
    app.state.tinker_compat = compat
    app.include_router(build_tinker_router(state, compat), prefix=prefix)
    previous = state.shutdown

    def shutdown() -> None:  # close the Tinker models too when the server stops
        try:
            compat.shutdown()
        finally:
            previous()

    state.shutdown = shutdown
    return True
