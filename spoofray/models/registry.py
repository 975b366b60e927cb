"""Where bundles are found: the local registry, ``--bundle latest`` and the shipped default.

Both sides use it: assembly publishes into the registry (:mod:`spoofray.models.assemble`),
scoring and the nightly audit resolve ``--bundle`` through :func:`resolve_bundle`, so
inference never imports the module that builds bundles. The registry is a folder tree
``$SPOOFRAY_HOME/bundles/<name>/<version>/`` of bundle folders.
"""

from __future__ import annotations

import json
import os
from typing import Any

from spoofray.errors import ConfigError
from spoofray.models.bundle import _MEMBER_NAME, BUNDLE_JSON, spoofray_home
from spoofray.models.default import MODEL_CARD, default_bundle

#: ``--bundle`` value naming the newest bundle of the local registry.
LATEST = "latest"


def registry_root() -> str:
    return os.path.join(spoofray_home(), "bundles")


def registry_path(name: str, version: str) -> str:
    for part in (name, version):
        if not _MEMBER_NAME.match(part):
            raise ConfigError(f"bundle name/version {part!r} must be 1-64 letters, digits, "
                              "'_', '-' or '.'")
    return os.path.join(registry_root(), name, version)


def list_registry() -> list[dict[str, Any]]:
    """Bundles in the local registry, oldest first: name, version, created_at, uri."""
    out = []
    root = registry_root()
    if not os.path.isdir(root):
        return out
    for name in sorted(os.listdir(root)):
        for version in sorted(os.listdir(os.path.join(root, name))):
            path = os.path.join(root, name, version)
            try:
                with open(os.path.join(path, BUNDLE_JSON), "rb") as fh:
                    created = json.loads(fh.read()).get("created_at", "")
            except (OSError, ValueError):
                continue
            out.append({"name": name, "version": version, "created_at": created, "uri": path})
    return sorted(out, key=lambda b: (b["created_at"], b["name"], b["version"]))


def latest_bundle() -> str | None:
    """URI of the newest bundle in the local registry, or None when it is empty."""
    entries = list_registry()
    return entries[-1]["uri"] if entries else None


def resolve_bundle(uri: str | None) -> tuple[str, str]:
    """The bundle to use and where it came from: ``given``, ``default`` or ``registry``.

    No ``uri``: the bundle shipped inside the package (:func:`default_bundle`).
    ``"latest"``: the newest bundle of the local registry.
    """
    if uri is None:
        return default_bundle(), "default"
    if uri != LATEST:
        return uri, "given"
    newest = latest_bundle()
    if newest is None:
        raise ConfigError(
            f"--bundle {LATEST} names the newest bundle of the local registry, but "
            f"{registry_root()} is empty. Make a bundle with `python jobs/bundle.py assemble "
            "--member <tune or train output> ...` (it publishes to the registry), or pass "
            "--bundle <folder or s3://>, or leave --bundle out for the shipped default")
    return newest, "registry"


def bundle_note(name: str, version: str, uri: str, source: str) -> str:
    """The line a job prints when it picked the bundle itself."""
    if source == "default":
        return (f"no --bundle given: scoring with the shipped default {name} {version} "
                f"({uri}); what it was trained on, how well it does and where it fails: "
                f"{MODEL_CARD}")
    return f"--bundle {LATEST}: the newest bundle of the local registry, {name} {version} ({uri})"
