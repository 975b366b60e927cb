"""Make ``import spoofray`` work when a job runs from a checkout without installation
(``ray job submit --working-dir . -- python jobs/<job>.py`` puts only ``jobs/`` on sys.path)."""

import logging
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

logging.basicConfig(level=os.environ.get("SPOOFRAY_LOG_LEVEL", "INFO"),
                    format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def absolute(uri: str | None) -> str | None:
    """Local paths made absolute (Ray workers, and jobs under ``ray job submit``, run in
    other folders); URIs such as ``s3://`` are left as they are."""
    if uri is None or "://" in uri:
        return uri
    return os.path.abspath(os.path.expanduser(uri))


def default_devcorpus() -> str:
    """The development corpus next to the checkout (``../shared/data/devcorpus``)."""
    return os.path.abspath(os.path.join(REPO_ROOT, "..", "shared", "data", "devcorpus"))
