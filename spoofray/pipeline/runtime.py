"""Connecting to Ray: the embedded local default, or a cluster named by address."""

from __future__ import annotations

import logging
import os

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
