"""Node loss: a real two-node Ray cluster on 127.0.0.1 loses its second node's raylet in
the middle of a scoring run; the run must still finish with every input exactly once and
the same scores as an undisturbed run on the same cluster.

Each node is a ``ray start --block`` process in its own process group on free ports
(never ``ray stop``: that would stop every Ray on the machine). Drivers are the real job
script (``jobs/score_archive.py``) run as subprocesses with ``--address``: this test
session has its own local Ray (``ray_session``), which never joins this cluster.
The raylet is killed only once a worker process on that node is busy with a pipeline
task, and the test checks the driver was still running at that moment.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from spoofray.testing.processes import descendants, group_members
from spoofray.testing.waiting import WaitAborted, WaitTimeout, process_exited, wait_for


REPO = Path(__file__).resolve().parents[1]
N_FILES = 2000
RAY = shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray")
#: Node-death detection in 5-10 s, not the default half-minute, yet tolerant of a raylet
#: that a loaded 2-core machine leaves unscheduled for a few seconds.
FAST_HEALTH = {"RAY_health_check_initial_delay_ms": "1000", "RAY_health_check_period_ms": "1000",
               "RAY_health_check_timeout_ms": "2000", "RAY_health_check_failure_threshold": "5"}

#: Deadlines, each for one step on a loaded 2-core machine. A ``ray start`` node seen
#: alive: issue #30 saw a second node not alive within 180 s at load ~5.
NODE_START_S = 300
#: A driver's first task reaching the second node (the job connects, lists the archive,
#: plans): 12 s, and 3 report parts 16 s, in the run of docs/reliability.md.
FIRST_TASK_S = 300
#: A scoring job of the whole archive on this cluster: 21-23 s in that run.
JOB_S = 900
#: Starts of one node before the test gives up (seen at load ~20: a raylet that died
#: waiting for its dashboard agent, and a port taken by another of the node's components).
NODE_ATTEMPTS = 3
#: The whole node group going after SIGTERM (it drains for up to 30 s), then after SIGKILL.
NODE_DRAIN_S, NODE_GONE_S = 5, 60

#: Worker ports per node.
WORKER_PORTS = 60

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _free_ports(count: int, *, avoid: set[int]) -> list[int]:
    """``count`` distinct free ports, none of them in ``avoid`` (a node's worker range, its
    GCS port): Ray refuses to start a node two of whose components share a port."""
    out: list[int] = []
    while len(out) < count:
        port = _free_port()
        if port not in avoid and port not in out:
            out.append(port)
    return out


def _free_range(width: int, *, avoid: set[int]) -> int:
    """Start of ``width`` consecutive free ports (worker ports of one node, apart from the
    default range every other local Ray on this machine draws from), none in ``avoid``."""
    for _ in range(200):
        base = random.randrange(30_000, 60_000 - width)
        if avoid & set(range(base, base + width)):
            continue
        ok = True
        for port in range(base, base + width):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port range")


class Node:
    """One ``ray start --block`` process (head or worker) in its own process group."""

    def __init__(self, *, head_port: int, temp_dir: str, log: Path, head: bool,
                 num_cpus: int = 2) -> None:
        base = _free_range(WORKER_PORTS, avoid={head_port})
        names = ["node-manager-port", "object-manager-port", "dashboard-agent-grpc-port",
                 "dashboard-agent-listen-port", "metrics-export-port", "runtime-env-agent-port"]
        if head:  # the (headless) dashboard too: its default 8265 is any other Ray's
            names += ["ray-client-server-port", "dashboard-port"]
        ports = dict(zip(names, _free_ports(len(names), avoid={head_port, *range(
            base, base + WORKER_PORTS)})))
        cmd = [RAY, "start", "--block", "--node-ip-address=127.0.0.1", f"--num-cpus={num_cpus}",
               "--object-store-memory=200000000", "--disable-usage-stats",
               f"--min-worker-port={base}", f"--max-worker-port={base + WORKER_PORTS - 1}",
               *[f"--{k}={v}" for k, v in ports.items()]]
        if head:
            cmd += ["--head", f"--port={head_port}", "--include-dashboard=false",
                    f"--temp-dir={temp_dir}"]
        else:
            cmd += [f"--address=127.0.0.1:{head_port}"]
        # Token auth (Ray's default for new clusters): a joining node must ask for it too;
        # the token is ~/.ray/auth_token.
        env = {**os.environ, **FAST_HEALTH, "RAY_AUTH_MODE": "token",
               "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
        env.pop("RAY_ADDRESS", None)
        self.log = open(log, "w")
        self.started = time.monotonic()
        #: Seconds from ``ray start`` to this node seen alive (set by :func:`_start_node`).
        self.up_after_s: float | None = None
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True, env=env)

    def raylet_pid(self) -> int | None:
        for pid in descendants(self.proc.pid):
            if _cmdline(pid).split(" ", 1)[0].endswith("/raylet"):
                return pid
        return None

    def ray_workers(self) -> list[str]:
        """Titles of this node's worker processes (Ray sets a worker's process title to
        ``ray::<what it runs>``, ``ray::IDLE`` between tasks)."""
        titles = [_cmdline(pid) for pid in descendants(self.proc.pid)]
        return [t for t in titles if t.startswith("ray::")]

    def stop(self) -> None:
        """Stop every process of this node: the whole process group, even when ``ray start``
        itself already exited (its agents are then orphans, but still in the group)."""
        pgid = self.proc.pid
        for sig, grace_s in ((signal.SIGTERM, NODE_DRAIN_S), (signal.SIGKILL, NODE_GONE_S)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            try:
                wait_for(lambda: group_members(pgid), timeout_s=grace_s, poll_s=0.2,
                         until=lambda members: not members,
                         what=f"end of node group {pgid} after {sig.name}")
                break
            except WaitTimeout:
                if sig == signal.SIGKILL:
                    raise
        self.proc.wait()
        self.log.close()

    def log_tail(self, chars: int = 3000) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-chars:]


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


#: Run by :func:`_node_table` in a subprocess (this session has its own local Ray).
NODE_TABLE = ("import json, ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
              "print(json.dumps([[n['NodeID'][:8], n['NodeManagerPort'], n['Alive']] "
              "for n in ray.nodes()]))")


def _node_table(address: str) -> list | str:
    """``[[node id prefix, node manager port, alive], ...]`` of the cluster at ``address``,
    or what went wrong asking (a GCS still starting refuses the client)."""
    try:
        run = subprocess.run([sys.executable, "-c", NODE_TABLE, address], capture_output=True,
                             text=True, timeout=120, env=_driver_env())
    except subprocess.TimeoutExpired:
        return "the node query itself took over 120 s"
    if run.returncode == 0 and run.stdout.strip():
        try:
            return json.loads(run.stdout.strip().splitlines()[-1])
        except ValueError:
            pass
    return f"node query exit {run.returncode}: {run.stderr.strip()[-600:]}"


def _wait_nodes(address: str, count: int, node: Node) -> list:
    """Until ``count`` nodes of the cluster at ``address`` are alive, ``node`` (the one just
    started) still running; returns the node table."""
    exited = process_exited(node.proc, node.log.name)
    raylets: set[int] = set()

    def node_failed() -> str | None:
        # A raylet that dies while starting (on a busy machine: it waits only 15 s for its
        # dashboard agent) leaves `ray start` waiting for it for minutes: give up at once.
        raylet = node.raylet_pid()
        if raylet is not None:
            raylets.add(raylet)
        elif raylets:
            return f"its raylet {min(raylets)} exited; ray start's log ends:\n{node.log_tail()}"
        return exited()

    return wait_for(lambda: _node_table(address), timeout_s=NODE_START_S, poll_s=2,
                    what=f"{count} live nodes in the cluster at {address}",
                    until=lambda t: isinstance(t, list) and sum(n[2] for n in t) == count,
                    abort_if=node_failed)


def _start_node(nodes: list[Node], live_after: int, logs: Path, name: str, *, temp_dir: str,
                head_port: int | None = None) -> tuple[Node, str]:
    """Start a head (``head_port`` None) or a worker of the head at ``head_port``; return
    it and the cluster address once ``live_after`` nodes are alive. A node that dies or is
    not up by the deadline (a port taken between choosing and binding it; a raylet that
    gave up on its agent under load) is replaced, on fresh ports, up to NODE_ATTEMPTS
    times; every failure is reported if the last one fails too."""
    failures = []
    for attempt in range(NODE_ATTEMPTS):
        port = head_port or _free_port()
        address = f"127.0.0.1:{port}"
        node = Node(head_port=port, temp_dir=temp_dir, head=head_port is None,
                    log=logs / f"{name}-{attempt}.log")
        nodes.append(node)
        try:
            _wait_nodes(address, live_after, node)
            node.up_after_s = round(time.monotonic() - node.started, 1)
            return node, address
        except WaitAborted as exc:  # the node's process exited: its log is in the message
            failures.append(f"{name}-{attempt}: {exc}")
        except WaitTimeout as exc:
            failures.append(f"{name}-{attempt}: {exc}; its log ends:\n{node.log_tail()}")
        nodes.remove(node)
        node.stop()
        print(f"node {name}, attempt {attempt + 1} of {NODE_ATTEMPTS}: {failures[-1]}")
    raise RuntimeError("\n\n".join(failures))


def _driver_env() -> dict[str, str]:
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    return env


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head node; tests add (and lose) second nodes with ``add_node``."""
    logs = tmp_path_factory.mktemp("cluster")
    # Short: Unix socket paths under the temp dir must stay below ~107 bytes.
    temp_dir = tempfile.mkdtemp(prefix="rnl-", dir="/tmp")
    nodes: list[Node] = []

    def add_node(name: str) -> Node:
        return _start_node(nodes, 2, logs, name, temp_dir=temp_dir, head_port=head_port)[0]

    try:
        _, address = _start_node(nodes, 1, logs, "head", temp_dir=temp_dir)
        head_port = int(address.rsplit(":", 1)[1])
        yield address, add_node, logs
    finally:
        for node in reversed(nodes):
            node.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """``N_FILES`` distinct 0.5-1 s clips at 8 kHz (about 20 MB, a few seconds to write)."""
    from spoofray.testing.archives import write_many_clips

    return write_many_clips(tmp_path_factory.mktemp("archive"), N_FILES, seed=0,
                            duration_range_s=(0.5, 1.0), files_per_folder=200, n_harmonics=8)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from spoofray.config import AudioConfig, FeatureConfig
    from spoofray.models.assemble import AssembleConfig, assemble_bundle
    from spoofray.testing.datasets import synthetic_features
    from spoofray.testing.members import save_ml_member, train_ml

    tmp = tmp_path_factory.mktemp("nl-bundle")
    cfg = FeatureConfig(audio=AudioConfig(window_s=1.0, hop_s=1.0), kinds=("logmel",), n_mels=16,
                        n_mfcc=13)
    feats, y = synthetic_features(cfg, 40)
    model = train_ml(feats, y, inputs=("logmel_pooled",))
    member = save_ml_member(model, tmp / "tune", cfg, inputs=("logmel_pooled",))
    return assemble_bundle(AssembleConfig(members=(member,), output=str(tmp / "b")))["uri"]




