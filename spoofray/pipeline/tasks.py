"""A plan's blocks run as plain Ray tasks: a bounded number in flight, results as they finish.

Extraction and one-stage scoring are one CPU task per block with nothing streamed between
stages, so they run on Ray core rather than on a Ray Data dataset. Ray Data 2.60 runs a new
dataset's first task alone until its resource limits first refresh (a second later) and
leaves a worker idle ~0.2 s between tasks; a queued Ray task starts the moment a worker is
free (docs/benchmarks.md, "Scoring"). Ray retries a task whose worker or node died
(:data:`MAX_RETRIES`). Two-stage scoring (deep members on an actor pool) and training keep
Ray Data: there it streams windows between stages and reads Parquet for the workers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

log = logging.getLogger(__name__)

#: Times Ray reruns a task lost with its worker or node (not one whose code raised).
MAX_RETRIES = 3
#: Tasks submitted per slot when no concurrency is given: one running, one queued behind
#: it, so a worker starts its next task without waiting for the driver.
IN_FLIGHT_PER_SLOT = 2
#: Seconds a task has to end after it is asked to stop: more than the longest pause between
#: two storage retries (10 s, storage.with_retries), so a task waiting out an outage ends
#: without being forced.
STOP_WAIT_S = 12.0
#: Forced cancels sent to a task that keeps running, and seconds to wait after each: long
#: enough for a busy machine to end the worker before it is asked again.
CANCEL_TRIES = 5
CANCEL_WAIT_S = 5.0


def slots(num_cpus_per_task: float = 1.0, concurrency: int | None = None) -> int:
    """Tasks that can run at once: ``concurrency``, else the cluster's CPUs per task."""
    import ray

    if concurrency:
        return concurrency
    return max(1, int(ray.cluster_resources().get("CPU", 1) // num_cpus_per_task))


def run_blocks(fn: Callable[..., Any], blocks: Iterable[Any], *, kwargs: dict[str, Any],
               slots: int, concurrency: int | None = None, num_cpus: float = 1.0,
               memory_bytes: int | None = None) -> Iterator[Any]:
    """``fn(block, **kwargs)`` for every block as a Ray task; the results as they finish.

    Parameters
    ----------
    fn : callable
        A module-level function (pickled by reference to the workers).
    blocks : iterable
        One task's input each, submitted in this order.
    kwargs : dict
        The same keyword arguments for every task (large ones as ``ray.put`` references).
    slots : int
        Tasks that can run at once (:func:`slots`, which also sized the plan).
    concurrency : int, optional
        Most tasks running at once; by default every slot has :data:`IN_FLIGHT_PER_SLOT`
        submitted.
    num_cpus, memory_bytes : float, int or None
        What each task reserves.

    Raises
    ------
    ray.exceptions.RayTaskError
        The first task that raised, wrapping its exception. Tasks still submitted are
        cancelled then, and when the caller stops iterating early.
    """
    import ray

    in_flight = concurrency or IN_FLIGHT_PER_SLOT * slots
    remote = ray.remote(fn).options(num_cpus=num_cpus, memory=memory_bytes,
                                    max_retries=MAX_RETRIES)
    pending: list[Any] = []
    try:
        for block in blocks:
            if len(pending) >= in_flight:
                done, pending = ray.wait(pending, num_returns=1)
                yield ray.get(done[0])
            pending.append(remote.remote(block, **kwargs))
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])
    finally:
        if pending:  # a failed or abandoned run leaves no work running
            _cancel(pending)


def _cancel(refs: list[Any]) -> None:
    """End the tasks of ``refs``: each is asked once to stop, and forced only if it keeps running.

    Asked, a running task gets a KeyboardInterrupt at its next Python bytecode (a queued one
    never starts) and its worker lives on; one inside a long C call (a sleep, a blocking
    read) sees it only when the call returns. Forcing ends the worker process, which Ray
    replaces, and is where Ray's known races between cancels and task replies lie
    (ray-project/ray#54527): a driver died in Ray's C++ task-reply handler while forced
    cancels were repeated every second on a busy machine (CI, 2026-12-07). A cancel that reaches a task just as it starts can be lost
    (ray-project/ray#32954, #24359; a plain cancel missed in 3 of 6 such tries, a forced one
    in 1 of 12; asked again, 20 of 20 ended), so a forced one is repeated. A cancelled task
    is never retried."""
    import ray

    for ref in refs:
        ray.cancel(ref, force=False)
    _, refs = ray.wait(refs, num_returns=len(refs), timeout=STOP_WAIT_S)
    for _ in range(CANCEL_TRIES):
        if not refs:
            return
        log.debug("forcing %d Ray task(s) that kept running after being asked to stop", len(refs))
        for ref in refs:
            ray.cancel(ref, force=True)
        _, refs = ray.wait(refs, num_returns=len(refs), timeout=CANCEL_WAIT_S)
    if refs:
        log.warning("%d Ray task(s) kept running after %d cancels; they end on their own",
                    len(refs), CANCEL_TRIES + 1)
