"""One torch thread for the audit tests: on shared CPUs, intra-op threads oversubscribe and a run gets ~10x slower."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
