"""Process-tree helpers for the fault drills (killed drivers, lost nodes), from ``/proc``."""

from __future__ import annotations

import os


def descendants(root: int) -> list[int]:
    """Every process below ``root`` (children, their children, ...), read from ``/proc``."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            out.append(child)
            stack.append(child)
    return out


def group_members(pgid: int) -> list[int]:
    """Processes of process group ``pgid`` that still run (zombies, already dead and only
    waiting to be reaped, are left out), read from ``/proc``."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            # After the command: state, ppid, pgrp.
            if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
                out.append(int(entry))
    return out
