"""What the notebook-face tests share."""

from __future__ import annotations


class Displays:
    """Records IPython display/update_display calls (widgets enabled), so a test can see live vs static."""

    def __init__(self, monkeypatch):
        import IPython.display as ipd

        from tinker_nb.notebook import dashboard

        self.calls: list[tuple[str, dict, str]] = []
        monkeypatch.setattr(ipd, "display", lambda b, display_id=None, raw=False: self.calls.append(("display", b, display_id)))
        monkeypatch.setattr(ipd, "update_display", lambda b, display_id=None, raw=False: self.calls.append(("update", b, display_id)))
        monkeypatch.setattr(dashboard, "widgets_enabled", lambda: True)

    @staticmethod
    def live(bundle: dict) -> bool:
        return "application/vnd.jupyter.widget-view+json" in bundle
