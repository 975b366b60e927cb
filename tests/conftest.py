"""Shared fixtures: one real local Ray per session, a real S3 endpoint, the devcorpus.

Nothing here is mocked: Ray is a real local cluster, S3 is moto's HTTP server on
127.0.0.1 reached through s3fs/pyarrow like any S3-compatible store.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DEVCORPUS = REPO_ROOT.parent / "shared" / "data" / "devcorpus"

# Keep TensorFlow and Ray quiet and on the CPU in tests; CI has no GPU.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
# Ray Train V2: the default in Ray 2.60 (V1 is deprecated); Tune trainables report with
# ray.tune.report, which V2 requires.
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
# A loaded 2-core CI box can take over a minute to start a raylet; Ray's default wait is 60 s.
os.environ.setdefault("RAY_raylet_start_wait_time_s", "240")
# Ray starts its workers at niceness 15 (ray#24928: to leave the GCS and raylet CPU), so on
# a machine busy with other work at niceness 0 they get ~3 % of a core and the suite's Ray
# steps take 30x longer (seen under two busy loops: test_extract ran ~20 min). The tests
# check behaviour, not who yields: their workers compete at the default priority.
os.environ.setdefault("RAY_worker_niceness", "0")
#: How long the ``ray_head`` fixture's ``ray start --head`` may take to answer.
HEAD_START_S = 300


@pytest.fixture(scope="session")
def ray_session(s3_server):
    """One local Ray for the whole test session (starting Ray costs seconds).

    Depends on ``s3_server`` so that Ray's workers inherit the S3 endpoint variables,
    whatever order tests ask for the two fixtures in.
    """
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",  # never join a `ray start` cluster another test left running
            num_cpus=2,
            include_dashboard=False,
            configure_logging=False,
            log_to_driver=False,
            runtime_env={"env_vars": {"TF_CPP_MIN_LOG_LEVEL": "2"}},
        )
    yield ray
    # Left running on purpose until interpreter exit: other session fixtures may use it.


@pytest.fixture(scope="session")
def devcorpus() -> Path:
    if not (DEVCORPUS / "manifest.csv").exists():
        pytest.skip(f"devcorpus not found at {DEVCORPUS} (../shared is absent in this checkout)")
    return DEVCORPUS


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server over real HTTP on 127.0.0.1; yields its endpoint URL.

    The AWS_* variables are set in this process before Ray starts workers, so Ray
    workers inherit them too.
    """
    from spoofray.testing.s3_server import start_moto_server

    port = _free_port()
    server = start_moto_server(port)
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in _S3_ENV}
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing-key-id",
            "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    yield endpoint
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


_S3_ENV = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")


@pytest.fixture
def s3_bucket(s3_server) -> str:
    """A fresh, empty bucket; yields ``s3://<name>``."""
    import s3fs

    name = f"test-{uuid.uuid4().hex[:12]}"
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server})
    fs.mkdir(name)
    return f"s3://{name}"


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory, s3_server):
    """A real Ray head started with ``ray start --head`` on 127.0.0.1, for ``ray job submit``.

    Started with ``--block`` in its own process group so that teardown stops exactly this
    head (``ray stop`` would also stop every other Ray on the machine). Yields the
    dashboard address for ``ray job submit --address``.
    """
    import shutil
    import signal
    import subprocess
    import sys
    import urllib.error
    import urllib.request

    from spoofray.testing.waiting import WaitAborted, WaitTimeout, process_exited, wait_for

    ray_cli = shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray")
    ports = {name: _free_port() for name in ("gcs", "dashboard", "client", "agent")}
    log = open(tmp_path_factory.mktemp("ray-head") / "head.log", "w")
    proc = subprocess.Popen(
        [ray_cli, "start", "--head", "--block", "--node-ip-address=127.0.0.1",
         "--dashboard-host=127.0.0.1", "--num-cpus=2", f"--port={ports['gcs']}",
         f"--dashboard-port={ports['dashboard']}", f"--ray-client-server-port={ports['client']}",
         f"--dashboard-agent-listen-port={ports['agent']}", "--include-dashboard=true",
         "--disable-usage-stats"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=_head_env(),
    )
    address = f"http://127.0.0.1:{ports['dashboard']}"

    def dashboard_answer() -> str:
        try:
            urllib.request.urlopen(f"{address}/api/version", timeout=5)
            return "answered"
        except urllib.error.HTTPError as exc:  # answering (token auth says 401): it is up
            return f"answered {exc.code}"
        except OSError as exc:
            return f"not yet: {exc}"

    try:
        # A head with its dashboard: seconds when quiet, minutes on a busy machine.
        wait_for(dashboard_answer, timeout_s=HEAD_START_S, poll_s=1,
                 what=f"answer from the test head's dashboard at {address}",
                 until=lambda seen: seen.startswith("answered"),
                 abort_if=process_exited(proc, log.name))
    except (WaitTimeout, WaitAborted):
        if proc.poll() is None:  # never leave a half-started head behind
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
        raise
    yield address
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()


def _head_env() -> dict[str, str]:
    """The head's environment: this venv's ``python`` first on PATH, as on a cluster node
    whose image has spoofray's dependencies installed."""
    import sys

    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


@pytest.fixture(scope="session")
def submit_job(ray_head):
    """``submit_job(entrypoint, timeout=600)``: ``ray job submit --working-dir <repo>`` to the
    test head (``ray_head``); returns the CompletedProcess, with the ANSI colour codes of the
    Ray CLI stripped from its stdout and stderr."""
    import re
    import shutil
    import subprocess
    import sys

    ray_cli = shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray")
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_ADDRESS": ray_head}

    def submit(entrypoint: list[str], *, timeout: float = 600) -> subprocess.CompletedProcess:
        run = subprocess.run(
            [ray_cli, "job", "submit", "--address", ray_head, "--working-dir", str(REPO_ROOT),
             "--", *entrypoint],
            capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO_ROOT,
        )
        run.stdout, run.stderr = (re.sub(r"\x1b\[[0-9;]*m", "", text)
                                  for text in (run.stdout, run.stderr))
        return run

    return submit


@pytest.fixture(scope="session")
def record(tmp_path_factory):
    """``record(name, outcome)``: keep what a reliability test measured.

    Writes ``<dir>/<name>.json`` (``$SPOOFRAY_RELIABILITY_DIR``, default
    ``<basetemp>/reliability``), from which docs/reliability.md is generated, and prints it
    into the test log. Returns the path.
    """
    from spoofray.testing import reliability

    directory = os.environ.get("SPOOFRAY_RELIABILITY_DIR") or str(
        tmp_path_factory.getbasetemp() / "reliability")

    def write(name: str, outcome: dict) -> str:
        path = reliability.write_record(directory, name, outcome)
        print(f"reliability record {path}:\n{json.dumps(outcome, indent=1, default=str)}")
        return path

    return write
