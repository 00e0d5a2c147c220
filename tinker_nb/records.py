"""Bring your own data: turn what users hold into the record forms the library trains on.

Torch-free. :func:`normalize_records` accepts

* a list (or tuple) of strings — plain training text;
* a list of dicts: ``{"text": ...}``, ``{"prompt": ..., "completion": ...}``,
  ``{"messages": [{"role": ..., "content": ...}, ...]}`` or tokenised ``{"input_ids": [...],
  "labels": [...], "attention_mask": [...]}`` (``labels`` and ``attention_mask`` optional);
* a pandas ``Series`` of any of the above, or a ``DataFrame`` with a ``text`` column, ``prompt`` +
  ``completion`` columns, a ``messages`` column, or an ``input_ids`` column;
* a path (``str`` or ``os.PathLike``) to a ``.jsonl`` / ``.json`` / ``.csv`` / ``.txt`` file
  (``.txt``: one record per non-empty line);
* a Hugging Face ``datasets.Dataset`` (duck-typed: ``column_names`` + row iteration; no import of
  ``datasets`` here).

It returns a list whose items are each exactly one of::

    "some text"
    {"prompt": str, "completion": str}
    {"messages": [{"role": str, "content": str}, ...]}
    {"input_ids": [int, ...], "labels": [int, ...]?, "attention_mask": [int, ...]?}

Anything else raises :class:`~tinker_nb.errors.DataError` saying which record is wrong and how to fix it.
Error messages name record positions and keys, never the record's text (it is private).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import DataError

__all__ = ["ROLES", "charge_also_subsets", "normalize_record", "normalize_records", "record_kind"]

ROLES = ("system", "user", "assistant", "tool")
_TOKEN_KEYS = ("input_ids", "labels", "attention_mask")
_HELP = ("pass a list of strings, of {'prompt', 'completion'} dicts, of {'messages': [...]} dicts, "
         "of tokenised {'input_ids', ...} dicts, a pandas Series/DataFrame, a .jsonl/.csv/.txt path, or a "
         "Hugging Face datasets.Dataset")


def record_kind(record: Any) -> str:
    """``"text"``, ``"prompt_completion"``, ``"messages"`` or ``"tokens"`` for a normalised record."""
    if isinstance(record, str):
        return "text"
    if isinstance(record, dict):
        if "input_ids" in record:
            return "tokens"
        if "messages" in record:
            return "messages"
        if "prompt" in record:
            return "prompt_completion"
    raise DataError(f"not a normalised record ({type(record).__name__}); {_HELP}.")


def normalize_records(obj: Any) -> list:
    """Normalise ``obj`` (see the module docstring) into a non-empty list of records."""
    rows = _rows(obj)
    out = [_record(r, i) for i, r in enumerate(rows)]
    if not out:
        raise DataError(f"the data set is empty; {_HELP}.")
    return out


def charge_also_subsets(charge_also: Any) -> list:
    """The record collections of ``attach_dataset(..., charge_also=...)``: one collection, or a list of them.

    A list whose first element is itself a list or tuple is a list of collections; anything else (a list of
    records, a pandas object, a path, a ``datasets`` object) is one collection. ``None`` gives none.
    """
    if charge_also is None:
        return []
    if isinstance(charge_also, (list, tuple)) and (not charge_also or isinstance(charge_also[0], (list, tuple))):
        return list(charge_also)
    return [charge_also]


def normalize_record(record: Any, index: int = 0) -> Any:
    """Validate and normalise one record (``index`` only names it in error messages)."""
    return _record(record, index)


# ---------------------------------------------------------------------------------------------- sources
def _rows(obj: Any) -> list:
    if obj is None:
        raise DataError(f"no data (None); {_HELP}.")
    if isinstance(obj, (str, os.PathLike)):
        return _read_path(obj)
    if isinstance(obj, (bytes, bytearray)):
        raise DataError(f"raw bytes are not a data set; decode them to text first, or {_HELP}.")
    if isinstance(obj, Mapping):
        if "messages" in obj or "prompt" in obj or "input_ids" in obj or "text" in obj:
            raise DataError("a single record was given where a data set is expected; wrap it in a list: [record].")
        raise DataError(f"a dict is not a data set; {_HELP}.")
    mod = type(obj).__module__ or ""
    if mod.startswith("pandas"):
        return _from_pandas(obj)
    if hasattr(obj, "column_names") and hasattr(obj, "__iter__") and not isinstance(obj, (list, tuple)):
        return _from_hf_dataset(obj)
    if hasattr(obj, "tolist") and not isinstance(obj, (list, tuple)):  # numpy array of strings
        obj = obj.tolist()
    if isinstance(obj, (list, tuple)):
        return list(obj)
    if isinstance(obj, Iterable) and not isinstance(obj, (set, frozenset)):
        return list(obj)
    raise DataError(f"cannot read records from a {type(obj).__name__}; {_HELP}.")


def _read_path(p: str | os.PathLike) -> list:
    path = Path(p)
    known = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".txt", ".text")
    if isinstance(p, str) and ("\n" in p or (path.suffix.lower() not in known and not path.exists())):
        raise DataError("a single string was given where a data set is expected: pass a list of strings "
                        "([text]) or a path to a .jsonl/.csv/.txt file.")
    if not path.exists():
        raise DataError(f"data file {str(path)!r} does not exist.")
    if not path.is_file():
        raise DataError(f"{str(path)!r} is not a file; give a .jsonl, .json, .csv or .txt file.")
    suffix = path.suffix.lower()
    try:
        if suffix in (".jsonl", ".ndjson"):
            rows = []
            with path.open(encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise DataError(f"{path.name} line {n} is not valid JSON ({exc.msg} at column "
                                        f"{exc.colno}).") from None
            return rows
        if suffix == ".json":
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path.name} is not valid JSON ({exc.msg} at line {exc.lineno}).") from None
            if isinstance(data, dict) and isinstance(data.get("data"), list):
                data = data["data"]
            if not isinstance(data, list):
                raise DataError(f"{path.name} must hold a JSON list of records (or {{'data': [...]}}).")
            return data
        if suffix in (".csv", ".tsv"):
            with path.open(encoding="utf-8", newline="") as f:
                reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
                cols = reader.fieldnames or []
                rows = list(reader)
            return _from_columns(cols, rows, source=path.name)
        if suffix in (".txt", ".text"):
            with path.open(encoding="utf-8") as f:
                return [line.rstrip("\r\n") for line in f if line.strip()]
    except UnicodeDecodeError:
        raise DataError(f"{path.name} is not UTF-8 text.") from None
    raise DataError(f"unsupported file type {suffix!r} for {path.name}; use .jsonl, .json, .csv or .txt "
                    "(or load it with pandas / datasets and pass that).")


def _from_columns(cols: Sequence[str], rows: list[dict], *, source: str) -> list:
    """Rows of a table (CSV, DataFrame, HF dataset) → records, by the columns present."""
    c = set(cols)
    if "prompt" in c and "completion" in c:
        return [{"prompt": r["prompt"], "completion": r["completion"]} for r in rows]
    if "messages" in c:
        return [{"messages": _maybe_json(r["messages"])} for r in rows]
    if "input_ids" in c:
        return [{k: _maybe_json(r[k]) for k in _TOKEN_KEYS if k in c and r[k] is not None} for r in rows]
    if "text" in c:
        return [r["text"] for r in rows]
    if len(cols) == 1:
        return [r[cols[0]] for r in rows]
    raise DataError(f"{source} has columns {sorted(c)}; need a 'text' column, 'prompt' and 'completion' "
                    "columns, a 'messages' column or an 'input_ids' column (or select one column yourself).")


def _maybe_json(v: Any) -> Any:
    if isinstance(v, str) and v[:1] in "[{":
        try:
            return json.loads(v)
        except ValueError:
            return v
    return v


def _from_pandas(obj: Any) -> list:
    name = type(obj).__name__
    if name == "Series":
        return [_plain(v) for v in obj.tolist()]
    if name == "DataFrame":
        cols = [str(c) for c in obj.columns]
        rows = [{str(k): _plain(v) for k, v in r.items()} for r in obj.to_dict(orient="records")]
        return _from_columns(cols, rows, source="the DataFrame")
    raise DataError(f"cannot read records from a pandas {name}; pass a Series or a DataFrame.")


def _from_hf_dataset(ds: Any) -> list:
    cols = list(ds.column_names)
    if isinstance(cols, dict) or (cols and isinstance(cols[0], list)):  # DatasetDict
        raise DataError("this looks like a datasets.DatasetDict; pick a split, e.g. ds['train'].")
    rows = [dict(r) for r in ds]
    return _from_columns(cols, rows, source="the dataset")


def _plain(v: Any) -> Any:
    """numpy scalars/arrays (from pandas/datasets) → Python values."""
    if hasattr(v, "tolist") and not isinstance(v, (str, bytes)):
        return v.tolist()
    return v


# ---------------------------------------------------------------------------------------------- records
def _text(v: Any, where: str) -> str:
    if not isinstance(v, str):
        if v is None or (isinstance(v, float) and v != v):
            raise DataError(f"{where} is missing (None/NaN).")
        raise DataError(f"{where} must be a string, got {type(v).__name__}.")
    return v


def _record(r: Any, i: int) -> Any:
    r = _plain(r)
    if isinstance(r, str):
        if not r.strip():
            raise DataError(f"record {i} is an empty string.")
        return r
    if isinstance(r, Mapping):
        return _from_dict(dict(r), i)
    if r is None or (isinstance(r, float) and r != r):
        raise DataError(f"record {i} is missing (None/NaN); drop empty rows first.")
    raise DataError(f"record {i} is a {type(r).__name__}; {_HELP}.")


def _from_dict(r: dict, i: int) -> Any:
    keys = set(r)
    if "input_ids" in keys:
        extra = keys - set(_TOKEN_KEYS)
        if extra:
            raise DataError(f"record {i} has input_ids and unknown keys {sorted(extra)}; tokenised records take "
                            "only input_ids, labels, attention_mask.")
        out = {}
        for k in _TOKEN_KEYS:
            if k in r and r[k] is not None:
                v = _plain(r[k])
                if not isinstance(v, (list, tuple)) or not all(isinstance(x, int) and not isinstance(x, bool)
                                                                for x in v):
                    raise DataError(f"record {i}: {k} must be a flat list of integers.")
                out[k] = [int(x) for x in v]
        if not out["input_ids"]:
            raise DataError(f"record {i} has empty input_ids.")
        for k in ("labels", "attention_mask"):
            if k in out and len(out[k]) != len(out["input_ids"]):
                raise DataError(f"record {i}: {k} has {len(out[k])} entries but input_ids has "
                                f"{len(out['input_ids'])}; they must be aligned.")
        return out
    if "messages" in keys:
        extra = keys - {"messages"}
        if extra:
            raise DataError(f"record {i} has messages and other keys {sorted(extra)}; a chat record is "
                            "{'messages': [{'role': ..., 'content': ...}, ...]}.")
        return {"messages": _messages(r["messages"], i)}
    if "prompt" in keys or "completion" in keys:
        extra = keys - {"prompt", "completion"}
        if extra or not {"prompt", "completion"} <= keys:
            raise DataError(f"record {i} has keys {sorted(keys)}; an instruction record needs exactly 'prompt' "
                            "and 'completion'.")
        p = _text(r["prompt"], f"record {i} 'prompt'")
        c = _text(r["completion"], f"record {i} 'completion'")
        if not c.strip():
            raise DataError(f"record {i} has an empty completion (the loss is on the completion).")
        return {"prompt": p, "completion": c}
    if keys == {"text"}:
        return _record(r["text"], i)
    if "role" in keys and "content" in keys:
        raise DataError(f"record {i} is a single chat message; wrap a conversation as "
                        "{'messages': [{'role': 'user', ...}, {'role': 'assistant', ...}]}.")
    raise DataError(f"record {i} is a dict with keys {sorted(keys)}; expected 'text', 'prompt'+'completion', "
                    "'messages' or 'input_ids'.")


def _messages(msgs: Any, i: int) -> list[dict]:
    msgs = _plain(_maybe_json(msgs))
    if not isinstance(msgs, (list, tuple)) or not msgs:
        raise DataError(f"record {i}: 'messages' must be a non-empty list of {{'role', 'content'}} dicts.")
    out = []
    for j, m in enumerate(msgs):
        if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
            raise DataError(f"record {i}, message {j}: each message is a dict with 'role' and 'content'.")
        role = m["role"]
        if role not in ROLES:
            raise DataError(f"record {i}, message {j}: role must be one of {ROLES}, got {role!r}.")
        out.append({"role": role, "content": _text(m["content"], f"record {i}, message {j} 'content'")})
    if not any(m["role"] == "assistant" for m in out):
        raise DataError(f"record {i} has no assistant message: the loss is on assistant turns, so there is "
                        "nothing to learn from it.")
    return out