def _start_job(job: str, args: list[str], log: Path) -> subprocess.Popen:
    fh = open(log, "w")
    return subprocess.Popen([sys.executable, str(REPO / "jobs" / job), *args], cwd=REPO,
                            env=_driver_env(), stdout=fh, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen, log: Path, timeout: float = JOB_S) -> str:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"{proc.args[1]} did not finish within {timeout:.0f} s; its "
                             f"log ends:\n{log.read_text()[-4000:]}") from None
    text = log.read_text()
    assert proc.returncode == 0, text[-4000:]
    return text


def _run_and_kill(job: str, args: list[str], node: Node, task: str, log: Path) -> dict:
    """Start ``job``; once ``node`` runs a ``task`` task, SIGKILL its raylet."""
    proc = _start_job(job, args, log)
    started = time.monotonic()
    # The last look is the node's Ray workers: idle ones, or none at all, tell apart a run
    # that schedules elsewhere from a node that never got workers.
    try:
        workers = wait_for(node.ray_workers, timeout_s=FIRST_TASK_S, poll_s=0.1,
                           abort_if=process_exited(proc, log),
                           what=f"a {task} task on the second node",
                           until=lambda titles: any(task in t for t in titles))
    except BaseException:
        proc.kill()  # never leave the driver behind a failed wait
        proc.wait()
        raise
    busy = [t for t in workers if task in t]
    raylet = node.raylet_pid()
    assert raylet is not None
    os.kill(raylet, signal.SIGKILL)
    killed_at = time.monotonic() - started
    still_running = proc.poll() is None
    text = _finish(proc, log)
    return {"killed_after_s": round(killed_at, 1), "busy_on_node": busy,
            "driver_running_at_kill": still_running,
            "wall_s": round(time.monotonic() - started, 1),
            # Ray's own account, forwarded to the driver log (informational).
            "tasks_retried_by_ray": text.count("node it was running on is dead")}


