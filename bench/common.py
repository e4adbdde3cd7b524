"""What every benchmark shares: figures with targets, side-by-side timing, the machine, and the
simulator in its own process.

A figure is always a ratio (or a value) next to a baseline measured in the same run: runs of
the subject and of the baseline alternate, several times, and the median is kept, so a noisy
shared machine moves both sides alike.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import IO, Literal

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
SD_WATCHDOG = str(Path(PYTHON).parent / "sd-watchdog")
TOKEN = "bench-token-5e1d"  # noqa: S105 - the simulator's made-up bearer token
SEED = 20261128
X = "\N{MULTIPLICATION SIGN}"  # the unit of a ratio

Better = Literal["lower", "higher"]


@dataclass(frozen=True, slots=True)
class Figure:
    """One result. ``target`` is None for figures that are only reported (context)."""

    name: str
    value: float
    unit: str
    target: float | None = None
    better: Better = "lower"
    detail: str = ""
    fmt: str = ".2f"

    @property
    def verdict(self) -> str:
        if self.target is None:
            return "info"
        if math.isnan(self.value):
            return "n/a"
        ok = self.value <= self.target if self.better == "lower" else self.value >= self.target
        return "PASS" if ok else "MISS"

    @property
    def miss_by(self) -> str:
        """How far from the target, as a percentage of the target ('' when met)."""
        if self.verdict != "MISS" or not self.target:
            return ""
        return f"{abs(self.value - self.target) / self.target:.0%}"

    def shown(self, value: float | None = None) -> str:
        v = self.value if value is None else value
        text = format(v, self.fmt)
        return f"{text}{self.unit}" if self.unit in (X, "%") else f"{text} {self.unit}".strip()

    @property
    def target_text(self) -> str:
        if self.target is None:
            return "—"
        sign = "≤" if self.better == "lower" else "≥"
        return f"{sign} {self.shown(self.target)}"


@dataclass(slots=True)
class Section:
    """The figures of one benchmark, plus notes (how measured, and why when a target is missed)."""

    key: str
    title: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    load: str = ""  # the load average when it started: how busy the shared machine was

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        return figure

    def note(self, text: str) -> None:
        self.notes.append(text)


# --- timing ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    """One run: wall-clock seconds and CPU seconds (user + system)."""

    wall: float
    cpu: float


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def children_cpu() -> float:
    """CPU seconds of every child process reaped so far (``RUSAGE_CHILDREN``)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_child(
    argv: Sequence[str],
    *,
    stdout: IO[bytes] | int | None = subprocess.DEVNULL,
    stderr: IO[bytes] | int | None = subprocess.PIPE,
    env: Mapping[str, str] | None = None,
    ok: Sequence[int] = (0,),
    timeout: float = 300.0,
) -> Sample:
    """Run a process to its end; its wall time and CPU time (from the rusage of children).

    Its stderr is kept (unless sent elsewhere) to say why, should it fail.
    """
    before = children_cpu()
    started = time.perf_counter()
    proc = subprocess.run(
        list(argv),
        stdout=stdout,
        stderr=stderr,
        env=dict(env) if env is not None else clean_env(),
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )
    wall = time.perf_counter() - started
    cpu = children_cpu() - before
    if proc.returncode not in ok:
        said = proc.stderr.decode(errors="replace")[-2000:] if proc.stderr else ""
        raise RuntimeError(
            f"{' '.join(argv[:4])} … exited {proc.returncode} (expected {list(ok)}): {said}"
        )
    return Sample(wall, cpu)


def alternate(
    runs: Mapping[str, Callable[[], Sample]], repetitions: int, *, warmup: bool = True
) -> dict[str, list[Sample]]:
    """Run every subject once per repetition, rotating who goes first; samples per subject."""
    names = list(runs)
    if warmup:
        for name in names:
            runs[name]()
    samples: dict[str, list[Sample]] = {name: [] for name in names}
    for rep in range(repetitions):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(runs[name]())
    return samples


def wall_median(samples: Sequence[Sample]) -> float:
    return median([s.wall for s in samples])


def cpu_median(samples: Sequence[Sample]) -> float:
    return median([s.cpu for s in samples])


def ratio_median(top: Sequence[float], bottom: Sequence[float]) -> float:
    """The median of the ratios of paired runs (each pair ran back to back)."""
    return median([a / b for a, b in zip(top, bottom, strict=True) if b > 0])


# --- processes -------------------------------------------------------------------------------


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment without the watchdog's own variables (they would override configs)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.upper().startswith("WATCHDOG_")
        and k not in ("CREDENTIALS_DIRECTORY", "STATE_DIRECTORY")
    }
    env["PYTHONHASHSEED"] = "0"
    env.update(extra or {})
    return env


def proc_cpu(pid: int) -> float:
    """CPU seconds used so far by a running process (Linux /proc; 0.0 where unavailable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


@dataclass(frozen=True, slots=True)
class SimProcess:
    url: str
    pid: int


@contextlib.contextmanager
def simulator(
    tasks: int, *, latency: float = 0.0, scale: float = 1.0, seed: int = SEED
) -> Iterator[SimProcess]:
    """``python -m watchdog.simulator`` in its own process on 127.0.0.1, stopped on exit."""
    argv = [PYTHON, "-m", "watchdog.simulator", "--host", "127.0.0.1", "--port", "0"]
    argv += ["--tasks", str(tasks), "--latency", str(latency), "--scale", str(scale)]
    argv += ["--token", TOKEN, "--seed", str(seed)]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=clean_env(), cwd=ROOT
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().decode().strip()
        if not url.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"the simulator did not start (said {url!r})")
        yield SimProcess(url, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@contextlib.contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A temporary folder, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=f"sd-bench-{prefix}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# --- the machine -----------------------------------------------------------------------------


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def git_revision() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, cwd=ROOT, check=True, timeout=10,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, cwd=ROOT, check=True, timeout=10,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head} (with uncommitted changes)" if dirty else head


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def machine() -> dict[str, str]:
    versions = []
    for name in ("aiohttp", "pydantic", "structlog"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions.append(f"{name} {metadata.version(name)}")
    return {
        "CPU": cpu_model(),
        "cores": str(os.cpu_count()),
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "OS": platform.platform(),
        "packages": ", ".join(versions),
        "commit": git_revision(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
