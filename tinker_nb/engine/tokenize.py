"""The one tokenisation rule for training records and generation prompts.

Every path that turns text into token ids for this library goes through here: the data source
(``attach_dataset``), caller-supplied string batches and ``sample()`` prompts. The rule:

* **text** ``"..."``: ``[BOS] + tokens + [EOS]``, loss on every token.
* **prompt / completion** ``{"prompt": p, "completion": c}``: ``[BOS] + tokens(p) + tokens(c) + [EOS]``;
  labels are ``-100`` on BOS and the prompt tokens, so the loss is on the completion (and its EOS) only.
  ``p`` and ``c`` are tokenised separately, so the prompt's tokens are exactly what
  :func:`encode_prompt` gives for ``p`` at generation time. Put the separator you want (a space, a
  newline) at the end of the prompt or the start of the completion yourself.
* **chat** ``{"messages": [{"role", "content"}, ...]}``: rendered with
  ``tokenizer.apply_chat_template`` when the tokenizer has a chat template; otherwise with the fallback
  format below. The loss is on the assistant turns only (their content and end-of-turn marker).
* **tokenised** ``{"input_ids", "labels"?, "attention_mask"?}``: passed through (labels default to
  the inputs), truncated like the rest.

BOS is added only if the tokenizer has one and the ids do not already start with it; EOS is appended
when the tokenizer has one and the ids do not already end with it. Everything is truncated to
``max_len`` tokens (the tail is cut, so a long record may lose its EOS). A record whose trainable
tokens are all cut away raises :class:`~tinker_nb.errors.DataError`.

Fallback chat format (no chat template): one line per message, ``"{role}: {content}\\n"``, then EOS.
The ``"{role}:"`` header is context; for assistant messages the ``" {content}\\n"`` after it is trained.
At generation :func:`encode_prompt` renders the conversation the same way and ends with ``"assistant:"``.

Torch-free: only the tokenizer is needed.
"""

from __future__ import annotations

from typing import Any

from ..errors import DataError
from ..records import normalize_record, record_kind

__all__ = ["FALLBACK_CHAT_FORMAT", "IGNORE_INDEX", "encode_prompt", "encode_record"]

IGNORE_INDEX = -100
FALLBACK_CHAT_FORMAT = "{role}: {content}\n"


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def _bos(tokenizer: Any) -> int | None:
    return getattr(tokenizer, "bos_token_id", None)


def _eos(tokenizer: Any) -> int | None:
    return getattr(tokenizer, "eos_token_id", None)


def _has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None)) and hasattr(tokenizer, "apply_chat_template")


def _check_max_len(max_len: Any) -> int:
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 2:
        raise DataError(f"max_len must be an integer >= 2, got {max_len!r}.")
    return max_len


def _finish(ids: list[int], labels: list[int], tokenizer: Any, *, max_len: int, eos_trained: bool,
            index: int | None) -> dict[str, list[int]]:
    bos, eos = _bos(tokenizer), _eos(tokenizer)
    if bos is not None and (not ids or ids[0] != bos):
        ids, labels = [bos] + ids, [IGNORE_INDEX] + labels
    if eos is not None and (not ids or ids[-1] != eos):
        ids, labels = ids + [eos], labels + ([eos] if eos_trained else [IGNORE_INDEX])
    ids, labels = ids[:max_len], labels[:max_len]
    if not any(x != IGNORE_INDEX for x in labels[1:]):
        where = "a record" if index is None else f"record {index}"
        raise DataError(f"{where} has no trainable tokens within max_len={max_len} (the prompt or the "
                        "non-assistant turns fill it); shorten the prompt or raise TrainingConfig.max_seq_len.")
    return {"input_ids": ids, "labels": labels}


def encode_record(tokenizer: Any, record: Any, *, max_len: int, index: int | None = None) -> dict[str, list[int]]:
    """Token ids and labels (``-100`` = no loss) for one record, by the rule in the module docstring.

    ``record`` is a string, a prompt/completion dict, a chat dict or a tokenised dict (anything
    :func:`tinker_nb.records.normalize_records` accepts as one record). ``index`` only names the
    record in error messages.
    """
    max_len = _check_max_len(max_len)
    record = normalize_record(record, 0 if index is None else index)
    kind = record_kind(record)
    if kind == "text":
        ids = _ids(tokenizer, record)
        return _finish(ids, list(ids), tokenizer, max_len=max_len, eos_trained=True, index=index)
    if kind == "prompt_completion":
        p, c = _ids(tokenizer, record["prompt"]), _ids(tokenizer, record["completion"])
        return _finish(p + c, [IGNORE_INDEX] * len(p) + list(c), tokenizer, max_len=max_len, eos_trained=True,
                       index=index)
    if kind == "messages":
        ids, labels = _encode_chat(tokenizer, record["messages"])
        last_is_assistant = record["messages"][-1]["role"] == "assistant"
        return _finish(ids, labels, tokenizer, max_len=max_len, eos_trained=last_is_assistant, index=index)
    # tokenised: pass through
    ids = list(record["input_ids"])
    labels = list(record.get("labels") or ids)
    if "attention_mask" in record:
        labels = [lab if m else IGNORE_INDEX for lab, m in zip(labels, record["attention_mask"])]
    ids, labels = ids[:max_len], labels[:max_len]
    return {"input_ids": ids, "labels": labels}


