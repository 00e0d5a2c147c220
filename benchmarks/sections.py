"""The benchmark sections, in report order, and the summary table."""

from __future__ import annotations

from typing import Any


def _training(cfg, models):
    from .training import training_step_section

    return training_step_section(models["embedded"], **cfg["train"])


def _scaling(cfg, models):
    from .training import scaling_section

    base = {k: cfg["train"][k] for k in ("batch", "seq", "rank")}
    return {"rows": scaling_section(models, base=base, grid=cfg["scale_grid"], rounds=cfg["scale_rounds"])}


def _accounting(cfg, models):
    from .accounting_bench import accounting_section

    return accounting_section(steps=cfg["acct_steps"], repeats=cfg["acct_repeats"])


def _checkpoints(cfg, models):
    from .security_bench import checkpoint_section

    return checkpoint_section(sizes_mb=cfg["ckpt_sizes_mb"])


def _ledger(cfg, models):
    from .security_bench import ledger_section

    return ledger_section(n=cfg["ledger_n"])


def _signing(cfg, models):
    from .security_bench import signing_section

    return signing_section(models["embedded"])


def _dashboard(cfg, models):
    from .dashboard_bench import dashboard_section

    return dashboard_section(models["embedded"], steps=cfg["dash_steps"])


def _e2e(cfg, models):
    from .e2e import e2e_section

    t = cfg["train"]
    return e2e_section(models["embedded"], steps=cfg["e2e_steps"], batch=t["batch"], seq=t["seq"])


def _server(cfg, models):
    from .server_bench import server_section

    t, small = cfg["train"], cfg.get("e2e_steps", 10) <= 2  # --smoke runs it tiny
    return server_section(models["embedded"], batch=t["batch"], seq=t["seq"], rank=t["rank"],
                          steps=2 if small else 16, latency_requests=30 if small else 300,
                          concurrency=(1, 2) if small else (1, 4, 8), concurrent_steps=1 if small else 4)


SECTIONS = {
    "training_step": _training,
    "scaling": _scaling,
    "accounting": _accounting,
    "checkpoints": _checkpoints,
    "ledger": _ledger,
    "signing": _signing,
    "dashboard": _dashboard,
    "end_to_end": _e2e,
    "server": _server,
}


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def headline(report: dict) -> list[tuple[str, Any, str]]:
    """(figure, value, target) rows for the table and docs."""
    s = report["sections"]
    rows: list[tuple[str, Any, str]] = []
    if "training_step" in s:
        r = s["training_step"]["ratios"]
        rows += [("DP / non-DP step time", r["dp_vs_nondp"], "<= 1.15 CPU, <= 1.10 GPU"),
                 ("DP / plain peft+torch step time", r["dp_vs_peft_torch"], "-"),
                 ("DP / opacus make_private step time", r["dp_vs_opacus_ref"], "<= 1.0"),
                 ("DP / non-DP peak memory (step delta)", r.get("memory_dp_vs_nondp"), "<= 1.25")]
    if "scaling" in s:
        for row in s["scaling"]["rows"]:
            where = "" if row["knob"] == "model" or row.get("model", "embedded") == "embedded" else f" ({row['model']})"
            rows.append((f"scaling {row['knob']}={row['value']}{where}: DP / non-DP", row["ratio"], "-"))
    if "accounting" in s:
        a = s["accounting"]
        rows += [("live ε update per step (ms)", a["live_update_ms_median"], "<= 0.1"),
                 ("exact ε PLD at checkpoint (s)", a["exact_epsilon_seconds"]["pld"]["median"], "-"),
                 ("exact ε PRV at checkpoint (s)", a["exact_epsilon_seconds"]["prv"]["median"], "-")]
    if "checkpoints" in s:
        for k, v in s["checkpoints"].get("headline", {}).items():
            rows.append((k, v[0], v[1]))
    if "ledger" in s:
        for k, v in s["ledger"].get("headline", {}).items():
            rows.append((k, v[0], v[1]))
    if "signing" in s:
        for k, v in s["signing"].get("headline", {}).items():
            rows.append((k, v[0], v[1]))
    if "dashboard" in s:
        d = s["dashboard"]
        rows += [("dashboard attached / detached loop time", d["ratio"], "<= 1.01"),
                 ("dashboard messages per second", d["messages_per_s"], "<= ~10")]
    if "end_to_end" in s:
        e = s["end_to_end"]
        rows += [("E2E forward_backward p50 DP / non-DP", e["ratios"]["forward_backward_p50"], "-"),
                 ("E2E optim_step p50 DP / non-DP", e["ratios"]["optim_step_p50"], "-"),
                 ("E2E total DP / non-DP", e["ratios"]["total"], "-")]
    if "server" in s:
        rows += [(name, fig["median"], tgt or "-") for name, fig, tgt in s["server"]["headline"]]
    return rows


def table(report: dict) -> str:
    rows = headline(report)
    w = max([len(r[0]) for r in rows] + [10])
    lines = [f"{'figure'.ljust(w)}  {'measured':>10}  target", "-" * (w + 30)]
    lines += [f"{name.ljust(w)}  {_fmt(val):>10}  {tgt}" for name, val, tgt in rows]
    if report.get("errors"):
        lines.append(f"FAILED sections: {', '.join(report['errors'])}")
    return "\n".join(lines)


def markdown(report: dict) -> str:
    """The headline rows as a Markdown table (docs/BENCHMARKS.md is pasted from this, never typed)."""
    m = report.get("machine", {})
    head = (f"mode `{report.get('mode')}`, {m.get('cpu_count')} CPU cores, torch {m.get('torch')}, "
            f"CUDA {m.get('cuda') or 'none'}")
    lines = [head, "", "| figure | measured | target |", "|---|---:|---|"]
    lines += [f"| {name} | {_fmt(val)} | {tgt} |" for name, val, tgt in headline(report)]
    if report.get("errors"):
        lines.append(f"\nFAILED sections: {', '.join(report['errors'])}")
    return "\n".join(lines)
