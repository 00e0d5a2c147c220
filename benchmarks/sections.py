"""The benchmark sections, in report order, the headline rows, and their table / Markdown rendering."""

from __future__ import annotations

import math
from typing import Any


def _train_kw(cfg: dict) -> dict:
    t = cfg["train"]
    return dict(batch=t["batch"], seq=t["seq"], rank=t["rank"])


def _rounds(cfg: dict, key: str) -> dict:
    r = cfg[key]
    return dict(min_rounds=r["min_rounds"], max_rounds=r["max_rounds"], time_cap_s=r["time_cap_s"])


def _training(cfg, models):
    from .training import training_step_section

    return training_step_section(models["embedded"], **_train_kw(cfg), **_rounds(cfg, "train_rounds"),
                                 ops=cfg.get("op_profile", False), phase_steps=cfg.get("phase_steps", 8))


def _scaling(cfg, models):
    from .training import scaling_section

    return {"rows": scaling_section(models, base=_train_kw(cfg), grid=cfg["scale_grid"],
                                    **_rounds(cfg, "scale_rounds"))}


def _noise(cfg, models):
    from .noise_bench import gpu_adapter_parameters, noise_section

    return noise_section(models["embedded"], **_train_kw(cfg), **_rounds(cfg, "noise_rounds"),
                         large_n=cfg.get("noise_large_n", gpu_adapter_parameters()),
                         large_repeats=cfg.get("noise_large_repeats", 3))


def _accounting(cfg, models):
    from .accounting_bench import accounting_section

    return accounting_section(steps=cfg["acct_steps"], repeats=cfg["acct_repeats"])


def _checkpoints(cfg, models):
    from .security_bench import checkpoint_section

    return checkpoint_section(sizes_mb=cfg["ckpt_sizes_mb"], repeats=cfg["ckpt_repeats"])


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
    # the server serves models by reference (its allow list), not by the resolved folder
    return server_section("tinker-nb/tiny-llama", batch=t["batch"], seq=t["seq"], rank=t["rank"],
                          steps=2 if small else 16, latency_requests=30 if small else 300,
                          concurrency=(1, 2) if small else (1, 4, 8), concurrent_steps=1 if small else 4)


def _privacy_audit(cfg, models):
    from .privacy_audit_bench import privacy_audit_section

    return privacy_audit_section(full=bool(cfg.get("full")))


SECTIONS = {
    "training_step": _training,
    "scaling": _scaling,
    "noise": _noise,
    "accounting": _accounting,
    "checkpoints": _checkpoints,
    "ledger": _ledger,
    "signing": _signing,
    "dashboard": _dashboard,
    "end_to_end": _e2e,
    "server": _server,
    "privacy_audit": _privacy_audit,
}
# Sections that only `--full` (make bench-full) runs, unless named with --only.
FULL_ONLY = frozenset({"privacy_audit"})


