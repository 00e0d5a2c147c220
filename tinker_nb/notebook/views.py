"""pandas DataFrames and static plotly figures for after-the-run analysis (imports are lazy)."""

from __future__ import annotations

from typing import Any

__all__ = [
    "audit_frame",
    "checkpoints_frame",
    "epsilon_figure",
    "loss_figure",
    "metrics_frame",
    "privacy_utility_figure",
]


def metrics_frame(tc: Any):
    """One row per optimizer step: loss (not private), live ε bound, throughput; ``time`` as datetimes (UTC)."""
    import pandas as pd

    df = pd.DataFrame(tc.metrics_history())
    if "time" in df.columns:
        df["time"] = pd.to_datetime(df["time"], unit="s", utc=True)
    return df.set_index("step") if len(df) else df


def audit_frame(tc: Any):
    return tc.audit_log().to_pandas()


def checkpoints_frame(tc: Any):
    import pandas as pd

    rows = []
    for c in tc.list_checkpoints():
        rows.append({"artifact_id": c["artifact_id"], "name": c["name"], "step": c["public"].get("step"),
                     "created": pd.to_datetime(c["created"], unit="s"), "size": c["size"],
                     "key_version": c["encryption"]["key_version"], "content_sha256": c["content_sha256"][:16]})
    return pd.DataFrame(rows, columns=["artifact_id", "name", "step", "created", "size", "key_version",
                                       "content_sha256"])


def epsilon_figure(tc: Any):
    """ε (live upper bound per step, and the reported PLD/PRV value now) against steps."""
    import plotly.graph_objects as go

    df = metrics_frame(tc)
    fig = go.Figure()
    if len(df):
        fig.add_scatter(x=df.index, y=df["epsilon"], name="ε (live upper bound)")
    m = tc.get_dp_metrics()
    if m.dp_enabled:
        fig.add_scatter(x=[m.steps], y=[m.epsilon_spent], mode="markers", name=f"ε reported ({m.accountant})")
        if m.target_epsilon:
            fig.add_hline(y=m.target_epsilon, line_dash="dash", annotation_text="target ε")
    fig.update_layout(title="Privacy spent", xaxis_title="step", yaxis_title="ε", template="plotly_white")
    return fig


def loss_figure(tc: Any):
    import plotly.graph_objects as go

    df = metrics_frame(tc)
    fig = go.Figure()
    if len(df):
        fig.add_scatter(x=df.index, y=df["loss"], name="loss")
    fig.update_layout(title="Training loss (not private: a diagnostic for the data owner)", xaxis_title="step",
                      yaxis_title="loss per token", template="plotly_white")
    return fig


def privacy_utility_figure(runs: list[dict]):
    """``runs``: dicts with ``epsilon`` and ``loss`` (e.g. from several budgets) → a trade-off plot."""
    import plotly.graph_objects as go

    fig = go.Figure(go.Scatter(x=[r["epsilon"] for r in runs], y=[r["loss"] for r in runs], mode="lines+markers",
                               text=[r.get("label", "") for r in runs]))
    fig.update_layout(title="Privacy / utility", xaxis_title="ε", yaxis_title="final loss", template="plotly_white")
    return fig
