"""Shared helpers: interleaved A/B timing with per-pair ratios, bootstrap intervals, machine load, memory.

Every figure in a report is a :func:`summary` dict: ``kind`` ("ratio": dimensionless, comparable across
machines; "absolute": seconds, bytes or rates, comparable only on the same machine), ``median``,
``ci`` (95% bootstrap interval of the median), ``n`` and the raw ``samples``. A ratio comes from
interleaved pairs (A B, B A, ... in one process) and is the median of the per-pair ratios, never a
ratio of two separately taken medians unless the figure says so (``paired: false``).
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

TARGET_HALF_WIDTH = 0.03
N_BOOT = 2000


# ----------------------------------------------------------------------------------------- statistics
def _median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def bootstrap_ci(xs: Sequence[float], *, level: float = 0.95, n_boot: int = N_BOOT, seed: int = 0
                 ) -> tuple[float, float]:
    """Percentile bootstrap interval of the median. Deterministic (fixed seed)."""
    import numpy as np

    x = np.asarray(list(xs), dtype=np.float64)
    n = len(x)
    if n < 2:
        v = float(x[0]) if n else float("nan")
        return (v, v)
    rng = np.random.default_rng(seed)
    meds = np.sort(np.median(x[rng.integers(0, n, size=(n_boot, n))], axis=1))
    return (float(meds[int((1 - level) / 2 * (n_boot - 1))]), float(meds[int((1 + level) / 2 * (n_boot - 1))]))


def summary(xs: Sequence[float], *, kind: str, unit: str = "", paired: bool = True) -> dict[str, Any]:
    """Median, 95% bootstrap interval and raw samples of one figure."""
    xs = [float(x) for x in xs]
    if not xs:
        return {"kind": kind, "unit": unit, "n": 0, "median": float("nan"), "ci": [float("nan")] * 2,
                "half_width": float("nan"), "samples": []}
    lo, hi = bootstrap_ci(xs)
    med = _median(xs)
    out = {"kind": kind, "unit": unit, "n": len(xs), "median": med, "ci": [lo, hi], "half_width": (hi - lo) / 2,
           "min": min(xs), "max": max(xs), "samples": xs}
    if kind == "ratio":
        out["paired"] = paired
    return out


def scaled(s: dict[str, Any], factor: float, unit: str) -> dict[str, Any]:
    """The same figure in another unit (e.g. seconds -> milliseconds)."""
    out = dict(s)
    out.update(unit=unit, median=s["median"] * factor, ci=[c * factor for c in s["ci"]],
               half_width=s["half_width"] * factor, samples=[x * factor for x in s["samples"]])
    for k in ("min", "max"):
        if k in s:
            out[k] = s[k] * factor
    return out


def inverse(s: dict[str, Any], numerator: float, unit: str) -> dict[str, Any]:
    """A rate from a time figure (numerator / t); the interval flips."""
    xs = [numerator / x for x in s["samples"] if x > 0]
    return summary(xs, kind="absolute", unit=unit)


def ratio_of_medians(a: Sequence[float], b: Sequence[float], *, seed: int = 1) -> dict[str, Any]:
    """median(a) / median(b) with a bootstrap interval resampling a and b independently (unpaired figures)."""
    import numpy as np

    a, b = np.asarray(list(a), dtype=np.float64), np.asarray(list(b), dtype=np.float64)
    rng = np.random.default_rng(seed)
    ra = np.median(a[rng.integers(0, len(a), size=(N_BOOT, len(a)))], axis=1)
    rb = np.median(b[rng.integers(0, len(b), size=(N_BOOT, len(b)))], axis=1)
    boots = np.sort(ra / rb)
    med = float(np.median(a) / np.median(b))
    lo, hi = float(boots[int(0.025 * (N_BOOT - 1))]), float(boots[int(0.975 * (N_BOOT - 1))])
    return {"kind": "ratio", "unit": "", "paired": False, "n": int(min(len(a), len(b))), "median": med,
            "ci": [lo, hi], "half_width": (hi - lo) / 2, "samples": []}


# ----------------------------------------------------------------------------------------- timing
def _sync() -> None:
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
    except ImportError:
        pass


def timed(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call, with the device synchronised at both ends."""
    _sync()
    c, t = time.process_time(), time.perf_counter()
    fn()
    _sync()
    return time.perf_counter() - t, time.process_time() - c


