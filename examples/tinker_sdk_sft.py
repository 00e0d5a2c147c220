"""Supervised fine-tuning with the official Tinker SDK against a local `tinker-nb serve`, DP on the server.

    pip install 'tinker-nb[tinker]'

    # against a server you run yourself:
    tinker-nb apikey create --workspace ./ws --tenant me          # prints a tml- key
    tinker-nb serve --workspace ./ws --port 8000 &
    TINKER_API_KEY=tml-... python examples/tinker_sdk_sft.py --base-url http://127.0.0.1:8000/tinker

    # or let the script start (and stop) a throwaway server on a temporary workspace:
    python examples/tinker_sdk_sft.py

The training code below is plain Tinker SDK code (the cookbook's minimal supervised loop): nothing in it
knows about differential privacy. The server applies the tenant's DP policy (docs/TINKER_COMPAT.md) and
reports ε in every optim_step's metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("TINKER_TELEMETRY", "0")  # the SDK would send telemetry to base_url; keep it all local

# 16 distinct records: each is one privacy unit (a record repeated inside one batch would count m² times)
RECORDS = [(f"Summarise ticket {i}: {text}", summary) for i in range(4) for text, summary in [
    ("patient reports mild headache since monday.", " Headache, mild, since Monday."),
    ("the printer on floor two is broken again.", " Printer, floor 2, broken."),
    ("customer asks for a refund of the march invoice.", " Refund request, March invoice."),
    ("the delivery arrived two days late and damaged.", " Late and damaged delivery."),
]]


@contextmanager
def local_server():
    """A throwaway `tinker-nb serve` on 127.0.0.1 with one tenant; yields (base_url, api_key, workspace)."""
    import httpx

    tmp = Path(tempfile.mkdtemp(prefix="tinker-nb-example-"))
    ws = tmp / "ws"
    env = dict(os.environ, TINKER_NB_ROOT_KEY=secrets.token_hex(32), HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-m", "tinker_nb.cli", "apikey", "create", "--workspace", str(ws),
                          "--tenant", "example", "--json"], env=env, capture_output=True, text=True, check=True)
    key = json.loads(out.stdout)["api_key"]
    # the tenant's DP policy (the default without this file is the same: DP on, σ=1, C=1, δ=1e-5, ε≤8)
    (ws / "tinker_policy.json").write_text(json.dumps({"default": {
        "dp": True, "noise_multiplier": 1.0, "max_grad_norm": 1.0, "target_delta": 1e-5, "target_epsilon": 8.0,
        "batch_size": 8}}))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "tinker_nb.cli", "serve", "--workspace", str(ws), "--host",
                             "127.0.0.1", "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        for _ in range(600):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/tinker", key, ws
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def train(base_url: str, api_key: str, *, steps: int, batch: int) -> None:
    import tinker
    from tinker import types

    service = tinker.ServiceClient(base_url=base_url, api_key=api_key)
    training = service.create_lora_training_client(base_model="tinker-nb/tiny-llama", rank=8).result()
    tok = training.get_tokenizer()  # the server answers its local tokenizer folder: no download

    def to_datum(prompt: str, completion: str) -> types.Datum:
        p, c = tok.encode(prompt), tok.encode(completion, add_special_tokens=False) + [tok.eos_token_id]
        ids = p + c
        weights = [0.0] * (len(p) - 1) + [1.0] * len(c)  # train on the completion only
        return types.Datum(model_input=types.ModelInput.from_ints(ids[:-1]),
                           loss_fn_inputs={"target_tokens": ids[1:], "weights": weights})

    data = [to_datum(p, c) for p, c in RECORDS]
    t0 = time.perf_counter()
    for step in range(steps):
        batch_data = data[(step * batch) % len(data):][:batch]
        fb = training.forward_backward(batch_data, "cross_entropy")
        opt = training.optim_step(types.AdamParams(learning_rate=5e-3))
        out, m = fb.result(), opt.result().metrics
        tokens = sum(sum(d.loss_fn_inputs["weights"].tolist()) for d in batch_data)
        print(f"step {step + 1}: loss/token {out.metrics['loss:sum'] / tokens:.3f}  "
              f"ε={m.get('dp_epsilon', float('inf')):.2f} (δ={m.get('dp_delta')}, σ={m.get('dp_noise_multiplier')}, "
              f"caller-supplied accounting={bool(m.get('dp_accounting_caller_supplied'))})")
    dt = time.perf_counter() - t0
    print("(ε grows when a record takes part again: steps 3-4 reuse the records of steps 1-2)")
    print(f"{steps} steps of {batch} datums in {dt:.2f} s ({dt / steps * 1000:.0f} ms per step over HTTP)")

    state = training.save_state("final").result()
    print("checkpoint (encrypted at rest):", state.path)
    sampler = training.save_weights_and_get_sampling_client().result()
    prompt = types.ModelInput.from_ints(tok.encode("Summarise ticket 1: the printer on floor two is broken again."))
    res = sampler.sample(prompt=prompt, num_samples=1,
                         sampling_params=types.SamplingParams(max_tokens=12, temperature=0.0)).result()
    seq = res.sequences[0]
    text = tok.decode(seq.tokens, skip_special_tokens=True)
    print(f"sample ({len(seq.tokens)} tokens, {seq.stop_reason}): {text!r}")
    service.close("success").result()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base-url", default=os.environ.get("TINKER_BASE_URL"),
                    help="http://host:port/tinker of a running server (default: start a throwaway one)")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    if args.base_url:
        key = os.environ.get("TINKER_API_KEY")
        if not key:
            sys.exit("set TINKER_API_KEY to a key from `tinker-nb apikey create`.")
        train(args.base_url, key, steps=args.steps, batch=args.batch)
        return
    with local_server() as (url, key, _ws):
        train(url, key, steps=args.steps, batch=args.batch)


if __name__ == "__main__":
    main()