# ------------------------------------------------------------------------------------------ headline
def headline(report: dict) -> list[tuple[str, dict, str | None]]:
    """(figure name, figure summary, target) rows for the table and the docs."""
    s = report["sections"]
    cuda = bool(report.get("machine", {}).get("cuda"))
    rows: list[tuple[str, dict, str | None]] = []
    if "training_step" in s:
        t = s["training_step"]
        r = t["ratios"]
        rows += [("DP / non-DP step time", r["dp_vs_nondp"], "<= 1.05" if cuda else "<= 1.10")]
        if not cuda and "cpu_time_ratios" in t:
            rows += [("DP / non-DP step CPU time", t["cpu_time_ratios"]["dp_vs_nondp"], None)]
        rows += [("DP / plain peft+torch step time", r["dp_vs_peft_torch"], None),
                 ("DP / opacus make_private step time", r["dp_vs_opacus_ref"], "<= 1.00"),
                 ("non-DP / plain peft+torch step time", r["nondp_vs_peft_torch"], None)]
        if "memory_dp_vs_nondp" in r:
            rows += [("DP / non-DP peak allocated memory", r["memory_dp_vs_nondp"], "<= 1.15" if cuda else "<= 1.25"),
                     ("DP / opacus make_private peak allocated memory", r["memory_dp_vs_opacus_ref"], None)]
        rows += [("DP step (ms)", t["step_ms"]["tinker_dp"], None),
                 ("non-DP step (ms)", t["step_ms"]["tinker_nondp"], None)]
    if "scaling" in s:
        for row in s["scaling"]["rows"]:
            where = "" if row["knob"] == "model" or row.get("model", "embedded") == "embedded" else f" ({row['model']})"
            target = "<= 1.03" if row["knob"] == "model" and row["value"] == "bigger" else None
            rows.append((f"scaling {row['knob']}={row['value']}{where}: DP / non-DP", row["ratio"], target))
            if target and not cuda and "cpu_time_ratio" in row:
                rows.append((f"scaling {row['knob']}={row['value']}{where}: DP / non-DP CPU time",
                             row["cpu_time_ratio"], None))
    if "noise" in s and "ratios" in s["noise"]:
        r = s["noise"]["ratios"]
        rows += [("secure noise / torch.normal, same size", r["secure_vs_torch_normal"], None),
                 ("secure noise draw / DP step", r["secure_fraction_of_dp_step"], "<= 0.02"),
                 ("torch.normal draw / DP step", r["torch_normal_fraction_of_dp_step"], None),
                 ("secure noise draw (ms)", s["noise"]["ms"]["secure_noise"], None)]
        big = s["noise"].get("large")
        if big:
            m = big["parameters"] / 1e6
            rows += [(f"secure noise draw, {m:.1f} M parameters (ms)", big["secure_ms"], None),
                     (f"torch.normal draw, {m:.1f} M parameters (ms)", big["torch_normal_ms"], None)]
    for name in ("accounting", "checkpoints", "ledger", "signing", "dashboard", "end_to_end", "server",
                 "privacy_audit"):
        if name in s:
            rows += [tuple(r) for r in s[name].get("headline", [])]
    return rows


def status(fig: dict, target: str | None) -> str:
    """'met' / 'missed' only when the whole 95% interval is on one side of the target; else 'unclear'."""
    if not target:
        return ""
    op, val = target.split()
    val = float(val)
    med = fig.get("median", float("nan"))
    lo, hi = fig["ci"] if fig.get("ci") else (med, med)
    if not all(math.isfinite(x) for x in (med, lo, hi)):
        return "n/a"
    if op == "<=":
        return "met" if hi <= val else "missed" if lo > val else "unclear"
    return "met" if lo >= val else "missed" if hi < val else "unclear"


def _status(report: dict, fig: dict, target: str | None) -> str:
    st = status(fig, target)
    # a report taken under load states what it saw but claims no target
    return f"{st} (under load)" if st and report.get("under_load") and not fig.get("exact") else st


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        if not math.isfinite(x):
            return str(x)
        return f"{x:.4g}" if abs(x) < 1e5 else f"{x:.3g}"
    return str(x)


def _ci(fig: dict) -> str:
    if fig.get("exact"):
        return "exact"
    if not fig.get("ci") or fig.get("n", 0) < 2:
        return "-"
    lo, hi = fig["ci"]
    return f"[{_fmt(lo)}, {_fmt(hi)}]"


def _kind(fig: dict) -> str:
    if fig.get("kind") == "ratio":
        return "ratio" if fig.get("paired", True) else "ratio (unpaired)"
    return f"abs ({fig.get('unit', '')})"


def context(report: dict) -> str:
    m = report.get("machine", {})
    ld = report.get("load", {})

    def la(snap):
        v = (snap or {}).get("loadavg")
        return "/".join(f"{x:.2f}" for x in v) if v else "n/a"

    def psi(snap):
        p = (snap or {}).get("cpu_pressure")
        return f"{p['avg60']:.1f}%" if p else "n/a"

    flag = "UNDER LOAD: " + "; ".join(report.get("under_load_reasons", [])) if report.get("under_load") else "quiet"
    return (f"mode `{report.get('mode')}`, {m.get('cpu_count')} CPU cores, {report.get('threads')} torch thread(s), "
            f"torch {m.get('torch')}, CUDA {m.get('cuda') or 'none'}; load average 1/5/15 min at start "
            f"{la(ld.get('start'))}, at end {la(ld.get('end'))}; CPU pressure (PSI avg60) {psi(ld.get('start'))} → "
            f"{psi(ld.get('end'))}; machine: {flag}")


