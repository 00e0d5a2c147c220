"""The official Tinker SDK (0.38) against `tinker-nb serve`: the SFT call sequence, DP, retries, tenants."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

tinker = pytest.importorskip("tinker")
from tinker import types  # noqa: E402

from .conftest import BASE_MODEL, audit_ops, datum, resolved  # noqa: E402

TEXTS = [f"note {i}: the patient reports mild headache and the dog ran to the park" for i in range(4)]


def test_sft_loop_checkpoint_resume_and_sample(served, service):
    """The cookbook's minimal supervised loop, unchanged SDK calls, DP on; then resume and sample."""
    srv, keys = served
    sc = service("alice")
    tc = resolved(sc.create_lora_training_client(base_model=BASE_MODEL, rank=4))
    info = tc.get_info()
    assert info.model_id.endswith(":train:0") and info.lora_rank == 4
    assert info.model_data.model_name == BASE_MODEL
    tok = tc.get_tokenizer()  # the server answers its local tokenizer folder: no download
    data = [datum(tok, t, mask_prompt=2) for t in TEXTS]

    # two steps submitted back to back, results read afterwards (sl_loop's pipelining)
    fb1 = tc.forward_backward(data, "cross_entropy")
    os1 = tc.optim_step(types.AdamParams(learning_rate=1e-3))
    fb2 = tc.forward_backward(data, "cross_entropy")
    os2 = tc.optim_step(types.AdamParams(learning_rate=1e-3, grad_clip_norm=1e9))  # cannot switch DP off
    r1, m1, r2, m2 = fb1.result(), os1.result(), fb2.result(), os2.result()
    for r in (r1, r2):
        assert len(r.loss_fn_outputs) == len(data)
        for d, out in zip(data, r.loss_fn_outputs):
            lp = out["logprobs"].to_numpy()
            assert lp.shape == (d.model_input.length,) and np.all(lp <= 0) and np.all(np.isfinite(lp))
        assert all(k.count(":") == 1 for k in r.metrics) and r.metrics["loss:sum"] > 0
    # weights respected: the loss is the weighted NLL of the returned logprobs
    w_nll = -sum(float((o["logprobs"].to_numpy() * np.asarray(d.loss_fn_inputs["weights"].tolist())).sum())
                 for d, o in zip(data, r1.loss_fn_outputs))
    assert r1.metrics["loss:sum"] == pytest.approx(w_nll, rel=1e-3)
    for m, step in ((m1, 1), (m2, 2)):
        mt = m.metrics
        assert mt["step"] == step and mt["dp_enabled"] == 1.0
        assert mt["dp_noise_multiplier"] == 1.0 and mt["dp_delta"] == 1e-5 and mt["dp_max_grad_norm"] == 1.0
        assert mt["dp_accounting_caller_supplied"] == 1.0 and mt["dp_amplification"] == 0.0
        assert 0 < mt["dp_epsilon"] < mt["dp_target_epsilon"] == 50.0
        assert mt["noise_std"] == pytest.approx(1.0)  # σ·C, once per optim_step
    assert m2.metrics["dp_epsilon"] > m1.metrics["dp_epsilon"]  # each datum took part twice: μ² = 2/σ²
    assert m2.metrics["dp_caller_supplied_mu2"] == pytest.approx(2.0)

    fwd = tc.forward(data[:2], "cross_entropy").result()  # forward only: no gradient, no step
    assert len(fwd.loss_fn_outputs) == 2

    saved = tc.save_state("ckpt-1").result()
    assert saved.path == f"tinker://{info.model_id}/weights/ckpt-1"
    tc.load_state(saved.path).result()  # legacy load into the same model
    tc.load_state_with_optimizer(saved.path).result()

    # resume: 0.38 create-via-load (load_weights without model_id; the SDK derives <session>:train:<n>)
    tc2 = resolved(sc.create_training_client_from_state_with_optimizer(saved.path))
    assert tc2.get_info().model_id.endswith(":train:1")
    after = tc2.forward(data[:1], "cross_entropy").result().loss_fn_outputs[0]["logprobs"].to_numpy()
    before = tc.forward(data[:1], "cross_entropy").result().loss_fn_outputs[0]["logprobs"].to_numpy()
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)  # same weights restored
    m3 = tc2.forward_backward(data[:2], "cross_entropy").result() and \
        tc2.optim_step(types.AdamParams(learning_rate=1e-3)).result()
    assert m3.metrics["dp_epsilon"] >= m2.metrics["dp_epsilon"]  # ε is the tenant's, never reset by a load

    sampler_path = tc2.save_weights_for_sampler("final").result().path
    assert sampler_path.startswith(f"tinker://{tc2.get_info().model_id}/sampler_weights/")
    sampling = resolved(tc2.save_weights_and_get_sampling_client())
    prompt = types.ModelInput.from_ints(tok.encode("the patient reports"))
    res = sampling.sample(prompt=prompt, num_samples=2,
                          sampling_params=types.SamplingParams(max_tokens=6, temperature=0.8, seed=3)).result()
    assert len(res.sequences) == 2
    for s in res.sequences:
        assert 1 <= len(s.tokens) <= 7 and s.stop_reason in ("stop", "length")
        assert s.logprobs is not None and len(s.logprobs) == len(s.tokens)
    lps = sampling.compute_logprobs(prompt).result()
    assert lps[0] is None and len(lps) == prompt.length and all(x is not None and x <= 0 for x in lps[1:])
    from_path = resolved(sc.create_sampling_client(model_path=sampler_path))
    greedy = from_path.sample(prompt=prompt, num_samples=1,
                              sampling_params=types.SamplingParams(max_tokens=4, temperature=0.0)).result()
    assert greedy.sequences[0].tokens

    sc.close("success").result(timeout=30)  # the session's models and samplers are released
    gone = httpx.post(srv.base_url + "/api/v1/get_info", json={"model_id": info.model_id},
                      headers={"X-API-Key": keys["alice"]}, timeout=30)
    assert gone.status_code == 404
    ops = audit_ops(srv, keys["alice"])
    for op in ("tinker_create_session", "tinker_create_model", "create_training_client", "forward_backward",
               "tinker_forward", "optim_step", "save_state", "load_state", "tinker_sample", "close",
               "tinker_finish_session"):
        assert op in ops, op
    assert ops.count("optim_step") == 3


