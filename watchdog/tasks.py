"""The watched set: configured IDs, external IDs and the tasks file, filtered to this shard."""

from __future__ import annotations

import hashlib
from pathlib import Path

from watchdog.errors import ConfigError
from watchdog.models import TaskRef
from watchdog.settings import TasksSettings


def shard_of(key: str, total: int) -> int:
    """Prometheus' hashmod: the last 8 bytes of MD5(key), big-endian, modulo ``total``."""
    digest = hashlib.md5(key.encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest[8:], "big") % total


def parse_tasks_file(text: str, *, source: str = "tasks file") -> list[TaskRef]:
    """One entry a line: ``123`` or ``ext:INV-0042``; ``#`` starts a comment anywhere."""
    refs: list[TaskRef] = []
    problems: list[tuple[str, str]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.lower().startswith("ext:"):
            external = line[4:].strip()
            if not external or len(external) > 512:
                problems.append((f"tasks.file:{number}", "empty or too long external ID"))
                continue
            refs.append(TaskRef.by_external_id(external))
        elif line.isascii() and line.isdigit() and int(line) > 0:  # not "²", which int() refuses
            refs.append(TaskRef.by_id(int(line)))
        else:
            problems.append(
                (f"tasks.file:{number}", f"not a task: expected '123' or 'ext:ID' in {source}")
            )
    if problems:
        raise ConfigError(problems)
    return refs


def file_signature(path: Path | None) -> tuple[int, int, int] | None:
    """(inode, size, mtime_ns) of the tasks file, to notice a change; None when absent."""
    if path is None:
        return None
    try:
        info = path.stat()
    except OSError:
        return None
    return (info.st_ino, info.st_size, info.st_mtime_ns)


def read_tasks_file(path: Path) -> list[TaskRef]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError([("tasks.file", f"cannot read {path}: {reason}")]) from None
    return parse_tasks_file(text, source=str(path))


def watched_tasks(settings: TasksSettings) -> list[TaskRef]:
    """Every configured task once, in a stable order, kept only when it hashes to our shard."""
    refs = [TaskRef.by_id(i) for i in settings.ids]
    refs += [TaskRef.by_external_id(e) for e in settings.external_ids]
    if settings.file is not None:
        refs += read_tasks_file(settings.file)
    index, total = settings.shard
    seen: set[str] = set()
    result: list[TaskRef] = []
    for ref in refs:
        if ref.key in seen:
            continue
        seen.add(ref.key)
        if total == 1 or shard_of(ref.key, total) == index:
            result.append(ref)
    return result
