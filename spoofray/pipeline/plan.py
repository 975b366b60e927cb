"""The plan of a pipeline run: which files go out, in which order, cut into how many tasks;
and the check afterwards that every planned file came back exactly once.

Extraction and one-stage scoring run :meth:`Plan.blocks` as Ray tasks
(:mod:`spoofray.pipeline.tasks`); two-stage scoring and copy-synthesis hand :meth:`Plan.rows`
to ``ray.data.from_items(..., override_num_blocks=plan.n_blocks)``, which cuts the same
blocks. Extraction, scoring and the nightly audit (:mod:`spoofray.audit`) all end with
:func:`check_accounting`. No Ray here: sizing is arithmetic on the listing.

Why the numbers are what they are (measured in docs/benchmarks.md):

* Every task costs a submission, a result and (in extraction) its own part files (and on
  Ray Data a worker idles ~0.2 s between tasks), so a task should run for seconds:
  extraction's 128 files per task are 2-4 s of one core for typical clips.
* Workers do not finish together on their own: tasks run at different speeds. Files going
  out largest first, with at least two tasks per worker when there are several, leave the
  short tasks for the end, so the worker that ran slow ends on a short one.
* Beyond a few thousand blocks, block bookkeeping costs more than the balance it buys:
  never more than :data:`MAX_BLOCKS`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

from spoofray.errors import SpoofrayError
from spoofray.sources import AudioItem

#: Most blocks (tasks) one run is cut into.
MAX_BLOCKS = 4096


@dataclasses.dataclass(frozen=True)
class Plan:
    """Items in the order their tasks start, and how many blocks (tasks) they make."""

    items: tuple[AudioItem, ...]
    n_blocks: int

    def rows(self) -> list[dict]:
        """The items as dicts (``ray.data.from_items`` rows)."""
        return [it.to_dict() for it in self.items]

    def blocks(self) -> list[list[dict]]:
        """:meth:`rows` cut into ``n_blocks`` runs of consecutive rows, the longer ones
        first (as ``ray.data.from_items(rows, override_num_blocks=n_blocks)`` cuts them):
        one task's files each."""
        rows = self.rows()
        size, longer = divmod(len(rows), self.n_blocks)
        bounds = [k * size + min(k, longer) for k in range(self.n_blocks + 1)]
        return [rows[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


def largest_first(items: Sequence[AudioItem]) -> list[AudioItem]:
    """``items`` by ``size_bytes``, largest first; unknown sizes last; ties keep their order.

    Tasks start in this order, so the ones left at the end are the short ones and the
    workers finish together, instead of one running a long tail alone.
    """
    return sorted(items, key=lambda it: (it.size_bytes is None, -(it.size_bytes or 0)))


def dealt(items: Sequence[AudioItem], n_blocks: int) -> list[AudioItem]:
    """``items`` largest first, dealt round-robin into ``n_blocks`` runs of consecutive
    items (the equal-count blocks of :meth:`Plan.blocks`): every block gets a like
    share of large and small files, so that few long tasks end together."""
    ordered = largest_first(items)
    return [it for k in range(n_blocks) for it in ordered[k::n_blocks]]


def task_count(n_files: int, files_per_task: int, slots: int = 1) -> int:
    """Tasks for ``n_files``: at most ``files_per_task`` files each, and with several
    parallel workers (``slots``) at least two each when there are files for them; never
    more than :data:`MAX_BLOCKS` (tasks then hold more files)."""
    at_most = -(-n_files // files_per_task)
    spread = min(n_files, 2 * slots) if slots > 1 else 1
    return max(1, min(max(at_most, spread), MAX_BLOCKS))


def plan(items: Sequence[AudioItem], *, files_per_task: int, slots: int = 1,
         largest_first_order: bool = True, balanced: bool = False) -> Plan:
    """Order ``items`` and size their tasks.

    Parameters
    ----------
    files_per_task : int
        Most files one task gets (below :data:`MAX_BLOCKS` blocks).
    slots : int
        Tasks that can run at once; above 1, every slot gets at least two tasks (when
        there are files for them). 1 turns that spreading off.
    largest_first_order : bool
        Send the largest files first (:func:`largest_first`); False keeps the listed order.
    balanced : bool
        Instead, give every block a like share of the bytes (:func:`dealt`): for runs of
        few long tasks, where largest-first would leave one task much longer than the rest.
    """
    n_blocks = task_count(len(items), files_per_task, slots)
    if balanced:
        ordered = dealt(items, n_blocks)
    else:
        ordered = largest_first(items) if largest_first_order else list(items)
    return Plan(items=tuple(ordered), n_blocks=n_blocks)


def check_accounting(listed: Iterable[str], returned: Iterable[str], *,
                     what: str = "file accounting", left: str = "") -> None:
    """Every listed URI exactly once among ``returned``; raise otherwise.

    Parameters
    ----------
    listed : iterable of str
        The URIs a run set out to process (each once).
    returned : iterable of str
        The URI of every row the run produced (a report's ``uri`` column, extraction's
        per-file summary rows).
    what : str
        Names the check in the message (``"report accounting"``, ...).
    left : str
        What the failure left behind, appended to the message (``"nothing was published"``).

    Raises
    ------
    SpoofrayError
        Naming how many URIs are missing, duplicated or unexpected, with examples.
    """
    listed, returned = list(listed), list(returned)
    want, seen = set(listed), set()
    dupes = {u for u in returned if u in seen or seen.add(u)}
    listed_seen: set[str] = set()
    listed_twice = {u for u in listed if u in listed_seen or listed_seen.add(u)}
    missing = sorted(want - seen)
    extra = sorted(seen - want)
    if dupes or missing or extra or listed_twice:
        twice = f", {len(listed_twice)} listed twice (e.g. {sorted(listed_twice)[:3]})" \
            if listed_twice else ""
        raise SpoofrayError(
            f"{what} failed: {len(listed)} listed, {len(returned)} returned; "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(dupes)} duplicated "
            f"(e.g. {sorted(dupes)[:3]}), {len(extra)} unexpected (e.g. {extra[:3]}){twice}"
            + (f"; {left}" if left else ""))