def test_logprobs_equal_in_kernel_engine(served, service, tmp_path):
    """The logprobs the server returns for a datum are the in-kernel engine's for the same tokens."""
    from tinker_nb import LoRAConfig, ServiceClient, TrainingConfig

    sc = service("plain")
    tc = resolved(sc.create_lora_training_client(base_model=BASE_MODEL, rank=4))
    tok = tc.get_tokenizer()
    text = "the ticket says the printer on floor two is broken again"
    d = datum(tok, text, mask_prompt=3)  # zero weights change the loss, never the returned logprobs
    served_lp = tc.forward([d], "cross_entropy").result().loss_fn_outputs[0]["logprobs"].to_numpy()

    ids = tok.encode(text)
    local = ServiceClient(tmp_path / "local-ws", key_file=tmp_path / "root.key")
    ltc = local.create_training_client(TrainingConfig(model_ref=BASE_MODEL, lora_config=LoRAConfig(rank=4)))
    try:
        engine = ltc.forward([{"input_ids": ids, "labels": ids}])  # HF convention: logprobs of ids[1:]
    finally:
        ltc.close()
    assert engine.tokens[0] == ids[1:]
    np.testing.assert_allclose(served_lp, np.asarray(engine.logprobs[0], dtype=np.float32), rtol=1e-4, atol=1e-4)


def test_budget_refusal_is_a_user_request_failure(served, service):
    srv, keys = served
    sc = service("tight")
    tc = resolved(sc.create_lora_training_client(base_model=BASE_MODEL, rank=4))
    tok = tc.get_tokenizer()
    data = [datum(tok, TEXTS[0])]
    tc.forward_backward(data, "cross_entropy").result()
    first = tc.optim_step(types.AdamParams(learning_rate=1e-3)).result().metrics
    assert first["dp_epsilon"] < first["dp_target_epsilon"] == 5.0
    with pytest.raises(tinker.RequestFailedError) as ei:  # the same record a second time: ε would pass 5
        tc.forward_backward(data, "cross_entropy").result()
    assert ei.value.category == types.RequestErrorCategory.User
    assert "privacy budget" in str(ei.value)
    with pytest.raises(tinker.RequestFailedError):  # nothing accumulated: the step is refused too
        tc.optim_step(types.AdamParams(learning_rate=1e-3)).result()
    assert audit_ops(srv, keys["tight"]).count("optim_step") == 1