def _accounting(listed: set[str], rows: list[str]) -> dict:
    return {"inputs": len(listed), "rows": len(rows),
            "duplicates": len(rows) - len(set(rows)), "missing": len(listed - set(rows)),
            "unexpected": len(set(rows) - listed)}




def test_scoring_survives_losing_a_node(cluster, archive, bundle, tmp_path, record):
    from spoofray import reports, sources

    address, add_node, logs = cluster
    listed = {it.uri for it in sources.list_audio(archive)}
    node = add_node("worker-score")
    out = str(tmp_path / "reports")
    common = ["--address", address, "--input", archive, "--output", out, "--bundle", bundle,
              "--files-per-task", "50", "--batch-size", "100", "--featurize-memory-mb", "64",
              "--no-plots"]
    started = time.monotonic()
    _finish(_start_job("score_archive.py", [*common, "--run-id", "clean"],
                       logs / "score-clean.log"), logs / "score-clean.log")
    clean_wall_s = round(time.monotonic() - started, 1)
    kill = _run_and_kill("score_archive.py", [*common, "--run-id", "lost"], node,
                         "score_files_batch", logs / "score-lost.log")
    assert kill["driver_running_at_kill"], kill

    report = reports.read_report(os.path.join(out, "run_id=lost")).sort_values("uri")
    clean = reports.read_report(os.path.join(out, "run_id=clean")).sort_values("uri")
    counts = _accounting(listed, report["uri"].tolist())
    assert counts["duplicates"] == counts["missing"] == counts["unexpected"] == 0, counts
    assert report["uri"].tolist() == clean["uri"].tolist()
    assert report["status"].tolist() == clean["status"].tolist()
    np.testing.assert_array_equal(report["spoof_score"].to_numpy(),
                                  clean["spoof_score"].to_numpy())
    assert report["predicted_label"].tolist() == clean["predicted_label"].tolist()
    assert os.path.exists(os.path.join(out, "run_id=lost", "_SUCCESS"))
    assert sorted(os.listdir(out)) == ["run_id=clean", "run_id=lost"]
    ok = int((report["status"] == "ok").sum())
    assert ok == N_FILES
    record("node_loss_scoring", {
        "fault": f"raylet of the second node of a 2-node cluster SIGKILLed "
                 f"{kill['killed_after_s']} s into scoring {len(listed)} files, while it ran "
                 f"{len(kill['busy_on_node'])} task(s)",
        "outcome": f"completed in {kill['wall_s']} s (undisturbed: {clean_wall_s} s) with "
                   f"_SUCCESS; Ray retried "
                   f"{kill['tasks_retried_by_ray']} task(s) lost with the node; statuses, "
                   "labels and spoof scores identical to the undisturbed run",
        "counts": {**counts, "ok": ok, "errors": len(report) - ok},
        "second_node_up_after_s": node.up_after_s})


