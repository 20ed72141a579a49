"""PostgreSQL for the tests: a running server named by ``IOP_TEST_PG_URL``, else a throw-away
cluster started with ``.ci/postgres.sh`` (when PostgreSQL's ``initdb`` is installed), else skip.

Include from ``tests/conftest.py`` with ``from conftest_pg import pg_url, pg_con  # noqa: F401``
(or ``pytest_plugins = ["conftest_pg"]``). Tests that use ``pg_con`` write into their own schema.
"""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

_SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "postgres.sh"


def _have_initdb() -> bool:
    return bool(shutil.which("initdb") or glob.glob("/usr/lib/postgresql/*/bin/initdb"))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def pg_url():
    """URL of a PostgreSQL database the tests may write to (skips when there is none)."""
    pytest.importorskip("psycopg")
    url = os.environ.get("IOP_TEST_PG_URL")
    if url:
        yield url
        return
    if not _have_initdb():
        msg = "PostgreSQL not available: set IOP_TEST_PG_URL or install the Debian postgresql package"
        if os.environ.get("CI"):  # .ci/run installs it: never skip there
            pytest.fail(msg)
        pytest.skip(msg)
    env = dict(os.environ, IOP_PG_PORT=str(_free_port()),
               IOP_PG_DIR=tempfile.mkdtemp(prefix="iop-research-pg-"))
    proc = subprocess.run(["bash", str(_SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=180,
                          check=False)
    if proc.returncode != 0:
        log = Path(env["IOP_PG_DIR"]) / "server.log"
        detail = log.read_text() if log.exists() else ""
        subprocess.run(["bash", str(_SCRIPT), "stop"], env=env, capture_output=True, timeout=120, check=False)
        pytest.fail(f".ci/postgres.sh start failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n{detail}")
    try:
        yield proc.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run(["bash", str(_SCRIPT), "stop"], env=env, capture_output=True, timeout=120, check=False)


@pytest.fixture(scope="session")
def pg_con(pg_url):
    """An Ibis PostgreSQL backend on :func:`pg_url`."""
    ibis = pytest.importorskip("ibis")
    con = ibis.connect(pg_url)
    yield con
    con.disconnect()
