"""normalize_records: every way a user holds data becomes one of four record forms, or a clear DataError."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from tinker_nb.errors import DataError
from tinker_nb.records import normalize_records, record_kind

PC = {"prompt": "Q: symptoms?", "completion": " A: cough."}
CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
TOK = {"input_ids": [1, 5, 6], "labels": [-100, 5, 6], "attention_mask": [1, 1, 1]}


def test_lists_of_strings_and_dicts():
    assert normalize_records(["a", "b"]) == ["a", "b"]
    assert normalize_records(("a",)) == ["a"]
    assert normalize_records([{"text": "a"}, PC, CHAT, TOK, {"input_ids": [3]}]) == [
        "a", PC, CHAT, TOK, {"input_ids": [3]}]
    assert [record_kind(r) for r in normalize_records(["a", PC, CHAT, TOK])] == [
        "text", "prompt_completion", "messages", "tokens"]
    assert normalize_records(x for x in ["a", "b"]) == ["a", "b"]  # any iterable


def test_pandas_series_and_dataframes():
    pd = pytest.importorskip("pandas")
    assert normalize_records(pd.Series(["a", "b"])) == ["a", "b"]
    assert normalize_records(pd.DataFrame({"text": ["a", "b"], "id": [1, 2]})) == ["a", "b"]
    df = pd.DataFrame({"prompt": ["p1", "p2"], "completion": ["c1", "c2"], "meta": [0, 1]})
    assert normalize_records(df) == [{"prompt": "p1", "completion": "c1"}, {"prompt": "p2", "completion": "c2"}]
    assert normalize_records(pd.DataFrame({"messages": [CHAT["messages"]]})) == [CHAT]
    assert normalize_records(pd.DataFrame({"input_ids": [[1, 2]]})) == [{"input_ids": [1, 2]}]
    assert normalize_records(pd.DataFrame({"note": ["only column"]})) == ["only column"]
    with pytest.raises(DataError, match="'text' column"):
        normalize_records(pd.DataFrame({"a": ["x"], "b": ["y"]}))
    with pytest.raises(DataError, match="record 1 is missing"):
        normalize_records(pd.Series(["a", None]))


def test_files(tmp_path):
    j = tmp_path / "d.jsonl"
    j.write_text("\n".join(json.dumps(r) for r in ["x", PC, CHAT, {"text": "y"}]) + "\n\n")
    assert normalize_records(j) == ["x", PC, CHAT, "y"]
    assert normalize_records(str(j)) == ["x", PC, CHAT, "y"]
    c = tmp_path / "d.csv"
    c.write_text('prompt,completion\n"Q, one",A1\nQ2,A2\n')
    assert normalize_records(c) == [{"prompt": "Q, one", "completion": "A1"}, {"prompt": "Q2", "completion": "A2"}]
    c2 = tmp_path / "t.csv"
    c2.write_text('text,label\nhello,1\n')
    assert normalize_records(c2) == ["hello"]
    c3 = tmp_path / "m.csv"
    with c3.open("w", newline="") as f:
        csv.writer(f).writerows([["messages"], [json.dumps(CHAT["messages"])]])
    assert normalize_records(c3) == [CHAT]
    t = tmp_path / "d.txt"
    t.write_text("line one\n\nline two\n")
    assert normalize_records(t) == ["line one", "line two"]
    js = tmp_path / "d.json"
    js.write_text(json.dumps([PC]))
    assert normalize_records(js) == [PC]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('"ok"\n{not json\n')
    with pytest.raises(DataError, match="line 2 is not valid JSON"):
        normalize_records(bad)
    with pytest.raises(DataError, match="does not exist"):
        normalize_records(tmp_path / "missing.jsonl")
    with pytest.raises(DataError, match="unsupported file type"):
        (tmp_path / "x.parquet").write_bytes(b"PAR1")
        normalize_records(tmp_path / "x.parquet")
    with pytest.raises(DataError, match="not a file"):
        normalize_records(tmp_path)


class FakeDataset:
    """Duck-typed like datasets.Dataset: column_names and iteration over row dicts."""

    def __init__(self, rows):
        self.rows = rows
        self.column_names = list(rows[0])

    def __iter__(self):
        return iter(self.rows)

    def __len__(self):
        return len(self.rows)


def test_hugging_face_dataset_duck_typed():
    assert normalize_records(FakeDataset([{"text": "a", "label": 0}, {"text": "b", "label": 1}])) == ["a", "b"]
    assert normalize_records(FakeDataset([dict(PC)])) == [PC]
    assert normalize_records(FakeDataset([dict(CHAT)])) == [CHAT]


@pytest.mark.parametrize("bad, match", [
    ("just one text", "single string"),
    ("two\nlines", "single string"),
    (None, "None"),
    (b"bytes", "bytes"),
    ({"text": "x"}, "wrap it in a list"),
    ({"a": 1}, "not a data set"),
    ([], "empty"),
    ([""], "record 0 is an empty string"),
    (["ok", 3], "record 1 is a int"),
    ([{"prompt": "p"}], "needs exactly 'prompt' and 'completion'"),
    ([{"prompt": "p", "completion": ""}], "empty completion"),
    ([{"prompt": 1, "completion": "c"}], "must be a string"),
    ([{"messages": []}], "non-empty list"),
    ([{"messages": [{"role": "user", "content": "hi"}]}], "no assistant message"),
    ([{"messages": [{"role": "robot", "content": "hi"}]}], "role must be one of"),
    ([{"messages": [{"content": "hi"}]}], "'role' and 'content'"),
    ([{"role": "user", "content": "hi"}], "single chat message"),
    ([{"input_ids": [1], "extra": 1}], "unknown keys"),
    ([{"input_ids": []}], "empty input_ids"),
    ([{"input_ids": [1, 2], "labels": [1]}], "aligned"),
    ([{"input_ids": [1.5]}], "flat list of integers"),
    ([{"foo": "bar"}], "expected 'text'"),
    (42, "cannot read records"),
])
def test_bad_inputs_are_data_errors(bad, match):
    with pytest.raises(DataError, match=match):
        normalize_records(bad)


def test_errors_never_contain_the_private_text():
    secret = "Patient Jane Roe, SSN 123-45-6789"
    for bad in ([{"prompt": secret}], [{"messages": [{"role": "x", "content": secret}]}], [secret, 7]):
        with pytest.raises(DataError) as ei:
            normalize_records(bad)
        assert "Jane" not in str(ei.value) and "6789" not in str(ei.value)


def test_torch_free():
    code = ("import sys; import tinker_nb.records as r; r.normalize_records(['a']); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
