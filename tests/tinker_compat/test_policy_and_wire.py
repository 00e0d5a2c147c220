"""The DP policy file and the protobuf decoding of forward_backward (no server, no model)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("tinker")
from tinker import types
from tinker.proto.request_conv import forward_backward_request_to_proto

from tinker_nb.errors import ConfigError, DataError
from tinker_nb.server.tinker_compat.policy import BUILTIN, POLICY_ENV, load_policy
from tinker_nb.server.tinker_compat.wire import (
    decode_forward_backward,
    decompress_bounded,
    encode_forward_backward_output,
    parse_json,
)


def test_policy_defaults_merge_and_refusals(tmp_path, monkeypatch):
    monkeypatch.delenv(POLICY_ENV, raising=False)
    p = load_policy(tmp_path, "anyone")
    assert p.dp and p.noise_multiplier == BUILTIN["noise_multiplier"] and p.source == "built-in"
    assert p.dp_config().target_epsilon == BUILTIN["target_epsilon"]
    (tmp_path / "tinker_policy.json").write_text(json.dumps({
        "default": {"noise_multiplier": 2.0, "target_epsilon": 3.0},
        "tenants": {"research": {"dp": False}, "clinic": {"max_grad_norm": 0.5}}}))
    assert load_policy(tmp_path, "research").dp_config() is None
    c = load_policy(tmp_path, "clinic")
    assert (c.noise_multiplier, c.max_grad_norm, c.target_epsilon) == (2.0, 0.5, 3.0)
    assert c.source == "tinker_policy.json:tenants.clinic"
    other = tmp_path / "elsewhere.json"
    other.write_text(json.dumps({"default": {"dp": False}}))
    monkeypatch.setenv(POLICY_ENV, str(other))
    assert not load_policy(tmp_path, "clinic").dp
    for bad in ({"default": {"sigma": 1}}, {"default": {"noise_multiplier": None}}, {"default": {"batch_size": 0}},
                {"default": {"target_delta": 2.0}}, {"oops": {}}):
        other.write_text(json.dumps(bad))
        with pytest.raises(ConfigError):
            load_policy(tmp_path, "x")
    other.write_text("{not json")
    with pytest.raises(ConfigError):
        load_policy(tmp_path, "x")


def _body(data, loss_fn="cross_entropy") -> bytes:
    req = types.ForwardBackwardRequest(forward_backward_input=types.ForwardBackwardInput(data=data, loss_fn=loss_fn),
                                       model_id="s:train:0", seq_id=3)
    return forward_backward_request_to_proto(req).SerializeToString()


def _datum(ids, weights=None):
    return types.Datum(model_input=types.ModelInput.from_ints(ids[:-1]),
                       loss_fn_inputs={"target_tokens": ids[1:], "weights": weights or [1.0] * (len(ids) - 1)})


def test_decode_forward_backward_datums_and_refusals():
    msg, ds = decode_forward_backward(_body([_datum([5, 6, 7, 8], [0.0, 1.0, 1.0]), _datum([9, 10])]), None)
    assert (msg.model_id, msg.seq_id, msg.loss_fn) == ("s:train:0", 3, "cross_entropy")
    assert ds[0].tokens == [5, 6, 7] and ds[0].targets == [6, 7, 8] and ds[0].weights == [0.0, 1.0, 1.0]
    assert ds[1].tokens == [9] and ds[1].targets == [10]
    with pytest.raises(DataError, match="0 or 1"):
        decode_forward_backward(_body([_datum([1, 2, 3], [0.5, 1.0])]), None)
    img = types.Datum(model_input=types.ModelInput(chunks=[types.ImageChunk(data=b"\x89PNG", format="png")]),
                      loss_fn_inputs={"target_tokens": [1], "weights": [1.0]})
    with pytest.raises(DataError, match="not supported"):
        decode_forward_backward(_body([img]), None)
    with pytest.raises(DataError):
        decode_forward_backward(b"\xff\xff\xff not a proto", None)
    with pytest.raises(DataError):
        decode_forward_backward(_body([_datum([1, 2])]), "br")


def test_zstd_is_read_through_a_bounded_stream():
    import zstandard

    body = _body([_datum([1, 2, 3])])
    _, ds = decode_forward_backward(zstandard.ZstdCompressor().compress(body), "zstd")
    assert ds[0].tokens == [1, 2]
    bomb = zstandard.ZstdCompressor().compress(b"\0" * (1 << 20))
    with pytest.raises(DataError, match="expands beyond"):
        decompress_bounded(bomb, limit=1 << 16)


def test_output_round_trips_through_the_sdk_decoder():
    from tinker.proto.response_conv import deserialize_forward_backward_output

    lps = [np.array([-1.0, -2.0], np.float32), np.array([-0.5], np.float32)]
    out = deserialize_forward_backward_output(encode_forward_backward_output({"logprobs": lps}, {"loss:sum": 3.5}, 2))
    assert out.metrics == {"loss:sum": 3.5}
    assert [o["logprobs"].tolist() for o in out.loss_fn_outputs] == [[-1.0, -2.0], [-0.5]]


def test_json_requests_tolerate_unknown_fields_and_refuse_bad_ones():
    req = parse_json(types.OptimStepRequest, {"model_id": "m", "seq_id": 2, "adam_params": {"learning_rate": 0.1},
                                              "a_field_from_a_newer_sdk": {"x": 1}})
    assert isinstance(req.optim_params, types.AdamParams) and req.optim_params.learning_rate == 0.1
    with pytest.raises(DataError, match="OptimStepRequest"):
        parse_json(types.OptimStepRequest, {"seq_id": 2})
