"""The watched set: tasks file parsing, de-duplication and hashmod sharding."""

from __future__ import annotations

from pathlib import Path

import pytest

from watchdog.errors import ConfigError
from watchdog.models import TaskRef
from watchdog.settings import TasksSettings
from watchdog.tasks import parse_tasks_file, shard_of, watched_tasks


def test_tasks_file_syntax() -> None:
    """One entry a line; '#' starts a comment anywhere; blank lines are fine."""
    text = "# header\n101\n  ext:INV-0042  # an invoice\n\n102 # second\nEXT:x\n"
    assert [r.key for r in parse_tasks_file(text)] == ["id:101", "ext:INV-0042", "id:102", "ext:x"]


@pytest.mark.parametrize("line", ["abc", "-1", "0", "ext:", "1.5", "id:3"])
def test_tasks_file_bad_lines_name_the_line(line: str) -> None:
    """A bad line is a config error naming its line number."""
    with pytest.raises(ConfigError) as info:
        parse_tasks_file(f"1\n{line}\n")
    assert info.value.problems[0][0] == "tasks.file:2"


def test_watched_tasks_merges_and_deduplicates(tmp_path: Path) -> None:
    """IDs, external IDs and the file are merged once each, in order."""
    path = tmp_path / "t.txt"
    path.write_text("2\next:A\n3\n", encoding="utf-8")
    settings = TasksSettings(ids=[1, 2], external_ids=["A"], file=path)
    assert [r.key for r in watched_tasks(settings)] == ["id:1", "id:2", "ext:A", "id:3"]


def test_missing_tasks_file_is_a_config_error(tmp_path: Path) -> None:
    """An unreadable tasks file names tasks.file."""
    with pytest.raises(ConfigError, match=r"tasks\.file"):
        watched_tasks(TasksSettings(file=tmp_path / "missing.txt"))


@pytest.mark.parametrize("total", [1, 2, 3, 7])
def test_shards_partition_any_task_set(total: int) -> None:
    """N replicas with shard i/N partition the task set exactly (every task once)."""
    ids = list(range(1, 2001))
    externals = [f"E-{i}" for i in range(300)]
    seen: list[str] = []
    for index in range(total):
        shard = TasksSettings(ids=ids, external_ids=externals, shard=f"{index}/{total}")
        seen += [r.key for r in watched_tasks(shard)]
    assert sorted(seen) == sorted([f"id:{i}" for i in ids] + [f"ext:{e}" for e in externals])
    if total > 1:
        sizes = [sum(1 for k in seen if shard_of(k, total) == i) for i in range(total)]
        assert min(sizes) > 0.7 * len(seen) / total  # roughly even


def test_shard_hash_is_stable() -> None:
    """The shard of a key never changes between versions (it is part of the contract)."""
    assert [shard_of(TaskRef.by_id(i).key, 4) for i in range(1, 9)] == [3, 1, 2, 2, 0, 1, 2, 0]
    assert shard_of("id:1", 1) == 0
