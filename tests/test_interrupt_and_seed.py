"""Issue 12: interrupt stops training (backpressure + cancel), and the seed README's quick start runs as written
(only the import and the model changed)."""

from __future__ import annotations

import _thread
import threading
import time

import pytest

from tinker_nb import DPConfig, LoRAConfig, ServiceClient, TrainingConfig

RECORDS = [f"note {i}: the patient in room {i % 7} reports pain level {i % 5}" for i in range(60)]


def test_interrupt_stops_the_loop_cancels_queued_work_and_leaves_a_clean_client(tiny_model, tmp_path):
    svc = ServiceClient(tmp_path / "ws", passphrase="p")
    tc = svc.create_training_client(TrainingConfig(
        model_ref=tiny_model, lora_config=LoRAConfig(rank=2, alpha=4, target_modules=("q_proj",)),
        dp_config=DPConfig(noise_multiplier=1.0, target_epsilon=50.0, target_delta=1e-3), batch_size=4))
    tc.attach_dataset(RECORDS)
    events = []
    fired = threading.Event()

    def on_step(kind, payload):
        if payload.get("step") == 5 and not fired.is_set():
            fired.set()
            _thread.interrupt_main()  # what the notebook's stop button does

    tc.events.subscribe(on_step, kind="step")
    tc.events.subscribe(lambda k, p: events.append(p), kind="interrupt")
    ran = 0
    with pytest.raises(KeyboardInterrupt):
        for d in tc.poisson_batches(steps=300):
            tc.forward_backward(d)
            tc.optim_step()
            ran += 1
        time.sleep(30)  # (never reached: the interrupt lands in the loop)
    assert ran < 20, "backpressure: the loop cannot queue the whole run"
    t0 = time.perf_counter()
    m = tc.get_dp_metrics()
    assert time.perf_counter() - t0 < 10
    assert 5 <= m.steps < 20
    assert m.dataset_steps - m.steps in (0, 1)  # a cancelled draw is never sampled nor charged
    assert events and "cancelled" in events[-1] and events[-1]["step"] >= 5
    # the client is usable afterwards
    d = next(tc.poisson_batches(steps=1))
    tc.forward_backward(d)
    assert tc.optim_step().result().step == m.steps + 1
    tc.close()


def test_seed_readme_quick_start(tmp_path):
    """The seed README's snippets with only the import and the model changed (embedded model)."""
    from tinker_nb import ServiceClient, TrainingConfig, LoRAConfig, DPConfig  # noqa: I001 - as in the seed

    service = ServiceClient()
    tc = service.create_training_client(TrainingConfig(
        model_ref="tinker-nb/tiny-llama",
        lora_config=LoRAConfig(rank=16, alpha=32, dropout=0.05, target_modules=["q_proj", "v_proj"]),
        dp_config=DPConfig(noise_multiplier=1.0, max_grad_norm=1.0, target_epsilon=8.0, target_delta=1e-5),
        batch_size=8,
    ))
    tok = tc.get_tokenizer()
    assert tc.tokenizer is tok
    enc = tok(["The patient was admitted with chest pain.", "Follow-up in two weeks."], padding=True)
    batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
             "labels": enc["input_ids"]}
    future = tc.forward_backward(batch)
    result = future.result()
    assert result.loss > 0 and result.tokens_processed > 0
    tc.optim_step().result()
    metrics = tc.get_dp_metrics()
    assert metrics.epsilon_spent > 0 and metrics.total_epsilon == metrics.epsilon_spent
    assert metrics.sampling == "caller-supplied" and not metrics.accounting_valid  # honest: caller batches
    samples = tc.sample(prompts=["The patient"], max_tokens=16, temperature=0.7, top_p=0.9, top_k=50)
    assert samples.samples[0].finish_reason in ("stop", "length")
    result = tc.save_state(include_optimizer=True, metadata={"epoch": 1})
    assert result.artifact_id and result.encrypted
    assert result.encryption.algorithm.startswith("AES-256-GCM")
    assert result.content_hash == result.content_sha256
    loaded = tc.load_state(result.artifact_id)
    assert loaded.artifact_id == result.artifact_id
    assert tc.audit_log().verify().ok
    tc.close()


def test_training_attach_and_sampling_tokenise_a_text_the_same_way(tiny_model, tmp_path):
    """One tokenisation rule: a text trains with the same ids whether attached or passed, and a prompt is its prefix."""
    from tinker_nb.engine.batches import to_batch

    svc = ServiceClient(tmp_path / "ws", passphrase="p")
    tc = svc.create_training_client(TrainingConfig(model_ref=tiny_model, dp_config=None, batch_size=1,
                                                   lora_config=LoRAConfig(rank=2, alpha=4, target_modules=("q_proj",))))
    s = tc.session
    text = "the cat sat on the mat"
    s.attach_dataset([text])
    attached = s.source.examples([0])[0]["input_ids"]
    passed = to_batch([text], tokenizer=s.tokenizer, vocab_size=s.vocab_size, max_len=s.max_len,
                      encode=s.encode_text).input_ids[0].tolist()
    prompt = s.encode_text(text, for_training=False)
    assert attached == passed
    assert attached[: len(prompt)] == prompt and attached[len(prompt):] == [s.tokenizer.eos_token_id]
    tc.close()
