"""Displays that survive the kernel: a widget view while the kernel lives, static HTML when it does not.

JupyterLab prefers a widget view over the ``text/html`` next to it, and after a kernel restart or a
reload it shows "Error displaying widget: model not found" instead. So a live display is shown with a
display id, and *replaced* (``update_display``) by a bundle without the widget view — plain
``text/html`` that every front-end renders without a kernel — whenever the live view is no longer
needed:

* the dashboard: when ``finish()`` runs, when the client closes, and after every cell that trained
  (an IPython ``post_run_cell`` hook waits for queued work, then freezes); the next training event
  brings the live view back;
* the budget planner: as soon as a *later* cell runs (its last plan, with the ``DPConfig`` line, stays
  in the notebook; re-run its cell, or call ``planner.show()``, for a live one again);
* every live display: when the kernel is asked to shut down by a client that is not the page showing
  it (``jupyter``/nbclient, another tab; a wrapper around the kernel's ``do_shutdown`` freezes them).

JupyterLab drops the link between a display id and its output the moment *it* restarts a kernel, so a
restart from the page can only keep what was frozen before it — hence the rules above. A kernel that
dies in the middle of a training cell (killed, out of memory) cannot update anything: that dashboard
keeps its live view (its last ``text/html`` is what nbconvert and GitHub show).
"""

from __future__ import annotations

import threading
import uuid
import weakref
from typing import TYPE_CHECKING, Any, Protocol

__all__ = ["Freezable", "LiveDisplay", "freeze_all", "register"]

_REGISTRY: weakref.WeakSet[LiveDisplay] = weakref.WeakSet()
_HOOKS = {"post_run_cell": False, "shutdown": False}
_LOCK = threading.Lock()


class Freezable(Protocol):
    def snapshot_html(self) -> str: ...
    def text(self) -> str: ...


def _ipython():
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return None
    return get_ipython()


class LiveDisplay:
    """Mixin for anywidgets: ``show()`` with a display id, ``freeze()`` to static HTML, ``thaw()`` back."""

    _display_id: str | None = None
    _frozen: bool = False
    _in_showing_cell: bool = False
    model_id: str  # the anywidget's

    if TYPE_CHECKING:  # what the widget class mixing this in provides

        def text(self) -> str: ...

        def snapshot_html(self) -> str: ...

    # -- bundles
    def _static_bundle(self) -> dict:
        return {"text/plain": self.text(), "text/html": self.snapshot_html()}

    def _live_bundle(self) -> dict:
        from .dashboard import widgets_enabled

        bundle = self._static_bundle()
        if widgets_enabled():
            bundle["application/vnd.jupyter.widget-view+json"] = {
                "version_major": 2, "version_minor": 1, "model_id": self.model_id}
        return bundle

    # -- display lifecycle
    def show(self) -> LiveDisplay:
        """Display the live view with a display id (so it can later become a static snapshot)."""
        from IPython.display import display

        self._display_id = f"tinker-nb-{type(self).__name__.lower()}-{uuid.uuid4().hex[:12]}"
        self._frozen = False
        # The cell that shows it is still running: its own post_run_cell must leave it live. (A flag, not the
        # execution counter: IPython 9 advances that before the body runs, so it differs from the result's.)
        self._in_showing_cell = True
        display(self._live_bundle(), display_id=self._display_id, raw=True)
        register(self)
        return self

    def leaving_showing_cell(self) -> bool:
        """True once, at the end of the cell that showed this display (post_run_cell): it stays live there."""
        was = getattr(self, "_in_showing_cell", False)
        self._in_showing_cell = False
        return was

    def _ipython_display_(self) -> None:
        self.show()

    def freeze(self) -> LiveDisplay:
        """Replace the displayed view by static HTML (survives restarts, reloads, nbviewer, GitHub)."""
        if self._display_id is not None:
            from IPython.display import update_display

            update_display(self._static_bundle(), display_id=self._display_id, raw=True)
        self._frozen = True
        return self

    def thaw(self) -> None:
        """Bring the live widget view back (after a freeze)."""
        if self._display_id is not None and self._frozen:
            from IPython.display import update_display

            self._frozen = False
            update_display(self._live_bundle(), display_id=self._display_id, raw=True)

    @property
    def frozen(self) -> bool:
        return self._frozen


def register(obj: LiveDisplay) -> None:
    """Track a displayed object so kernel shutdown (and, for dashboards, cell ends) freeze it."""
    with _LOCK:
        _REGISTRY.add(obj)
    _install_hooks()


def freeze_all() -> int:
    """Freeze every displayed live view now; returns how many were frozen."""
    n = 0
    for obj in list(_REGISTRY):
        if obj._display_id is not None and not obj._frozen:
            try:
                before = getattr(obj, "before_freeze", None)
                if before is not None:
                    before(final=True)
                obj.freeze()
                n += 1
            except Exception:  # noqa: BLE001 - shutting down: freeze what we can
                pass
    return n


def _post_run_cell(result: Any = None) -> None:
    count = getattr(result, "execution_count", None)
    for obj in list(_REGISTRY):
        hook = getattr(obj, "after_cell", None)
        if hook is not None:
            try:
                hook(count)
            except Exception:  # noqa: BLE001 - a display hook must never break the user's cell
                pass


def _install_hooks() -> None:
    ip = _ipython()
    if ip is None:
        return
    with _LOCK:
        if not _HOOKS["post_run_cell"]:
            ip.events.register("post_run_cell", _post_run_cell)
            _HOOKS["post_run_cell"] = True
        kernel = getattr(ip, "kernel", None)
        if kernel is not None and not _HOOKS["shutdown"] and hasattr(kernel, "do_shutdown"):
            original = kernel.do_shutdown

            def do_shutdown(restart: bool, _orig=original):
                freeze_all()
                return _orig(restart)

            kernel.do_shutdown = do_shutdown
            _HOOKS["shutdown"] = True