def interleaved(fns: dict[str, Callable[[], Any]], pairs: Sequence[tuple[str, str]], *, min_rounds: int,
                max_rounds: int, time_cap_s: float, warmup: int = 2,
                target_half_width: float = TARGET_HALF_WIDTH, check_every: int = 4) -> dict[str, Any]:
    """Run every variant once per round, in rotating order, until every pair's ratio interval is narrow enough.

    Per round and pair (a, b) the ratio t_a / t_b of that round is kept. Stops at the first check where
    every pair's 95% bootstrap half-width is below ``target_half_width`` (after ``min_rounds``), or at
    ``max_rounds``, or when ``time_cap_s`` has passed — the report says which (``stopped_by``) and whether
    the interval target was reached (``converged``).
    """
    names = list(fns)
    for _ in range(warmup):
        for v in names:
            timed(fns[v])
    wall: dict[str, list[float]] = {v: [] for v in names}
    cpu: dict[str, list[float]] = {v: [] for v in names}
    ratios: dict[str, list[float]] = {f"{a}/{b}": [] for a, b in pairs}
    cpu_ratios: dict[str, list[float]] = {f"{a}/{b}": [] for a, b in pairs}
    t0 = time.perf_counter()
    stopped_by = "max_rounds"
    rounds = 0
    while rounds < max_rounds:
        k = rounds % len(names)
        this: dict[str, tuple[float, float]] = {}
        for v in names[k:] + names[:k]:
            w, c = timed(fns[v])
            this[v] = (w, c)
            wall[v].append(w)
            cpu[v].append(c)
        for a, b in pairs:
            ratios[f"{a}/{b}"].append(this[a][0] / this[b][0])
            if this[b][1] > 0:
                cpu_ratios[f"{a}/{b}"].append(this[a][1] / this[b][1])
        rounds += 1
        if rounds >= min_rounds and rounds % check_every == 0:
            widths = [summary(r, kind="ratio")["half_width"] for r in ratios.values()]
            if all(w < target_half_width for w in widths):
                stopped_by = "interval"
                break
        if time.perf_counter() - t0 > time_cap_s:
            stopped_by = "time_cap"
            break
    elapsed = time.perf_counter() - t0
    pair_stats = {k: summary(r, kind="ratio") for k, r in ratios.items()}
    converged = all(s["half_width"] < target_half_width for s in pair_stats.values())
    total_wall = sum(sum(x) for x in wall.values())
    total_cpu = sum(sum(x) for x in cpu.values())
    return {"rounds": rounds, "seconds": elapsed, "stopped_by": stopped_by, "converged": converged,
            "target_half_width": target_half_width, "time_cap_s": time_cap_s,
            "step_seconds": {v: summary(wall[v], kind="absolute", unit="s") for v in names},
            "ratios": pair_stats,
            # The same pairs in process CPU time: with one thread and no GPU this is the work done, which
            # another process on the machine disturbs far less than the wall clock (not a stopping rule).
            "cpu_ratios": {k: summary(r, kind="ratio") for k, r in cpu_ratios.items()},
            # CPU seconds the process got per wall second while timing; with T threads, < 0.9·T means
            # another process took the cores from us (the figure was measured under load).
            "cpu_per_wall": total_cpu / total_wall if total_wall else float("nan")}


# ----------------------------------------------------------------------------------------- machine
def _psi_cpu() -> dict[str, float] | None:
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    return {k: float(v) for k, v in (f.split("=") for f in line.split()[1:]) if k.startswith("avg")}


def load_snapshot() -> dict[str, Any]:
    """1/5/15-min load averages and Linux CPU pressure (PSI 'some': % of time a task waited for a CPU)."""
    try:
        la = list(os.getloadavg())
    except OSError:
        la = None
    return {"time": time.time(), "loadavg": la, "cpu_pressure": _psi_cpu()}