def _encode_chat(tokenizer: Any, messages: list[dict]) -> tuple[list[int], list[int]]:
    """(ids, labels) of a conversation with the loss on assistant turns only."""
    if _has_chat_template(tokenizer):
        return _encode_chat_template(tokenizer, messages)
    ids: list[int] = []
    labels: list[int] = []
    for m in messages:
        head = _ids(tokenizer, f"{m['role']}:")
        body = _ids(tokenizer, f" {m['content']}\n")
        ids += head + body
        labels += [IGNORE_INDEX] * len(head) + (list(body) if m["role"] == "assistant" else [IGNORE_INDEX] * len(body))
    return ids, labels


def _render(tokenizer: Any, messages: list[dict], *, add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def _encode_chat_template(tokenizer: Any, messages: list[dict]) -> tuple[list[int], list[int]]:
    """Render once, tokenise once; label the tokens that fall in the assistant turns' character spans.

    An assistant turn's span is the text the template adds for it after the generation prompt:
    ``render(messages[:k+1])`` minus ``render(messages[:k], add_generation_prompt=True)``.
    """
    full = _render(tokenizer, messages, add_generation_prompt=False)
    spans = []
    for k, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:k], add_generation_prompt=True) if k else ""
        upto = _render(tokenizer, messages[: k + 1], add_generation_prompt=False)
        if not full.startswith(upto) or not upto.startswith(before):
            raise DataError("this tokenizer's chat template does not render a conversation as a prefix of its "
                            "continuation, so the assistant turns cannot be located; pass prompt/completion "
                            "records or tokenised records with labels instead.")
        spans.append((len(before), len(upto)))
    try:
        enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
    except (NotImplementedError, ValueError, TypeError, KeyError):
        return _encode_chat_segments(tokenizer, full, spans)
    ids = list(enc["input_ids"])
    labels = []
    for tok, (start, end) in zip(ids, offsets):
        trained = any(s <= start < e for s, e in spans) and end > start
        labels.append(tok if trained else IGNORE_INDEX)
    return ids, labels


def _encode_chat_segments(tokenizer: Any, full: str, spans: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """Slow tokenizers (no offsets): tokenise the rendered text segment by segment."""
    ids: list[int] = []
    labels: list[int] = []
    pos = 0
    for s, e in spans + [(len(full), len(full))]:
        ctx = _ids(tokenizer, full[pos:s])
        ids += ctx
        labels += [IGNORE_INDEX] * len(ctx)
        body = _ids(tokenizer, full[s:e])
        ids += body
        labels += list(body)
        pos = e
    return ids, labels


def encode_prompt(tokenizer: Any, text: Any, *, max_len: int) -> list[int]:
    """Token ids of a generation prompt: ``[BOS] + tokens(text)``, no EOS.

    ``text`` is a string, or a chat conversation (a list of ``{"role", "content"}`` messages, rendered
    with the chat template and its generation prompt, or the fallback format ending in ``"assistant:"``).
    A prompt longer than ``max_len`` tokens raises :class:`DataError` (it is never silently cut).
    """
    max_len = _check_max_len(max_len)
    if isinstance(text, str):
        ids = _ids(tokenizer, text)
    elif isinstance(text, (list, tuple)) and text and all(isinstance(m, dict) for m in text):
        msgs = [{"role": m.get("role"), "content": m.get("content")} for m in text]
        for j, m in enumerate(msgs):
            if not isinstance(m["role"], str) or not isinstance(m["content"], str):
                raise DataError(f"prompt message {j} needs string 'role' and 'content'.")
        if _has_chat_template(tokenizer):
            ids = _ids(tokenizer, _render(tokenizer, msgs, add_generation_prompt=True))
        else:
            ids = _ids(tokenizer, "".join(FALLBACK_CHAT_FORMAT.format(**m) for m in msgs) + "assistant:")
    else:
        raise DataError(f"a prompt is a string or a list of chat messages, got {type(text).__name__}.")
    bos = _bos(tokenizer)
    if bos is not None and (not ids or ids[0] != bos):
        ids = [bos] + ids
    if len(ids) > max_len:
        raise DataError(f"the prompt has {len(ids)} tokens but at most {max_len} fit "
                        "(TrainingConfig.max_seq_len, capped by the model's positions); shorten the prompt.")
    return ids