def test_non_dp_policy_trains_like_tinker(served, service):
    sc = service("plain")
    tc = resolved(sc.create_lora_training_client(base_model=BASE_MODEL, rank=4))
    tok = tc.get_tokenizer()
    data = [datum(tok, t) for t in TEXTS[:2]]
    losses = []
    for _ in range(3):
        losses.append(tc.forward_backward(data, "cross_entropy").result().metrics["loss:sum"])
        m = tc.optim_step(types.AdamParams(learning_rate=1e-2)).result().metrics
        assert m["dp_enabled"] == 0.0 and "dp_epsilon" not in m and m["noise_std"] == 0.0
    assert losses[-1] < losses[0]


def test_unsupported_loss_is_a_user_error(served, service):
    sc = service("plain")
    tc = resolved(sc.create_lora_training_client(base_model=BASE_MODEL, rank=4))
    d = datum(tc.get_tokenizer(), TEXTS[0])
    d.loss_fn_inputs["logprobs"] = d.loss_fn_inputs["weights"]
    d.loss_fn_inputs["advantages"] = d.loss_fn_inputs["weights"]
    with pytest.raises(tinker.RequestFailedError) as ei:
        tc.forward_backward([d], "importance_sampling").result()
    assert ei.value.category == types.RequestErrorCategory.User and "cross_entropy" in str(ei.value)


def test_wrong_key_is_refused(served):
    srv, _ = served
    sc = tinker.ServiceClient(base_url=srv.base_url, api_key="tml-" + "x" * 43)
    try:
        with pytest.raises(tinker.AuthenticationError):
            resolved(sc.create_lora_training_client(base_model=BASE_MODEL, rank=4))
    finally:
        try:
            sc.close("errored")
        except Exception:  # noqa: BLE001 - never had a session
            pass
    r = httpx.post(srv.base_url + "/api/v1/create_session", json={"tags": [], "user_metadata": None,
                                                                  "sdk_version": "0.38.0"},
                   headers={"X-API-Key": "tml-nope"}, timeout=10)
    assert r.status_code == 401


def _post(srv, key, path, *, headers=None, **kw):
    return httpx.post(srv.base_url + "/api/v1/" + path, headers={"X-API-Key": key, **(headers or {})}, timeout=60,
                      **kw)


def _result(srv, key, request_id):
    r = _post(srv, key, "retrieve_future", json={"request_id": request_id})
    assert r.status_code == 200, r.text
    return r


def _fb_body(model_id: str, seq_id: int, data) -> bytes:
    from tinker.proto.request_conv import forward_backward_request_to_proto

    req = types.ForwardBackwardRequest(forward_backward_input=types.ForwardBackwardInput(
        data=data, loss_fn="cross_entropy"), model_id=model_id, seq_id=seq_id)
    return forward_backward_request_to_proto(req).SerializeToString()


def test_retried_post_is_not_applied_twice(served, service):
    """The SDK resends a POST whose answer was lost: same (model_id, seq_id) and body → same future, one run."""
    srv, keys = served
    key = keys["carol"]
    sc = service("carol")
    tc = resolved(sc.create_lora_training_client(base_model=BASE_MODEL, rank=4))
    mid = tc.get_info().model_id
    data = [datum(tc.get_tokenizer(), TEXTS[1])]
    body = _fb_body(mid, 100, data)
    h = {"Content-Type": "application/x-protobuf"}
    a = _post(srv, key, "forward_backward", content=body, headers=h).json()
    b = _post(srv, key, "forward_backward", content=body, headers=h).json()
    assert a["request_id"] == b["request_id"]
    step = {"model_id": mid, "seq_id": 101, "adam_params": {"learning_rate": 1e-3}, "type": "optim_step"}
    c = _post(srv, key, "optim_step", json=step).json()
    d = _post(srv, key, "optim_step", json=step).json()
    assert c["request_id"] == d["request_id"]
    metrics = _result(srv, key, c["request_id"]).json()["metrics"]
    assert metrics["step"] == 1.0 and metrics["dp_caller_supplied_mu2"] == pytest.approx(1.0)  # counted once
    # the same seq_id with another body is refused (a failed future, never a second step)
    e = _post(srv, key, "optim_step", json={**step, "adam_params": {"learning_rate": 5e-3}}).json()
    err = _result(srv, key, e["request_id"]).json()
    assert err["category"] == "user" and "seq_id" in err["error"]
    # unknown extra fields from a newer SDK are ignored (additive drift)
    f = _post(srv, key, "optim_step", json={**step, "seq_id": 102, "some_future_field": 1}).json()
    assert "error" in _result(srv, key, f["request_id"]).json()  # (nothing accumulated: a user error, not a 4xx)
    ops = audit_ops(srv, key)
    assert ops.count("optim_step") == 1 and ops.count("forward_backward") == 1


