"""spoofray.testing.waiting: the one wait-for-an-event rule the other tests use."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from spoofray.testing.waiting import (WaitAborted, WaitTimeout, process_exited, run_to_end,
                                      wait_for)


def test_returns_the_first_value_that_counts_as_the_event():
    looks = iter([0, 1, 2, 3, 4])
    assert wait_for(lambda: next(looks), timeout_s=60, what="3 nodes", poll_s=0,
                    until=lambda n: n >= 3) == 3


def test_a_deadline_that_passes_names_the_event_and_the_last_look():
    looks = iter(range(1_000_000))
    with pytest.raises(WaitTimeout, match=r"no 2 live nodes after 0 s \(deadline 0 s\); "
                                          r"last seen: \d+") as caught:
        wait_for(lambda: ["node-a", next(looks)][1], timeout_s=0.2, what="2 live nodes",
                 poll_s=0.01, until=lambda n: n < 0)
    assert caught.value.last > 0


def test_a_process_that_exits_ends_the_wait_at_once_with_its_log(tmp_path):
    log = tmp_path / "node.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-c", "print('port 6379 is taken'); exit(3)"],
                                stdout=fh, stderr=subprocess.STDOUT)
    proc.wait()
    with pytest.raises(WaitAborted, match=r"(?s)exited with code 3; its log ends:\n"
                                          r"port 6379 is taken.*last seen: 'joining'"):
        wait_for(lambda: "joining", timeout_s=600, what="the node", poll_s=0.01,
                 until=lambda s: s == "joined", abort_if=process_exited(proc, log))


def test_an_event_seen_in_the_same_look_as_the_exit_still_counts():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert wait_for(lambda: "written", timeout_s=60, what="the file",
                    abort_if=process_exited(proc)) == "written"


def test_a_run_past_its_deadline_is_killed_with_what_it_started_and_says_what_it_printed():
    code = ("import subprocess, sys, time; child = subprocess.Popen(['sleep', '600']); "
            "print('started', child.pid, flush=True); print('stuck here', file=sys.stderr, "
            "flush=True); time.sleep(600)")
    with pytest.raises(WaitTimeout, match=r"(?s)no end of a stuck run after 2 s; its stdout "
                                          r"ends:\nstarted \d+.*stderr ends:\nstuck here"
                       ) as caught:
        run_to_end([sys.executable, "-c", code], timeout_s=2, what="a stuck run")
    child = int(caught.value.last[0].split()[1])
    # The grandchild went with it (it was in the run's process group); a zombie, at
    # most, until init reaps it.
    try:
        with open(f"/proc/{child}/stat") as fh:
            assert fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        pass


def test_a_run_that_ends_in_time_is_a_completed_process():
    run = run_to_end([sys.executable, "-c", "print('2')"], timeout_s=120, what="a print")
    assert (run.returncode, run.stdout) == (0, "2\n")


# moto's server thread dies on the taken port with its own traceback: that is the point here.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_moto_server_start_has_a_deadline_and_names_the_port():
    """A port held by another socket (bound, not listening: connections are refused) makes
    moto's own start() wait forever; ours gives up at its deadline and says where."""
    from spoofray.testing.s3_server import start_moto_server

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(WaitTimeout, match=f"127.0.0.1:{port}"):
            start_moto_server(port, timeout_s=2.0, verbose=False)
        assert time.monotonic() - started < 30


def test_moto_server_start_returns_a_server_that_answers_s3():
    import boto3

    from spoofray.testing.s3_server import start_moto_server

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = start_moto_server(port, verbose=False)
    try:
        s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                          aws_access_key_id="k", aws_secret_access_key="s")
        # moto keeps one in-memory backend per process: other tests' buckets may be listed too.
        s3.create_bucket(Bucket="deadline-check")
        s3.put_object(Bucket="deadline-check", Key="a/b.txt", Body=b"answered")
        assert s3.get_object(Bucket="deadline-check", Key="a/b.txt")["Body"].read() == b"answered"
        assert "deadline-check" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    finally:
        server.stop()
