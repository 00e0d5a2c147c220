"""`tinker-nb serve`: the Training API (FastAPI) over the same engine and workspace as the notebook.

``create_app(workspace)`` returns the ASGI app (for tests and other ASGI servers). Needs the ``server``
extra (``pip install tinker-nb[server]``). See docs/SERVER.md.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def create_app(workspace: Any = None, **kwargs: Any):
    """The FastAPI app over ``workspace`` (a folder path or a ``tinker_nb.workspace.Workspace``)."""
    from .app import create_app as _create_app

    return _create_app(workspace, **kwargs)
