"""The Training API server over loopback: remote step / in-kernel step, control-plane latency, concurrency.

* ``remote / in-kernel step``: one DP step (draw + forward_backward + optim_step, waited for) through
  `tinker-nb serve` on 127.0.0.1 against the same step on a client in this process, steps alternating
  (local, remote, remote, local, ...) so machine noise hits both. The two clients' Poisson draws differ
  in size, so the figure is a ratio of medians with an interval from resampling each side (unpaired).
* ``GET /api/v1/training_clients/{id}`` latency (p50, p95) over one keep-alive connection, with the
  server idle and while another client trains.
* steps per second with 1, 4 and 8 clients training at once (model loading excluded).

Standalone: ``python -m benchmarks.server_bench [--steps N] [--json]``. Figures are dicts shaped like the
other sections' (``kind``, ``unit``, ``median``, ``ci``, ``n``, ``samples``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

N_BOOT = 2000


# ----------------------------------------------------------------------------------------- figures
def _median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def _quantile(xs, q: float) -> float:
    import numpy as np

    return float(np.quantile(np.asarray(xs, dtype=np.float64), q))


def _boot(xs: list[float], stat, seed: int = 0) -> list[float]:
    import numpy as np

    x = np.asarray(xs, dtype=np.float64)
    if len(x) < 2:
        return [float(stat(x))] * 2
    rng = np.random.default_rng(seed)
    b = np.sort([stat(x[rng.integers(0, len(x), len(x))]) for _ in range(N_BOOT)])
    return [float(b[int(0.025 * (N_BOOT - 1))]), float(b[int(0.975 * (N_BOOT - 1))])]


def figure(xs: list[float], *, kind: str, unit: str, q: float | None = None) -> dict[str, Any]:
    """Median (or quantile ``q``) of ``xs`` with a 95% bootstrap interval."""
    import numpy as np

    stat = (lambda a: float(np.median(a))) if q is None else (lambda a: float(np.quantile(a, q)))
    val = stat(np.asarray(xs, dtype=np.float64))
    lo, hi = _boot(xs, stat)
    return {"kind": kind, "unit": unit, "n": len(xs), "median": val, "ci": [lo, hi], "half_width": (hi - lo) / 2,
            "statistic": "median" if q is None else f"p{round(q * 100)}", "samples": [float(x) for x in xs]}


def ratio_figure(a: list[float], b: list[float]) -> dict[str, Any]:
    import numpy as np

    aa, bb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    rng = np.random.default_rng(1)
    boots = np.sort(np.median(aa[rng.integers(0, len(aa), (N_BOOT, len(aa)))], axis=1) /
                    np.median(bb[rng.integers(0, len(bb), (N_BOOT, len(bb)))], axis=1))
    lo, hi = float(boots[int(0.025 * (N_BOOT - 1))]), float(boots[int(0.975 * (N_BOOT - 1))])
    return {"kind": "ratio", "unit": "", "paired": False, "n": int(min(len(a), len(b))),
            "median": float(np.median(aa) / np.median(bb)), "ci": [lo, hi], "half_width": (hi - lo) / 2,
            "samples": []}


# ----------------------------------------------------------------------------------------- server
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(workspace: Path, *, max_clients: int = 16, threads: int | None = None):
    """A `tinker-nb serve` subprocess on 127.0.0.1; yields (base_url, api_key). Always stopped."""
    root = secrets.token_hex(32)
    env = dict(os.environ, TINKER_NB_ROOT_KEY=root, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, "-m", "tinker_nb.cli", "apikey", "create", "--workspace", str(workspace),
                          "--tenant", "bench", "--json"], env=env, capture_output=True, text=True, check=True)
    key = json.loads(out.stdout)["api_key"]
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tinker_nb.cli", "serve", "--workspace", str(workspace), "--host",
                             "127.0.0.1", "--port", str(port), "--max-clients", str(max_clients)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError("tinker-nb serve exited during startup")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("tinker-nb serve did not start within 120 s")
            time.sleep(0.1)
        yield url, key
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)


def _config(model_ref: str, *, batch: int, seq: int, rank: int):
    from tinker_nb import DPConfig, LoRAConfig, TrainingConfig

    return TrainingConfig(model_ref=model_ref, lora_config=LoRAConfig(rank=rank, alpha=2 * rank),
                          dp_config=DPConfig(noise_multiplier=1.0, max_grad_norm=1.0, target_delta=1e-5,
                                             accountant="rdp"),
                          batch_size=batch, max_seq_len=seq)


def _records(n: int, seed: int) -> list[str]:
    try:
        from tinker_nb.engine.demo_data import demo_records

        return list(demo_records(n, seed=seed))
    except Exception:  # noqa: BLE001 - any text will do
        return [f"record {seed}-{i}: the patient reports a mild headache and a fever since monday" for i in range(n)]


def _step(tc, draws) -> tuple[float, float]:
    """(wall seconds of one waited-for step, seconds the engine itself reports for it)."""
    t = time.perf_counter()
    b = next(draws)
    fb = tc.forward_backward(b).result()
    opt = tc.optim_step().result()
    wall = time.perf_counter() - t
    engine = sum(float(getattr(r, "seconds", 0.0) or 0.0) for r in (fb, opt))
    return wall, engine


# ----------------------------------------------------------------------------------------- section
def server_section(model_ref: str = "tinker-nb/tiny-llama", *, steps: int = 16, batch: int = 8, seq: int = 64,
                   rank: int = 8, latency_requests: int = 300, concurrency: tuple[int, ...] = (1, 4, 8),
                   concurrent_steps: int = 4, warmup: int = 2) -> dict[str, Any]:
    import httpx
    import torch

    from tinker_nb import ServiceClient
    from tinker_nb.remote import RemoteServiceClient

    cfg = _config(model_ref, batch=batch, seq=seq, rank=rank)
    n_records = max(8 * batch, 200)
    out: dict[str, Any] = {"settings": dict(steps=steps, batch=batch, seq=seq, rank=rank, model=model_ref,
                                            latency_requests=latency_requests, concurrency=list(concurrency),
                                            concurrent_steps=concurrent_steps, torch_threads=torch.get_num_threads())}
    with tempfile.TemporaryDirectory() as tmp, serve(Path(tmp) / "served", max_clients=max(concurrency) + 2,
                                                     threads=torch.get_num_threads()) as (url, key):
        # --- remote step / in-kernel step
        local = ServiceClient(Path(tmp) / "local").create_training_client(cfg)  # TrainingConfig.tenant is "default"
        local.attach_dataset(_records(n_records, 1))
        svc = RemoteServiceClient(base_url=url, api_key=key)
        remote = svc.create_training_client(cfg)
        remote.attach_dataset(_records(n_records, 1))
        total = steps + warmup
        ld, rd = iter(local.poisson_batches(steps=total)), iter(remote.poisson_batches(steps=total))
        times: dict[str, list[float]] = {"local": [], "remote": []}
        over: dict[str, list[float]] = {"local": [], "remote": []}
        for k in range(total):
            order = ("local", "remote") if k % 2 == 0 else ("remote", "local")
            for tag in order:
                wall, engine = _step(local, ld) if tag == "local" else _step(remote, rd)
                if k >= warmup:
                    times[tag].append(wall)
                    over[tag].append(wall - engine)
        local.close()
        out["step_ms"] = {t: figure([x * 1e3 for x in v], kind="absolute", unit="ms") for t, v in times.items()}
        out["overhead_ms"] = {t: figure([x * 1e3 for x in v], kind="absolute", unit="ms") for t, v in over.items()}
        out["remote_vs_local"] = ratio_figure(times["remote"], times["local"])
        # The same ratio from the per-step overheads (wall time minus the engine's own time, measured within
        # each step, so the size of each Poisson draw and the machine's load cancel out): far tighter.
        loc = _median(times["local"])
        local_over = _median(over["local"])
        extra = [r - local_over for r in over["remote"]]
        out["remote_vs_local_from_overhead"] = {
            **figure([(loc + x) / loc for x in extra], kind="ratio", unit=""), "paired": False,
            "note": "1 + (remote overhead - in-kernel overhead) / median in-kernel step"}

        # --- control plane: GET /training_clients/{id}, idle and while another client trains
        lat: dict[str, list[float]] = {"idle": [], "training": []}
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as c:
            path = f"/api/v1/training_clients/{remote.id}"
            for _ in range(20):
                c.get(path)
            for _ in range(latency_requests):
                t = time.perf_counter()
                r = c.get(path)
                lat["idle"].append((time.perf_counter() - t) * 1e3)
                assert r.status_code == 200
            stop = threading.Event()

            def train() -> None:
                for b in remote.poisson_batches(steps=10_000):
                    if stop.is_set():
                        break
                    remote.forward_backward(b)
                    remote.optim_step().result()

            th = threading.Thread(target=train, daemon=True)
            th.start()
            time.sleep(0.5)
            for _ in range(latency_requests):
                t = time.perf_counter()
                c.get(path)
                lat["training"].append((time.perf_counter() - t) * 1e3)
            stop.set()
            th.join(120)
        remote.close()
        out["control_plane_ms"] = {
            state: {"p50": figure(v, kind="absolute", unit="ms", q=0.5),
                    "p95": figure(v, kind="absolute", unit="ms", q=0.95)}
            for state, v in lat.items()}

        # --- throughput with n concurrent clients (each its own data set)
        rates: dict[str, Any] = {}
        for n in concurrency:
            clients = []
            for i in range(n):
                tc = RemoteServiceClient(base_url=url, api_key=key).create_training_client(cfg)
                tc.attach_dataset(_records(n_records, 100 + i))
                clients.append(tc)
            barrier = threading.Barrier(n + 1)
            done: list[int] = []

            def run(tc, barrier=barrier, done=done) -> None:
                warm = iter(tc.poisson_batches(steps=1))  # the first step of a client is slower: not timed
                tc.forward_backward(next(warm)).result()
                tc.optim_step().result()
                draws = list(tc.poisson_batches(steps=concurrent_steps))  # drawn before the clock starts
                barrier.wait()
                futs = []
                for b in draws:
                    tc.forward_backward(b)
                    futs.append(tc.optim_step())
                done.append(sum(1 for f in futs if f.result().step))

            ths = [threading.Thread(target=run, args=(tc,)) for tc in clients]
            for th in ths:
                th.start()
            barrier.wait()
            t0 = time.perf_counter()
            for th in ths:
                th.join(600)
            wall = time.perf_counter() - t0
            for tc in clients:
                assert tc.get_dp_metrics().steps == concurrent_steps + 1, "a step was lost or doubled"
                tc.close()
            steps_done = sum(done)
            rates[str(n)] = {"kind": "absolute", "unit": "steps/s", "n": 1, "median": steps_done / wall,
                             "ci": [steps_done / wall] * 2, "half_width": 0.0, "samples": [steps_done / wall],
                             "steps": steps_done, "expected_steps": n * concurrent_steps, "wall_s": wall}
        out["throughput"] = rates
    out["headline"] = [
        ("remote (loopback) / in-kernel DP step", out["remote_vs_local"], "<= 1.10"),
        ("remote / in-kernel DP step, from per-step overheads", out["remote_vs_local_from_overhead"], "<= 1.10"),
        ("remote overhead per step (ms)", out["overhead_ms"]["remote"], None),
        ("GET /training_clients/{id} p50 (ms, idle)", out["control_plane_ms"]["idle"]["p50"], None),
        ("GET /training_clients/{id} p95 (ms, idle)", out["control_plane_ms"]["idle"]["p95"], "<= 10"),
        ("GET /training_clients/{id} p95 (ms, while training)", out["control_plane_ms"]["training"]["p95"], None),
    ] + [(f"server steps/s, {n} concurrent client{'s' if n != '1' else ''}", fig, None) for n, fig in rates.items()]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.server_bench")
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--concurrent-steps", type=int, default=4)
    ap.add_argument("--json", metavar="FILE", help="also write the full result here")
    args = ap.parse_args(argv)
    res = server_section(steps=args.steps, batch=args.batch, seq=args.seq, rank=args.rank,
                         latency_requests=args.requests, concurrent_steps=args.concurrent_steps)
    for name, fig, target in res["headline"]:
        ci = fig.get("ci") or [fig["median"]] * 2
        print(f"{name:<55} {fig['median']:9.3f}  [{ci[0]:.3f}, {ci[1]:.3f}]  {target or ''}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
