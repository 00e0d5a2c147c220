"""One real DP training run packaged for two recipients, shared by the TGSP tests (built once per session)."""

from __future__ import annotations

import pytest

from .helpers import make_run


@pytest.fixture(scope="session")
def built(tiny_model, tmp_path_factory):
    return make_run(tiny_model, tmp_path_factory.mktemp("tgsp"))
