"""pipeline.plan: task order and sizing shared by extraction and scoring; the accounting
check shared by both pipelines and the audit."""

from __future__ import annotations

import pytest

from spoofray.errors import SpoofrayError
from spoofray.pipeline.plan import (MAX_BLOCKS, check_accounting, largest_first, plan,
                                    task_count)
from spoofray.sources import AudioItem


def _items(sizes):
    return [AudioItem(uri=u, size_bytes=s) for u, s in sizes]


def test_task_count_caps_files_per_task_and_gives_each_worker_two():
    assert task_count(300, 48, 2) == 7     # 300 / 48 = 6.25
    assert task_count(300, 128, 2) == 4    # 3 would leave one worker a single task
    assert task_count(300, 128, 1) == 3    # one worker: nothing to even out
    assert task_count(40, 48, 16) == 32    # small archive, big machine: two each
    assert task_count(20, 48, 16) == 20    # one file each at most
    assert task_count(0, 48, 2) == 1
    assert task_count(10, 4) == 3          # scoring: 4 per task, no spreading
    assert task_count(100_000, 4) == MAX_BLOCKS == 4096  # 25,000 would cost bookkeeping


def test_largest_first_keeps_ties_in_order_and_unknown_sizes_last():
    items = _items([("a", 10), ("b", None), ("c", 30), ("d", 10), ("e", 0)])
    assert [it.uri for it in largest_first(items)] == ["c", "a", "d", "e", "b"]


def test_plan_orders_largest_first_and_sizes_the_tasks():
    items = _items([("s.wav", 1_000), ("l.wav", 9_000_000), ("m.wav", 40_000),
                    ("u.wav", None), ("xl.wav", 50_000_000)])
    p = plan(items, files_per_task=2, slots=1)
    assert [it.uri for it in p.items] == ["xl.wav", "l.wav", "m.wav", "s.wav", "u.wav"]
    assert p.n_blocks == 3  # ceil(5 / 2)
    assert [r["uri"] for r in p.rows()] == ["xl.wav", "l.wav", "m.wav", "s.wav", "u.wav"]
    assert plan(items, files_per_task=128, slots=2).n_blocks == 4  # two per worker
    listed = plan(items, files_per_task=4, largest_first_order=False)
    assert [it.uri for it in listed.items] == ["s.wav", "l.wav", "m.wav", "u.wav", "xl.wav"]
    assert listed.n_blocks == 2


def test_balanced_plan_deals_sizes_so_equal_count_blocks_hold_like_bytes():
    items = _items([(f"f{i}", size) for i, size in enumerate([1, 9, 2, 8, 3, 7, 4, 6, 5, 0])])
    p = plan(items, files_per_task=5, slots=1, balanced=True)
    assert p.n_blocks == 2
    first, second = p.items[:5], p.items[5:]  # the equal-count blocks from_items cuts
    assert [it.size_bytes for it in first] == [9, 7, 5, 3, 1]
    assert [it.size_bytes for it in second] == [8, 6, 4, 2, 0]
    assert sorted(it.uri for it in p.items) == sorted(it.uri for it in items)
    # Largest first in 2 blocks would give 9+8+7+6+5 = 35 bytes against 10.
    assert sum(it.size_bytes for it in first) - sum(it.size_bytes for it in second) == 5


def test_blocks_are_the_dealt_runs_each_task_gets():
    # 7 files in 3 blocks: dealt 0,3,6 / 1,4 / 2,5 (sizes 6..0), cut 3 + 2 + 2.
    items = _items([(f"f{i}", size) for i, size in enumerate([6, 5, 4, 3, 2, 1, 0])])
    p = plan(items, files_per_task=3, slots=1, balanced=True)
    assert p.n_blocks == 3
    blocks = p.blocks()
    assert [[r["size_bytes"] for r in b] for b in blocks] == [[6, 3, 0], [5, 2], [4, 1]]
    assert [r for b in blocks for r in b] == p.rows()  # every file once, in plan order
    assert [len(b) for b in plan(items[:2], files_per_task=1, slots=4).blocks()] == [1, 1]


def test_accounting_passes_each_listed_uri_exactly_once_in_any_order():
    check_accounting(["a", "b", "c"], ["c", "a", "b"])
    check_accounting([], [])


@pytest.mark.parametrize("returned, message", [
    (["a"], r"2 listed, 1 returned; 1 missing \(e.g. \['b'\]\), 0 duplicated"),
    (["a", "b", "b"], r"1 duplicated \(e.g. \['b'\]\)"),
    (["a", "b", "z"], r"1 unexpected \(e.g. \['z'\]\)"),
    (["b", "b"], r"1 missing \(e.g. \['a'\]\), 1 duplicated \(e.g. \['b'\]\)"),
])
def test_accounting_names_what_is_missing_duplicated_or_unexpected(returned, message):
    with pytest.raises(SpoofrayError, match=message):
        check_accounting(["a", "b"], returned, what="report accounting",
                         left="Nothing was published")
    with pytest.raises(SpoofrayError, match=r"^report accounting failed: .*; Nothing was "
                                            "published$"):
        check_accounting(["a", "b"], returned, what="report accounting",
                         left="Nothing was published")


def test_accounting_refuses_a_listing_that_names_a_file_twice():
    with pytest.raises(SpoofrayError, match=r"1 listed twice \(e.g. \['a'\]\)"):
        check_accounting(["a", "a"], ["a"])