def test_other_tenants_ids_answer_like_unknown_ones(served, service):
    srv, keys = served
    sc = service("alice")
    tc = resolved(sc.create_lora_training_client(base_model=BASE_MODEL, rank=4))
    mid = tc.get_info().model_id
    tok = tc.get_tokenizer()
    path = tc.save_state("shared-secret").result().path
    spath = tc.save_weights_for_sampler("s1").result().path
    fut = _post(srv, keys["alice"], "optim_step",
                json={"model_id": mid, "seq_id": 999, "adam_params": {"learning_rate": 1e-3}}).json()["request_id"]
    bob = keys["bob"]

    # get_info: 404 for alice's model exactly as for an unknown one
    mine = _post(srv, bob, "get_info", json={"model_id": mid})
    unknown = _post(srv, bob, "get_info", json={"model_id": "tnb-0000:train:0"})
    assert mine.status_code == unknown.status_code == 404
    assert mine.json()["error"]["message"].replace(mid, "X") == unknown.json()["error"]["message"].replace(
        "tnb-0000:train:0", "X")
    # training on it: a failed future "no model"
    rid = _post(srv, bob, "forward_backward", content=_fb_body(mid, 1, [datum(tok, TEXTS[0])]),
                headers={"Content-Type": "application/x-protobuf"}).json()["request_id"]
    err = _result(srv, bob, rid).json()
    assert err["category"] == "user" and "no model" in err["error"]
    # her futures are not bob's
    assert _post(srv, bob, "retrieve_future", json={"request_id": fut}).status_code == 404
    # her checkpoints, through the SDK: loading or sampling them fails like a missing path
    bsc = service("bob")
    with pytest.raises(Exception) as ei:
        resolved(bsc.create_training_client_from_state_with_optimizer(path))
    assert "no checkpoint" in str(ei.value)
    with pytest.raises(Exception) as ei:
        resolved(bsc.create_sampling_client(model_path=spath))
    assert "no checkpoint" in str(ei.value)
    assert "shared-secret" not in "".join(o or "" for o in audit_ops(srv, bob))


def test_sampling_sessions_share_memory_and_reload(served, service):
    """Only a few sampling sessions per session hold a model copy; an unloaded one reloads on its next sample."""
    sc = service("plain")
    params = types.SamplingParams(max_tokens=3, temperature=0.0)
    prompt = types.ModelInput.from_ints([1, 50, 60, 70])
    samplers = [resolved(sc.create_sampling_client(base_model=BASE_MODEL)) for _ in range(3)]
    first = [s.sample(prompt=prompt, num_samples=1, sampling_params=params).result().sequences[0].tokens
             for s in samplers]
    again = samplers[0].sample(prompt=prompt, num_samples=1, sampling_params=params).result().sequences[0].tokens
    assert again == first[0] == first[2]  # greedy, same base weights: the reloaded sampler answers the same


def test_local_model_folder_as_base_model(served, service):
    """A local Hugging Face folder the operator allows (--allow-model PATH) trains and samples like the embedded one."""
    srv, _ = served
    sc = service("plain")
    tc = resolved(sc.create_lora_training_client(base_model=srv.local_model, rank=2))
    assert tc.get_info().model_data.tokenizer_id == srv.local_model
    tok = tc.get_tokenizer()
    out = tc.forward_backward([datum(tok, "the cat sat on the mat")], "cross_entropy").result()
    assert out.loss_fn_outputs[0]["logprobs"].to_numpy().shape[0] == len(tok.encode("the cat sat on the mat")) - 1
    assert tc.optim_step(types.AdamParams(learning_rate=1e-3)).result().metrics["step"] == 1.0
    with pytest.raises(tinker.RequestFailedError, match="not served here"):
        resolved(sc.create_lora_training_client(base_model=srv.local_model + "-elsewhere", rank=2))
