"""Text generation for ``sample()``: greedy or temperature/top-p/top-k sampling with stop strings."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..errors import ConfigError, DataError

__all__ = ["Sample", "SampleResult", "generate"]


@dataclass
class Sample:
    prompt: str
    completion: str
    tokens: list[int]
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (eos or a stop string) or "length"

    def __repr__(self) -> str:  # the text, not the token ids
        return (f"Sample(prompt={_short(self.prompt)}, completion={_short(self.completion)}, "
                f"finish_reason={self.finish_reason!r}, completion_tokens={self.completion_tokens})")


def _short(text: str, n: int = 300) -> str:
    return repr(text) if len(text) <= n else repr(text[:n]) + f"… ({len(text)} characters)"


@dataclass
class SampleResult:
    samples: list[Sample] = field(default_factory=list)

    def __repr__(self) -> str:
        lines = [f"  {_short(s.prompt, 60)} → {_short(s.completion)} ({s.finish_reason}, {s.completion_tokens} tokens)"
                 for s in self.samples]
        return f"SampleResult({len(self.samples)} samples" + ("".join(f"\n{x}" for x in lines)) + ")"

    def _repr_html_(self) -> str:
        import html

        rows = "".join(f"<tr><td>{html.escape(s.prompt)}</td><td style='text-align:left;white-space:pre-wrap'>"
                       f"{html.escape(s.completion)}</td><td>{html.escape(s.finish_reason)}</td>"
                       f"<td>{s.completion_tokens}</td></tr>" for s in self.samples)
        return (f"<table><caption>SampleResult ({len(self.samples)} samples)</caption><tr><th>prompt</th>"
                f"<th>completion</th><th>finish</th><th>tokens</th></tr>{rows}</table>")


def _check(max_tokens, temperature, top_p, top_k, stop, seed) -> list[str]:
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ConfigError(f"max_tokens must be a positive integer, got {max_tokens!r}.")
    if not isinstance(temperature, (int, float)) or temperature < 0:
        raise ConfigError(f"temperature must be >= 0 (0 = greedy), got {temperature!r}.")
    if not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
        raise ConfigError(f"top_p must be in (0, 1], got {top_p!r}.")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0):
        raise ConfigError(f"top_k must be a non-negative integer or None (0/None = off), got {top_k!r}.")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ConfigError(f"seed must be a non-negative integer or None, got {seed!r}.")
    stops = [stop] if isinstance(stop, str) else list(stop) if isinstance(stop, (list, tuple)) else stop
    if stops is None:
        stops = []
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise ConfigError("stop must be a non-empty string or a list of non-empty strings.")
    return stops


@torch.no_grad()
def generate(model, tokenizer, prompts: str | Sequence[str], *, max_tokens: int, temperature: float, top_p: float,
             top_k: int | None, stop, seed: int | None, num_samples: int, device: torch.device,
             max_positions: int, generator: torch.Generator | None = None, limit_name: str = "max_seq_len",
             encode=None) -> SampleResult:
    """Generate ``num_samples`` completions per prompt; temperature 0 is greedy and deterministic."""
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, (list, tuple)) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise DataError("prompts must be a non-empty list of strings.")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ConfigError(f"num_samples must be a positive integer, got {num_samples!r}.")
    stops = _check(max_tokens, temperature, top_p, top_k, stop, seed)
    eos = tokenizer.eos_token_id
    cache_kw = _cache_kwarg(model)
    out = SampleResult()
    if seed is not None:  # a caller seed gives a reproducible, private stream for this call
        gen = torch.Generator(device="cpu")
        gen.manual_seed(seed)
    elif generator is not None:  # the client's own generator: no global RNG is read or advanced
        gen = generator
    else:
        import secrets

        gen = torch.Generator(device="cpu")
        gen.manual_seed(secrets.randbits(63))
    encoded = []
    for prompt in prompts:
        if encode is not None:
            ids = list(encode(prompt))
        else:
            ids = tokenizer(prompt)["input_ids"]
            bos = getattr(tokenizer, "bos_token_id", None)
            if bos is not None and (not ids or ids[0] != bos):
                ids = [bos] + ids
        if len(ids) + max_tokens > max_positions:
            raise DataError(f"prompt ({len(ids)} tokens) + max_tokens ({max_tokens}) exceeds the limit of "
                            f"{max_positions} tokens ({limit_name}); shorten the prompt or lower max_tokens.")
        encoded.append(ids)
    for prompt, ids in zip(prompts, encoded):
        for _ in range(num_samples):
            out.samples.append(_one(model, tokenizer, prompt, ids, max_tokens, temperature, top_p, top_k,
                                    stops, eos, gen, device, cache_kw))
    return out


def _cache_kwarg(model) -> str:
    """The KV-cache argument name: ``cache`` (transformers >= 5.2x) or ``past_key_values`` (older)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = inspect.signature(type(base).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _one(model, tokenizer, prompt, ids, max_tokens, temperature, top_p, top_k, stops, eos, gen, device,
         cache_kw) -> Sample:
    input_ids = torch.tensor([ids], device=device)
    past = None
    new: list[int] = []
    finish = "length"
    text = ""
    cur = input_ids
    for _ in range(max_tokens):
        res = model(input_ids=cur, use_cache=True, **{cache_kw: past})
        past = res[cache_kw]
        logits = res.logits[0, -1].float().cpu()
        if temperature == 0:
            nxt = int(torch.argmax(logits))
        else:
            logits = logits / float(temperature)
            if top_k:
                kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            probs = torch.softmax(logits, dim=-1)
            if top_p < 1.0:
                sp, si = torch.sort(probs, descending=True)
                keep = torch.cumsum(sp, 0) - sp < top_p
                keep[0] = True
                mask = torch.zeros_like(probs, dtype=torch.bool)
                mask[si[keep]] = True
                probs = probs.masked_fill(~mask, 0.0)
                probs = probs / probs.sum()
            nxt = int(torch.multinomial(probs, 1, generator=gen))
        if nxt == eos:
            finish = "stop"
            break
        new.append(nxt)
        text = tokenizer.decode(new, skip_special_tokens=True)
        hit = [text.index(s) for s in stops if s in text]
        if hit:
            text = text[: min(hit)]
            finish = "stop"
            break
        cur = torch.tensor([[nxt]], device=device)
    else:
        text = tokenizer.decode(new, skip_special_tokens=True)
    return Sample(prompt=prompt, completion=text, tokens=new, prompt_tokens=len(ids),
                  completion_tokens=len(new), finish_reason=finish)
