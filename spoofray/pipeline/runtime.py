"""Connecting to Ray (the embedded local default, or a cluster named by address), and
reading what a failed Ray Data run was really about."""

from __future__ import annotations

import logging
import os
import re

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
    if address == "local" and num_cpus is not None:
        kwargs["num_cpus"] = num_cpus
    ray.init(**kwargs)
    log.info("Ray resources: %s", ray.cluster_resources())


def raise_if_storage_outage(exc: BaseException, *, stopped: str, left: str) -> None:
    """Re-raise a failed Ray Data run as the storage outage behind it, if that is what it was.

    Ray re-raises a task's exception wrapped (``RayTaskError(UserCodeException)``) and
    cuts its cause chain, so the :class:`~spoofray.errors.StorageUnavailableError` object
    does not survive the trip back from the worker; its type and message do, in the remote
    traceback text. Returns quietly when ``exc`` is not an outage (the caller re-raises).

    Parameters
    ----------
    exc : BaseException
        What iterating or collecting the dataset raised.
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