def test_scoring_resumes_after_losing_the_head(archive, bundle, tmp_path, record):
    """Head loss: the head node of a fresh 2-node cluster (GCS, its raylet, the driver on
    it) is SIGKILLed mid-run. Ray without GCS fault tolerance cannot take the worker back,
    so both nodes are started afresh; the same --run-id with --resume must publish every
    input exactly once, with the scores of an undisturbed run, scoring only the rest."""
    import pandas as pd

    from spoofray import reports, sources

    listed = {it.uri for it in sources.list_audio(archive)}
    logs, out = tmp_path / "logs", tmp_path / "reports"
    logs.mkdir()
    common = ["--input", archive, "--output", str(out), "--bundle", bundle,
              "--files-per-task", "50", "--batch-size", "50", "--featurize-memory-mb", "64",
              "--part-every-s", "0", "--no-plots"]
    nodes: list[Node] = []
    temp_dirs: list[str] = []
    proc = None

    def start_cluster(name: str) -> str:
        temp_dir = tempfile.mkdtemp(prefix="rhl-", dir="/tmp")
        temp_dirs.append(temp_dir)
        _, address = _start_node(nodes, 1, logs, f"{name}-head", temp_dir=temp_dir)
        _start_node(nodes, 2, logs, f"{name}-worker", temp_dir=temp_dir,
                    head_port=int(address.rsplit(":", 1)[1]))
        return address

    try:
        address = start_cluster("cluster-1")
        head, worker = nodes
        log = logs / "score-killed.log"
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "jobs" / "score_archive.py"), "--address", address,
             *common, "--run-id", "h"], cwd=REPO, env=_driver_env(), stdout=open(log, "w"),
            stderr=subprocess.STDOUT, start_new_session=True)
        part_dir = out / "_tmp_run_id=h" / "report"
        wait_for(lambda: sorted(p.name for p in part_dir.glob("*.parquet")), poll_s=0.05,
                 timeout_s=FIRST_TASK_S + 120, what=f"3 finished report parts in {part_dir}",
                 until=lambda parts: len(parts) >= 3, abort_if=process_exited(proc, log))
        os.killpg(head.proc.pid, signal.SIGKILL)  # GCS, the head's raylet, its workers
        killed_after_s = round(time.monotonic() - started, 1)
        try:  # the driver lives on the head's machine: give it a moment, then it goes too
            proc.wait(timeout=15)
            driver_exit = f"the driver exited by itself (code {proc.returncode})"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            driver_exit = "the driver, hung on the lost GCS, was SIGKILLed 15 s later"
        for node in (head, worker):
            node.stop()
        assert not (out / "run_id=h").exists()
        done = pd.concat([pd.read_parquet(p, columns=["uri"])
                          for p in sorted(part_dir.glob("*.parquet"))])
        assert done["uri"].is_unique and 0 < len(done) < len(listed)

        address = start_cluster("cluster-2")
        resume_started = pd.Timestamp.now(tz="UTC")
        t0 = time.monotonic()
        _finish(_start_job("score_archive.py", ["--address", address, *common, "--run-id", "h",
                                                "--resume"], logs / "score-resumed.log"),
                logs / "score-resumed.log")
        resumed_wall_s = round(time.monotonic() - t0, 1)
        _finish(_start_job("score_archive.py", ["--address", address, *common, "--run-id",
                                                "clean"], logs / "score-clean.log"),
                logs / "score-clean.log")
    finally:
        if proc is not None and proc.poll() is None:  # the killed run's driver, on a failure
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for node in reversed(nodes):
            node.stop()
        for temp_dir in temp_dirs:
            shutil.rmtree(temp_dir, ignore_errors=True)

    report = reports.read_report(str(out / "run_id=h")).sort_values("uri")
    clean = reports.read_report(str(out / "run_id=clean")).sort_values("uri")
    counts = _accounting(listed, report["uri"].tolist())
    assert counts["duplicates"] == counts["missing"] == counts["unexpected"] == 0, counts
    assert report["uri"].tolist() == clean["uri"].tolist()
    assert report["status"].tolist() == clean["status"].tolist()
    np.testing.assert_array_equal(report["spoof_score"].to_numpy(),
                                  clean["spoof_score"].to_numpy())
    assert report["predicted_label"].tolist() == clean["predicted_label"].tolist()
    scored_now = int((report["scored_at"] >= resume_started).sum())
    assert scored_now == len(listed) - len(done) <= len(listed) - len(done) + 50
    assert set(report.loc[report["scored_at"] < resume_started, "uri"]) == set(done["uri"])
    ok = int((report["status"] == "ok").sum())
    assert ok == N_FILES
    record("head_loss_scoring_resumed", {
        "fault": f"head node of a 2-node cluster (GCS, raylet, workers) SIGKILLed "
                 f"{killed_after_s} s into scoring {len(listed)} files, with {len(done)} "
                 f"files in finished report parts; {driver_exit}; both nodes started afresh "
                 "(no GCS fault tolerance: the worker cannot rejoin)",
        "outcome": f"the same --run-id with --resume scored {scored_now} files (exactly the "
                   f"rest) and published in {resumed_wall_s} s with _SUCCESS; statuses, "
                   "labels and spoof scores identical to an undisturbed run",
        "counts": {**counts, "ok": ok, "errors": len(report) - ok},
        "node_up_after_s": {Path(n.log.name).stem: n.up_after_s for n in nodes}})
