"""spoofray.testing.waiting: the one wait-for-an-event rule the other tests use."""

from __future__ import annotations

import subprocess
import sys

import pytest

from spoofray.testing.waiting import WaitAborted, WaitTimeout, process_exited, wait_for


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