def table(report: dict) -> str:
    rows = headline(report)
    w = max([len(r[0]) for r in rows] + [10])
    lines = [context(report), "",
             f"{'figure'.ljust(w)}  {'median':>10}  {'95% CI':>22}  {'n':>4}  {'kind':<16} target    status",
             "-" * (w + 80)]
    for name, fig, tgt in rows:
        lines.append(f"{name.ljust(w)}  {_fmt(fig['median']):>10}  {_ci(fig):>22}  {fig.get('n', ''):>4}  "
                     f"{_kind(fig):<16} {tgt or '-':<9} {_status(report, fig, tgt)}")
    lines += _convergence(report)
    if report.get("errors"):
        lines.append(f"FAILED sections: {', '.join(report['errors'])}")
    return "\n".join(lines)


def _convergence(report: dict) -> list[str]:
    out = []
    s = report["sections"]
    timings = []
    if "training_step" in s:
        timings.append(("training_step", s["training_step"]["timing"]))
    if "noise" in s and "timing" in s["noise"]:
        timings.append(("noise", s["noise"]["timing"]))
    for row in s.get("scaling", {}).get("rows", []):
        timings.append((f"scaling {row['knob']}={row['value']}", row["timing"]))
    for name, t in timings:
        if not t["converged"]:
            out.append(f"note: {name}: interval target ±{t['target_half_width']} not reached "
                       f"({t['rounds']} rounds, stopped by {t['stopped_by']}, {t['seconds']:.0f} s)")
    return out


def markdown(report: dict) -> str:
    """The headline rows as a Markdown table (docs/BENCHMARKS.md is pasted from this, never typed)."""
    lines = [context(report), "",
             "| figure | median | 95% CI | n | kind | target | status |", "|---|---:|---|---:|---|---|---|"]
    for name, fig, tgt in headline(report):
        lines.append(f"| {name} | {_fmt(fig['median'])} | {_ci(fig)} | {fig.get('n', '')} | {_kind(fig)} | "
                     f"{tgt or '-'} | {_status(report, fig, tgt)} |")
    conv = _convergence(report)
    if conv:
        lines += [""] + [f"- {c.removeprefix('note: ')}" for c in conv]
    lines += profile_markdown(report)
    if report.get("errors"):
        lines.append(f"\nFAILED sections: {', '.join(report['errors'])}")
    return "\n".join(lines)


def profile_markdown(report: dict) -> list[str]:
    """Per-phase medians of the DP and non-DP step, and (if profiled) the operators that differ most."""
    t = report["sections"].get("training_step")
    if not t or "phases_ms" not in t:
        return []
    ph = t["phases_ms"]
    lines = ["", "DP step by phase (ms, median with 95% CI; device synchronised between phases):", "",
             "| phase | DP | non-DP |", "|---|---:|---:|"]
    for k in ph["dp"]:
        a, b = ph["dp"][k], ph["nondp"][k]
        lines.append(f"| {k} | {_fmt(a['median'])} {_ci(a)} | {_fmt(b['median'])} {_ci(b)} |")
    ops = t.get("op_profile")
    if ops:
        lines += ["", f"Operators whose self CPU time differs most ({ops['unit']}; totals DP "
                      f"{_fmt(ops['total_dp'])}, non-DP {_fmt(ops['total_nondp'])}):", "",
                  "| operator | DP | non-DP | DP - non-DP |", "|---|---:|---:|---:|"]
        for r in ops["largest_differences"]:
            lines.append(f"| `{r['op']}` | {_fmt(r['dp'])} | {_fmt(r['nondp'])} | {_fmt(r['diff'])} |")
    return lines


def compare(a: dict, b: dict) -> str:
    """Two reports side by side: do their 95% intervals overlap, figure by figure? (ratios only)"""
    fa = {n: f for n, f, _ in headline(a)}
    lines = [f"A: {context(a)}", f"B: {context(b)}", "",
             "| figure | A median [CI] | B median [CI] | intervals overlap |", "|---|---|---|---|"]
    for name, fb, _ in headline(b):
        f = fa.get(name)
        if f is None or f.get("kind") != "ratio":
            continue
        ca = f["ci"] or [f["median"]] * 2
        cb = fb["ci"] or [fb["median"]] * 2
        overlap = ca[0] <= cb[1] and cb[0] <= ca[1]
        lines.append(f"| {name} | {_fmt(f['median'])} {_ci(f)} | {_fmt(fb['median'])} {_ci(fb)} | "
                     f"{'yes' if overlap else 'NO'} |")
    return "\n".join(lines)
