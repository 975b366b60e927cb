"""Connecting to Ray (the embedded local default, or a cluster named by address), and
reading what a failed Ray run (tasks or a Ray Data dataset) was really about."""

from __future__ import annotations

import logging
import os
import re

from spoofray import console
from spoofray.errors import StorageUnavailableError

log = logging.getLogger(__name__)


def init_ray(address: str | None = None, *, num_cpus: int | None = None) -> None:
    """Start or join Ray once per process.

    With no ``address`` and no ``RAY_ADDRESS`` this starts a new local Ray on this machine
    (the embedded default) -- ``address="local"``, because a bare ``ray.init()`` would join
    whatever cluster ``ray start`` last left running here. Inside ``ray job submit``,
    ``RAY_ADDRESS`` is set and this joins that cluster. ``num_cpus`` only applies when a local
    Ray is started.
    """
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    kwargs = {"address": address, "configure_logging": False}
    if address == "local":
        kwargs["runtime_env"] = {"worker_process_setup_hook": _local_worker_setup()}
        if num_cpus is not None:
            kwargs["num_cpus"] = num_cpus
    log.info("starting Ray (%s)", "a local Ray on this machine" if address == "local"
             else f"joining {address}")
    quiet = not console.verbose()
    if quiet:
        console.set_verbose(False)  # workers started here inherit it (TensorFlow notices)
        quiet_ray_data()
        # What tasks and actors print (Ray Train's workers and controller, Ray Data's
        # SplitCoordinator, ...) stays in their log files (<ray tmp>/session_latest/logs/
        # worker-*.out/.err); a failure still comes back as the exception it raised.
        kwargs["log_to_driver"] = False
        # Tune's new output engine prints its configuration box and a TensorBoard hint
        # even at verbosity 0; the old one is silent at 0 (training/tune.py passes 0).
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    ray_log = logging.getLogger("ray")
    level = ray_log.level
    if quiet:  # token-auth and start-up notices
        ray_log.setLevel(logging.ERROR)
    try:
        _init_with_startup_retries(ray, kwargs, local=address == "local")
    finally:
        ray_log.setLevel(level)
    if quiet:  # Ray's core worker and raylet notices that reach the console unasked
        console.drop_known_lines()
    resources = ray.cluster_resources()
    log.log(logging.DEBUG if quiet else logging.INFO, "Ray resources: %s", resources)


# Ray waits a fixed 30 s for a new local node to register (hard-coded in ray._private.node);
# on a loaded machine start-up can take longer than that while nothing is wrong.
RAY_STARTUP_TRIES = 3
_STARTUP_TIMEOUT_TEXT = "timed out during startup"


def _init_with_startup_retries(ray, kwargs: dict, *, local: bool) -> None:
    """``ray.init(**kwargs)``; a local start that ran out of Ray's own start-up wait is shut
    down and started again, up to :data:`RAY_STARTUP_TRIES` times. Joining a cluster is not
    retried: there the timeout is about someone else's cluster."""
    for attempt in range(1, RAY_STARTUP_TRIES + 1):
        try:
            ray.init(**kwargs)
            return
        except Exception as e:  # Ray raises a bare Exception for this one
            if not local or _STARTUP_TIMEOUT_TEXT not in str(e) or attempt == RAY_STARTUP_TRIES:
                raise
            log.warning("the local Ray did not start within Ray's 30 s start-up wait "
                        "(a busy machine?); starting it again (try %d of %d)",
                        attempt + 1, RAY_STARTUP_TRIES)
            ray.shutdown()


def _local_worker_setup():
    """What every worker process of a local Ray started by :func:`init_ray` runs first
    (Ray's ``worker_process_setup_hook``), before any task or actor code.

    Pickled by value, with its imports inside: Ray runs it before a worker has the
    driver's ``sys.path``, so a checkout that is not installed cannot import spoofray yet
    (then only the quieting is skipped)."""

    def setup() -> None:
        import os

        import ray

        # Ray looks a cluster up by address in a worker too (Ray Train's placement-group
        # cleaner polls the controller through the state API), and without RAY_ADDRESS it
        # takes the last `ray start` on this machine (/tmp/ray/ray_current_cluster), never
        # this local Ray. With another Ray, or a stale file, there it asked the wrong
        # cluster: "Found multiple active Ray instances", then a traceback when training
        # ended ("Failed to stop PlacementGroupCleaner gracefully", GetTimeoutError).
        os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
        try:
            from spoofray import console
        except ImportError:
            return
        if not console.verbose():
            # TF_CPP_MIN_LOG_LEVEL (inherited) misses TensorFlow's oneDNN/CUDA/absl notices,
            # and Ray Train's controller and workers import TensorFlow before our code runs.
            console.hold_back_tensorflow_import()

    return setup


def quiet_ray_data() -> None:
    """Ray Data's console output off, except errors: its progress bars and progress log
    lines (``Total Progress: 0/?``), execution-plan notices, actor-pool hints and the
    tracebacks its stats actor logs while Ray shuts down. Its log files keep everything
    (``/tmp/ray/session_latest/logs/ray-data*``); the driver prints its own progress line
    (:mod:`spoofray.progress`)."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    if hasattr(ctx, "enable_operator_progress_bars"):
        ctx.enable_operator_progress_bars = False
    for handler in logging.getLogger("ray.data").handlers:
        if not isinstance(handler, logging.FileHandler) and type(handler).__name__ != \
                "SessionFileHandler":
            handler.setLevel(logging.ERROR)


def raise_if_storage_outage(exc: BaseException, *, stopped: str, left: str) -> None:
    """Re-raise a failed Ray run as the storage outage behind it, if that is what it was.

    Ray re-raises a task's exception wrapped (``RayTaskError(UserCodeException)``) and
    cuts its cause chain, so the :class:`~spoofray.errors.StorageUnavailableError` object
    does not survive the trip back from the worker; its type and message do, in the remote
    traceback text. Returns quietly when ``exc`` is not an outage (the caller re-raises).

    Parameters
    ----------
    exc : BaseException
        What collecting the tasks' results (or iterating the dataset) raised.
    stopped : str
        What stopped, e.g. ``"extraction"``.
    left : str
        What the failed run left behind and what to do next.

    Raises
    ------
    StorageUnavailableError
        ``"<stopped> stopped: <the worker's message>. <left>"``, chained to ``exc``.
    """
    match = re.search(r"StorageUnavailableError: ([^\n]+)", str(exc))
    if match is not None:
        raise StorageUnavailableError(
            f"{stopped} stopped: {match.group(1).strip()}. {left}") from exc
