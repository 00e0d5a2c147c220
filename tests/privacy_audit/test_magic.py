"""``%tinker audit-privacy`` on the notebook's training client (stand-in data, temporary workspace)."""

from __future__ import annotations

import pytest

from tinker_nb import LoRAConfig, ServiceClient, TrainingConfig


@pytest.fixture
def shell(tmp_path):
    from IPython.testing.globalipapp import get_ipython, start_ipython

    ip = start_ipython() or get_ipython()
    ip.run_line_magic("load_ext", "tinker_nb")
    svc = ServiceClient(workspace=tmp_path / "ws")
    tc = svc.create_training_client(TrainingConfig(model_ref="tinker-nb/tiny-llama",
                                                   lora_config=LoRAConfig(rank=4, alpha=8), batch_size=4))
    ip.user_ns["audit_tc"] = tc
    yield ip, tc
    ip.user_ns.pop("audit_tc", None)
    tc.close()


def test_audit_privacy_magic(shell):
    from IPython.core.error import UsageError

    from tinker_nb.privacy_audit import PrivacyAuditResult

    ip, tc = shell
    with pytest.raises(UsageError, match="dataset-size"):
        ip.run_line_magic("tinker", "--client audit_tc audit-privacy --canaries 8")
    with pytest.raises(UsageError, match="inclusion_prob"):
        ip.run_line_magic("tinker", "--client audit_tc audit-privacy --dataset-size 8 --inclusion-prob 1")
    with pytest.raises(UsageError, match="n_canaries"):
        ip.run_line_magic("tinker", "--client audit_tc audit-privacy --dataset-size 8 --canaries 0")
    ledger_before = len(tc.audit_log().to_pandas())
    res = ip.run_line_magic("tinker", "--client audit_tc audit-privacy --dataset-size 8 --canaries 16 --steps 3")
    assert isinstance(res, PrivacyAuditResult) and res.stand_in and res.n_canaries == 16 and res.steps == 3
    assert len(tc.audit_log().to_pandas()) == ledger_before  # the stand-in run leaves the user's ledger alone


def test_audit_privacy_magic_on_real_data_is_charged_to_the_workspace(shell):
    from IPython.core.error import UsageError

    from tinker_nb.engine.demo_data import demo_records

    ip, tc = shell
    with pytest.raises(UsageError, match="not a variable"):
        ip.run_line_magic("tinker", "--client audit_tc audit-privacy --real-data nope")
    ip.user_ns["my_records"] = demo_records(8)
    before = len(tc.audit_log().to_pandas())
    res = ip.run_line_magic("tinker", "--client audit_tc audit-privacy --real-data my_records --canaries 8 --steps 2")
    ip.user_ns.pop("my_records")
    assert not res.stand_in and res.dataset_size == 16 and any("charged" in n for n in res.notes)
    assert len(tc.audit_log().to_pandas()) > before  # the real-data run is in the user's ledger
