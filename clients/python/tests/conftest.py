"""The client's tests run against a real zmixd: the build's ($ZMIXD, $ZMIX)."""

import os

import pytest

from zmixd_fixture import Daemon

ZMIXD = os.environ.get("ZMIXD", "")
ZMIX = os.environ.get("ZMIX", "")


@pytest.fixture(scope="session")
def daemon(tmp_path_factory):
    if not ZMIXD or not ZMIX:
        pytest.skip("ZMIXD and ZMIX (the build's binaries) not set: run through ctest")
    d = Daemon(ZMIXD, ZMIX, tmp_path_factory.mktemp("zmixd"))
    yield d
    assert d.stop() == 0


@pytest.fixture
def clean_env(monkeypatch):
    for k in ("ZMIX_ADDR", "ZMIX_TOKEN_FILE"):
        monkeypatch.delenv(k, raising=False)
    return monkeypatch