def under_load(start: dict, end: dict, *, cpu_count: int, threads: int, cpu_per_wall: float | None = None
               ) -> tuple[bool, list[str]]:
    """Whether the report was taken on a busy machine, with the reasons.

    Busy if: the 1-min load average at the start was >= 0.5 (something else was running before we
    started); at the end it exceeded our own thread count by >= 0.5; CPU pressure (PSI some avg60)
    was >= 5% at either end; or, while timing, the process got < 90% of its threads' CPU time.
    """
    why = []
    if start.get("loadavg") and start["loadavg"][0] >= 0.5:
        why.append(f"1-min load {start['loadavg'][0]:.2f} at start")
    if end.get("loadavg") and end["loadavg"][0] - threads >= 0.5:
        why.append(f"1-min load {end['loadavg'][0]:.2f} at end (we run {threads} thread(s))")
    for tag, snap in (("start", start), ("end", end)):
        psi = snap.get("cpu_pressure")
        if psi and psi.get("avg60", 0) >= 5:
            why.append(f"CPU pressure {psi['avg60']:.1f}% (avg60) at {tag}")
    if cpu_per_wall is not None and cpu_per_wall == cpu_per_wall and cpu_per_wall < 0.9 * threads:
        why.append(f"timed steps got {cpu_per_wall:.2f} CPU-s per wall-s with {threads} thread(s)")
    return bool(why), why


def machine() -> dict[str, Any]:
    import importlib.metadata as md

    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    for pkg in ("transformers", "peft", "opacus", "cryptography", "dp-accounting", "tinker-nb"):
        try:
            info[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            info[pkg] = None
    return info


def set_threads(n: int) -> int:
    """Fix torch's intra-op threads for every variant (and child processes through the environment)."""
    import torch

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    os.environ["TINKER_NB_BENCH_THREADS"] = str(n)
    torch.set_num_threads(n)
    return torch.get_num_threads()


# ----------------------------------------------------------------------------------------- memory
def peak_allocated_bytes(run: Callable[[], Any]) -> dict[str, Any]:
    """Peak bytes held by tensors allocated while ``run()`` executes, from the allocator's own counters.

    CUDA: ``torch.cuda.max_memory_allocated`` minus the allocation at the start (and the absolute
    peak). CPU: torch's CPU allocator reports every allocation and free to the profiler
    (``profile_memory=True``); the peak of the running total of tensors allocated during ``run()``.
    Tensors that existed before (the loaded model) are not counted on CPU.
    """
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run()
        torch.cuda.synchronize()
        top = torch.cuda.max_memory_allocated()
        return {"peak_bytes": top - base, "absolute_peak_bytes": top, "baseline_bytes": base,
                "source": "torch.cuda.max_memory_allocated"}
    import json
    import tempfile

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=False) as prof:
        run()
    with tempfile.TemporaryDirectory() as d:
        trace = Path(d) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = [e["args"] for e in json.loads(trace.read_text()).get("traceEvents", [])
                  if e.get("name") == "[memory]" and "args" in e]
    # "Total Allocated" is the allocator's running total of the bytes it handed out during the window
    peak = max((int(a.get("Total Allocated", 0)) for a in events), default=0)
    return {"peak_bytes": peak, "source": "torch CPU allocator (profiler memory events, 'Total Allocated')",
            "events": len(events)}


# ----------------------------------------------------------------------------------------- models and data
def build_llama(path: Path, *, hidden: int, layers: int, heads: int, vocab: int, max_pos: int,
                tokenizer_from: str, kv_heads: int | None = None, intermediate: int | None = None,
                dtype: str = "float32") -> str:
    """A randomly initialised Llama of the given size, with the embedded model's tokenizer (no downloads)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if (path / "config.json").exists():
        return str(path)
    tok = AutoTokenizer.from_pretrained(tokenizer_from)
    tok.save_pretrained(path)
    inter = intermediate or (int(hidden * 8 / 3) // 64 * 64 or hidden * 2)
    cfg = LlamaConfig(vocab_size=max(vocab, len(tok)), hidden_size=hidden, intermediate_size=inter,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads or heads,
                      max_position_embeddings=max_pos, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    model.to(getattr(torch, dtype)).save_pretrained(path)
    return str(path)


def synthetic_batch(*, batch: int, seq: int, vocab: int, seed: int = 0) -> dict:
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (batch, seq), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
