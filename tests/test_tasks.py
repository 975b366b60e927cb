"""pipeline.tasks: a plan's blocks as plain Ray tasks on the session's real local Ray."""

from __future__ import annotations

import os
import time

import pytest

from spoofray.pipeline.tasks import run_blocks

#: A task that only a cancellation ends in time (the test waits at most half of it).
NAP_S = 600.0


def _spans(folder):
    """(start, end) of every task that finished, from the files the tasks wrote."""
    spans = []
    for name in os.listdir(folder):
        with open(os.path.join(folder, name)) as fh:
            start, end = map(float, fh.read().split())
        spans.append((start, end))
    return sorted(spans)


def test_every_block_comes_back_once_and_concurrency_bounds_the_running_tasks(
        ray_session, tmp_path):
    def square_all(block, *, folder, pause_s):
        start = time.time()
        time.sleep(pause_s)
        with open(os.path.join(folder, f"{block[0]}"), "w") as fh:
            fh.write(f"{start} {time.time()}")
        return [x * x for x in block]

    blocks = [[1, 2], [3], [4, 5, 6], [7]]
    (tmp_path / "a").mkdir()
    got = list(run_blocks(square_all, blocks, slots=2,
                          kwargs={"folder": str(tmp_path / "a"), "pause_s": 0.0}))
    assert sorted(x for result in got for x in result) == [x * x for x in range(1, 8)]
    assert len(got) == 4

    (tmp_path / "b").mkdir()
    one_at_a_time = list(run_blocks(square_all, blocks, slots=1, concurrency=1,
                                    kwargs={"folder": str(tmp_path / "b"), "pause_s": 0.3}))
    assert one_at_a_time == [[1, 4], [9], [16, 25, 36], [49]]  # submitted and done in order
    spans = _spans(tmp_path / "b")
    assert len(spans) == 4
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert start >= end, spans  # never two at once


def test_a_task_that_raises_stops_the_run_and_later_blocks_never_start(ray_session, tmp_path):
    def check(block, *, folder):
        open(os.path.join(folder, block), "w").close()
        if block == "bad":
            raise ValueError(f"block {block!r} is bad")
        return block

    with pytest.raises(ValueError, match="block 'bad' is bad"):
        list(run_blocks(check, ["bad", "b", "c", "d"], slots=1, concurrency=1,
                        kwargs={"folder": str(tmp_path)}))
    assert os.listdir(tmp_path) == ["bad"]


def test_stopping_early_cancels_the_tasks_still_running(ray_session):
    import ray

    def nap(seconds):
        time.sleep(seconds)
        return seconds

    results = run_blocks(nap, [0.0, NAP_S, NAP_S], slots=2, concurrency=2, kwargs={})
    assert next(results) == 0.0  # a long nap is running now
    results.close()
    # A task that needs every CPU of the cluster runs only once the nap is gone. Its
    # deadline covers a fresh worker starting on a loaded machine and still ends long
    # before the nap would.
    whole = ray.remote(nap).options(num_cpus=ray.cluster_resources()["CPU"])
    assert ray.get(whole.remote(0.0), timeout=NAP_S / 2) == 0.0
