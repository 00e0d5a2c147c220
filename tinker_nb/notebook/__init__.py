"""Notebook face: live dashboard, budget planner, %tinker magics, pandas/plotly views."""

from __future__ import annotations

__all__ = ["BudgetPlanner", "Dashboard", "plan"]


def __getattr__(name: str):
    if name == "Dashboard":
        from .dashboard import Dashboard

        return Dashboard
    if name in ("BudgetPlanner", "plan"):
        from . import planner

        return getattr(planner, name)
    raise AttributeError(name)
