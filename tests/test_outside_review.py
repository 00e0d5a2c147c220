"""Issue 12, outside review of the Python API and the CLI: bad input is a TinkerError (or a documented
exit code), a refused call changes nothing, results print readably, CLI advice is said once in CLI terms."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tinker_nb import ConfigError, DPConfig, LoRAConfig, ServiceClient, TrainingConfig
from tinker_nb.cli import EXIT_USAGE, main

VEC = Path(__file__).resolve().parent / "vectors" / "tgsp"
RECORDS = [f"note {i}: the patient in room {i % 7} reports pain level {i % 5}" for i in range(40)]
LONG_FLOAT = re.compile(r"\d\.\d{7,}")


def test_a_workspace_that_cannot_be_created_is_a_config_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="cannot create the workspace"):
        ServiceClient(blocker / "ws", passphrase="pw")
    assert blocker.read_text() == "x"


def test_an_unknown_setting_is_a_config_error_and_creates_no_client(tmp_path):
    svc = ServiceClient(tmp_path / "ws", passphrase="pw")
    with pytest.raises(ConfigError, match="unknown TrainingConfig setting 'bogus'"):
        svc.create_training_client(model_ref="tinker-nb/tiny-llama", bogus=1)
    assert svc.training_clients() == []


@pytest.fixture
def tc(tiny_model, tmp_path):
    svc = ServiceClient(tmp_path / "ws", passphrase="pw")
    c = svc.create_training_client(TrainingConfig(
        model_ref=tiny_model, lora_config=LoRAConfig(rank=2, alpha=4, target_modules=("q_proj",)),
        dp_config=DPConfig(noise_multiplier=1.0, target_epsilon=50.0, target_delta=1e-3), batch_size=4))
    c.attach_dataset(RECORDS)
    yield c
    c.close()


def test_samples_print_their_text_not_a_dataclass_dump(tc):
    r = tc.sample(["the patient", "note 3:"], max_tokens=6, num_samples=1)
    text = repr(r)
    for s in r.samples:
        assert repr(s.completion) in text
        one = repr(s)
        assert repr(s.completion) in one and "tokens=[" not in one, one
    html = r._repr_html_()
    assert "<table" in html and "the patient" in html


def test_results_show_times_as_dates_not_epoch_floats(tc):
    d = next(tc.poisson_batches(steps=1))
    tc.forward_backward(d)
    tc.optim_step()
    res = tc.save_state()
    assert "e+09" not in repr(res) and not LONG_FLOAT.search(repr(res)), repr(res)
    assert re.search(r"created=\S*20\d\d-\d\d-\d\d", repr(res)), repr(res)
    assert isinstance(res.created, float)  # the value itself is unchanged
    assert "e+09" not in res._repr_html_()


def test_cli_package_of_an_unknown_artifact_gives_its_advice_once(tmp_path, monkeypatch, capsys):
    ws = tmp_path / "ws"
    ServiceClient(ws, passphrase="pw").list_checkpoints()  # an existing workspace and tenant
    monkeypatch.setenv("TINKER_NB_WORKSPACE_PASSPHRASE", "pw")
    assert main(["package", "nope", "--workspace", str(ws), "--recipient", str(VEC / "recipient.pub"),
                 "--out", str(tmp_path / "x.tgsp")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.count("tinker-nb checkpoints") == 1, err
    assert "list_checkpoints" not in err and "CLI:" not in err
    assert not (tmp_path / "x.tgsp").exists()


def test_attach_and_package_results_print_readably(tiny_model, tmp_path):
    from tinker_nb.security.kem import RecipientIdentity

    svc = ServiceClient(tmp_path / "ws", passphrase="pw")
    tc = svc.create_training_client(TrainingConfig(
        model_ref=tiny_model, lora_config=LoRAConfig(rank=2, alpha=4, target_modules=("q_proj",)),
        dp_config=DPConfig(target_epsilon=5.0, target_delta=1e-3), batch_size=4, epochs=1))  # σ calibrated
    info = tc.attach_dataset(RECORDS[:30])
    assert info["records"] == 30 and info.records == 30
    assert not LONG_FLOAT.search(repr(info)), repr(info)
    assert repr(info).startswith("DatasetInfo(") and "<caption>DatasetInfo</caption>" in info._repr_html_()
    d = next(tc.poisson_batches(steps=1))
    tc.forward_backward(d)
    tc.optim_step()
    m = tc.package(tmp_path / "m.tgsp", recipients=[RecipientIdentity.generate().public_key()])
    assert m["format"] == "tgsp/v1" and m.format == "tgsp/v1"
    assert not LONG_FLOAT.search(repr(m)), repr(m)
    assert repr(m).startswith("PackageManifest(")
    tc.close()


def test_cli_output_into_a_missing_folder_is_a_usage_error(tmp_path, monkeypatch, capsys):
    ws = tmp_path / "ws"
    ServiceClient(ws, passphrase="pw").rotate_keys()  # signs a ledger checkpoint with the workspace identity
    monkeypatch.setenv("TINKER_NB_WORKSPACE_PASSPHRASE", "pw")
    missing = tmp_path / "no" / "such"
    for argv in (["pubkey", "--workspace", str(ws), "--out", str(missing / "ws.pub")],
                 ["audit", "checkpoint", "--workspace", str(ws), "--out", str(missing / "head.json")]):
        assert main(argv) == EXIT_USAGE, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "does not exist" in err and "Errno" not in err, err
    assert not missing.exists()


def test_forward_result_prints_short_floats(tc):
    r = tc.forward(["the patient in room 3 reports pain", "note 1"])
    assert not LONG_FLOAT.search(repr(r)), repr(r)
    assert len(r.logprobs[0]) > 3 and isinstance(r.logprobs[0][0], float)  # the values themselves are full precision


def test_bad_loop_dashboard_batch_and_sample_arguments_are_tinker_errors_that_change_nothing(tc):
    from tinker_nb import DataError, TinkerError

    before = (tc.get_dp_metrics().dataset_steps, tc.service.ledger.head_info()[0])
    with pytest.raises(ConfigError, match="not both"):
        tc.poisson_batches(steps=2, epochs=1)
    with pytest.raises(ConfigError, match="epochs"):
        tc.planned_steps(-1)
    for bad in ("abc", -3, 0, 2.5, True):
        with pytest.raises(ConfigError, match="total_steps"):
            tc.dashboard(total_steps=bad)
    for batch in ({"input_ids": [[1.5, 2]]}, [{"input_ids": [1.5, 2]}]):
        with pytest.raises(DataError, match="integer"):
            tc.forward_backward(batch).result()
    for stop in (5, [5], [""]):
        with pytest.raises(TinkerError, match="stop"):
            tc.sample(["hi"], stop=stop)
    assert (tc.get_dp_metrics().dataset_steps, tc.service.ledger.head_info()[0]) == before
    assert tc.get_dp_metrics().steps == 0
