"""Bad configuration and a bad environment (issue 5, item 8).

Fuzzed TOML documents, environment variables and secret files for the real keys — random types,
unicode, huge numbers, nested tables — either load or fail as a ``ConfigError`` naming the bad
keys: never another exception, never a secret in the message. A sample also goes through the
real ``sd-watchdog validate``: exit 0 or 2, never a traceback. The seed is printed; set
``FUZZ_SEED`` to replay a run.

A state folder that is read-only or full stops ``run`` at start with exit 3 and a clear message;
a disk that fills up after start ends the daemon with ``watchdog.crashed`` and exit 4 (the cycle
that could not be written is not half-applied), and it starts again once there is room. Those
tests mount small tmpfs file systems (root only: as root, ``chmod`` does not stop writes).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import errno
import json
import math
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from tests.conftest import TOKEN
from tests.helpers import SCRIPT, child_env, run_script
from watchdog.errors import ConfigError
from watchdog.scenarios import stuck_in_queue
from watchdog.settings import Settings, load_settings, masked, redact_url
from watchdog.simulator import Simulator
from watchdog.store import Store
from watchdog.tasks import watched_tasks

SEED = int(os.environ.get("FUZZ_SEED", "20261128"))

# Fake secrets put into the secret-bearing keys of every fuzzed configuration.
FUZZ_TOKEN = "fuzz-token-3c9e1d7a"
FUZZ_CLIENT_SECRET = "fuzz-client-secret-8b2f6e"
FUZZ_HOOK_SECRET = "fuzz-hook-secret-4d7a0c"
FUZZ_URL_PASSWORD = "fuzz-url-pass-e5190b"
FUZZ_HEADER_VALUE = "fuzz-header-val-72c4aa"
FUZZ_SECRETS = (
    FUZZ_TOKEN, FUZZ_CLIENT_SECRET, FUZZ_HOOK_SECRET, FUZZ_URL_PASSWORD, FUZZ_HEADER_VALUE
)  # fmt: skip

IN_PROCESS_EXAMPLES = 250
SUBPROCESS_EXAMPLES = 10

# --- the keys -----------------------------------------------------------------------------


def _model_keys(model: type[BaseModel]) -> list[str]:
    return [field.alias or name for name, field in model.model_fields.items()]


def _section_models() -> dict[str, type[BaseModel]]:
    models: dict[str, type[BaseModel]] = {}
    for name, field in Settings.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            models[name] = annotation
    return models


SECTIONS = _section_models()
KEYS: dict[str, list[str]] = {name: _model_keys(model) for name, model in SECTIONS.items()}
KEYS["alerts.alertmanager"] = ["urls", "resend_interval"]
KEYS["alerts.heartbeat"] = ["url"]
KEYS["alerts.webhooks.0"] = ["url", "secret", "secret_file", "format", "headers", "min_severity"]
KEYS["rules.for"] = ["no_pages", "queued_too_long", "api_unavailable", "not_a_rule"]
ENV_NAMES = sorted(
    {f"WATCHDOG_{section.upper()}" for section in SECTIONS}
    | {
        "WATCHDOG_" + "__".join(part.upper() for part in [*section.split("."), key])
        for section, keys in KEYS.items()
        if not section.endswith(".0")
        for key in keys
    }
)

# --- values -------------------------------------------------------------------------------

_TEXT = st.text(st.characters(codec="utf-8"), max_size=24)
_ENV_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=24)
_TRICKY_TEXTS = (
    "", " ", "0", "-1", "1e999", "nan", "inf", "90s", "1h30m", "-5m", "5 m", "²", "٣", "0/0",
    "1/0", "3/2", "\uff10/\uff11", "²/³", "127.0.0.1:²", ":9465", "[::1]:99999", "json",
    "slack", "INFO", "critical", "Processed", "[1, 2]", '{"a": 1}', "true", "\u202e", "\ufeff",
    "x" * 600,
)  # fmt: skip
_PATHS = (
    "~", "~nosuch-user-7x/state.db", "~/x", "a\x00b", "/proc/self/mem", "/dev/null", "/",
    "../../../etc/passwd", ".", "/proc/sd-watchdog/x.db", "x" * 5000, "/nonexistent/" + "y" * 300,
)  # fmt: skip
_URLS = (
    "http://", "ftp://example.com", "https://例え.jp/x", "http://[::1", "http://h:99999",
    "https://user:pw@", "http://127.0.0.1:0", "http://127.0.0.1:99999", "http://u:p@127.0.0.1",
    "https://h/\x00", "http://evil.localhost", "http://127.0.0.1@evil.example", "https://h:-1",
    "//h/x", "https:h", "http://[v7.x]/",
)  # fmt: skip
_TRICKY = st.sampled_from(_TRICKY_TEXTS + _PATHS + _URLS)
_NUMBERS = st.one_of(
    st.integers(),
    st.sampled_from([0, -1, 1, 2**31, 2**63, -(2**63) - 1, 10**100, -(10**400)]),
    st.floats(allow_nan=True, allow_infinity=True),
)
_SCALARS = st.one_of(
    st.booleans(),
    _NUMBERS,
    _TEXT,
    _TRICKY,
    st.datetimes(timezones=st.sampled_from([None, dt.UTC])),
    st.dates(),
    st.times(),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(_TEXT, st.sampled_from(sorted(KEYS["api"]))), inner, max_size=4),
    ),
    max_leaves=8,
)


_PATH_KEYS = frozenset({"ca_file", "file", "path", "secret_file"})
_URL_KEYS = frozenset({"base_url", "url", "urls"})
_TEXT_KEYS = frozenset({"token", "client_secret", "secret", "headers", "shard", "listen", "ids"})
# every (section, key) once, and the keys whose values reach the OS or the wire more often
_TARGETS = [(section, key) for section, keys in KEYS.items() for key in [*keys, "bogus_key"]]
_TARGETS += [t for t in _TARGETS if t[1] in _PATH_KEYS | _URL_KEYS | _TEXT_KEYS] * 3


def _value_for(key: str) -> st.SearchStrategy[object]:
    """Mostly values of roughly the right kind for ``key`` (to get past the first check and
    into the deeper ones), sometimes anything at all."""
    if key in _PATH_KEYS:
        likely: st.SearchStrategy[object] = st.sampled_from(_PATHS)
    elif key in _URL_KEYS:
        likely = st.sampled_from(_URLS).map(lambda u: [u] if key == "urls" else u)
    elif key == "headers":
        likely = st.dictionaries(st.one_of(_TEXT, st.just("X-Key")), _TEXT, max_size=2)
    else:
        likely = st.one_of(_TRICKY, _NUMBERS)
    return st.one_of(likely, likely, _VALUES)


def _base_document(client_credentials: bool) -> dict[str, Any]:
    api: dict[str, Any] = {"base_url": "http://127.0.0.1:9"}
    if client_credentials:
        api.update(client_id="fuzz-client", client_secret=FUZZ_CLIENT_SECRET)
    else:
        api["token"] = FUZZ_TOKEN
    hook = {
        "url": f"https://fuzz:{FUZZ_URL_PASSWORD}@hooks.example.com/sd",
        "secret": FUZZ_HOOK_SECRET,
        "headers": {"X-Api-Key": FUZZ_HEADER_VALUE},
    }
    return {"api": api, "tasks": {"ids": [1]}, "alerts": {"webhooks": [hook]}}


def _set(doc: dict[str, Any], path: list[str], value: object) -> None:
    """Put ``value`` at ``path``; a part that is not a table (or list) becomes one."""
    target: Any = doc
    for part in path[:-1]:
        if isinstance(target, list):
            if not target or not isinstance(target[0], dict):
                target[:] = [{}]
            target = target[0]
            continue
        if not isinstance(target.get(part), dict | list):
            target[part] = [] if part == "webhooks" else {}
        target = target[part]
    if isinstance(target, list):
        target[:] = [value if path[-1] == "0" else {path[-1]: value}]
    else:
        target[path[-1]] = value


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    """A valid configuration with secrets in every secret key, then up to 4 keys fuzzed."""
    doc = _base_document(draw(st.booleans()))
    for _ in range(draw(st.sampled_from([0, 1, 1, 1, 2, 3, 4]))):
        if draw(st.integers(0, 9)) == 0:  # a whole section of the wrong shape
            section = draw(st.sampled_from([*KEYS, "bogus_section"]))
            _set(doc, section.split("."), draw(_VALUES))
            continue
        section, key = draw(st.sampled_from(_TARGETS))
        _set(doc, [*section.split("."), key], draw(_value_for(key)))
    return doc


# --- TOML ---------------------------------------------------------------------------------


def _toml_string(text: str) -> str:
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{_toml_string(str(k))} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }"
    raise TypeError(type(value))


def to_toml(doc: dict[str, Any]) -> str:
    """Top-level values first, then one ``[section]`` per table (nested tables inline)."""
    lines = [
        f"{_toml_string(k)} = {_toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)
    ]
    for name, table in doc.items():
        if isinstance(table, dict):
            lines.append(f"[{_toml_string(name)}]")
            lines += [f"{_toml_string(k)} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


# --- the property ---------------------------------------------------------------------------


def outcome(config: Path | None, secrets_dir: Path | None = None) -> tuple[int, str]:
    """What ``validate`` does, in process: (0, the masked document) or (2, the message).

    Any exception other than ConfigError escapes and fails the test."""
    error: ConfigError | None = None
    try:
        loaded = load_settings(config, secrets_dir=secrets_dir, use_default_secrets_dir=False)
        watched_tasks(loaded.tasks)  # validate reads the tasks file too
        text = json.dumps(masked(loaded))
        redact_url(loaded.api.base_url)  # what `run` logs at start
    except ConfigError as caught:
        error = caught
    code = 0 if error is None else 2
    if error is not None:
        assert error.problems, "a ConfigError names at least one problem"
        for key, message in error.problems:
            assert isinstance(key, str)
            assert isinstance(message, str)
            assert message.strip()
        text = str(error)
    for secret in FUZZ_SECRETS:
        assert secret not in text, f"secret in the {'output' if code == 0 else 'message'}"
    return code, text


_TASK_LINES = st.lists(
    st.one_of(
        st.sampled_from(["1", "²", "٣", "\uff10", "0", "-1", "ext:", "ext:" + "x" * 600, "EXT: a",
                         "12 # c", "# only", "1.5", "1e3", "\u00a01"]),
        _TEXT,
    ),
    max_size=4,
).map("\n".join)  # fmt: skip

_FUZZ = settings(
    max_examples=IN_PROCESS_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_fuzzed_toml_loads_or_is_a_config_error() -> None:
    """A fuzzed TOML file (and tasks file) loads, or fails as a ConfigError without secrets."""
    codes: list[int] = []

    @seed(SEED)
    @_FUZZ
    @given(
        doc=documents(),
        tasks_file=st.one_of(st.none(), st.none(), st.binary(max_size=64), _TASK_LINES),
    )
    def check(doc: dict[str, Any], tasks_file: bytes | str | None) -> None:
        with tempfile.TemporaryDirectory() as folder:
            base = Path(folder)
            if tasks_file is not None:
                path = base / "tasks.txt"
                if isinstance(tasks_file, bytes):
                    path.write_bytes(tasks_file)
                else:
                    path.write_text(tasks_file, encoding="utf-8")
                _set(doc, ["tasks", "file"], "tasks.txt")
            config = base / "watchdog.toml"
            config.write_text(to_toml(doc), encoding="utf-8")
            codes.append(outcome(config)[0])

    check()
    print(f"config fuzz (FUZZ_SEED={SEED}): {len(codes)} TOML documents, "
          f"{codes.count(0)} valid, {codes.count(2)} ConfigError, 0 other exceptions")  # fmt: skip


_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), _NUMBERS, _ENV_TEXT),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_ENV_TEXT, inner, max_size=3),
    max_leaves=6,
)
_ENV_VALUES = st.one_of(
    _ENV_TEXT,
    _TRICKY.filter(lambda s: "\x00" not in s),
    _JSON.map(lambda v: json.dumps(v, allow_nan=True)),
)
_SECRET_FILES = st.dictionaries(
    st.sampled_from(["watchdog_api__token", "WATCHDOG_POLL__INTERVAL", "watchdog_tasks__ids",
                     "watchdog_api__client_secret", "watchdog_alerts__webhooks"]),
    st.binary(max_size=32),
    max_size=3,
)  # fmt: skip


def test_fuzzed_environment_and_secret_files() -> None:
    """Fuzzed WATCHDOG_* variables and secret files load, or fail as a ConfigError."""
    codes: list[int] = []

    @seed(SEED)
    @_FUZZ
    @given(env=st.dictionaries(st.sampled_from(ENV_NAMES), _ENV_VALUES, max_size=5),
           secret_files=_SECRET_FILES)  # fmt: skip
    def check(env: dict[str, str], secret_files: dict[str, bytes]) -> None:
        with pytest.MonkeyPatch.context() as mp, tempfile.TemporaryDirectory() as folder:
            mp.setenv("WATCHDOG_API__TOKEN", FUZZ_TOKEN)
            mp.setenv("WATCHDOG_API__BASE_URL", "http://127.0.0.1:9")
            hook = {"url": f"https://u:{FUZZ_URL_PASSWORD}@hooks.example.com/",
                    "secret": FUZZ_HOOK_SECRET}  # fmt: skip
            mp.setenv("WATCHDOG_ALERTS__WEBHOOKS", json.dumps([hook]))
            for name, value in env.items():
                mp.setenv(name, value)
            secrets = Path(folder)
            for name, content in secret_files.items():
                (secrets / name).write_bytes(content)
            codes.append(outcome(None, secrets if secret_files else None)[0])

    check()
    print(f"environment fuzz (FUZZ_SEED={SEED}): {len(codes)} environments, "
          f"{codes.count(0)} valid, {codes.count(2)} ConfigError, 0 other exceptions")  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_fuzzed_toml_long() -> None:
    """The soak variant of the TOML fuzz: thousands of documents."""
    codes: list[int] = []

    @seed(SEED)
    @settings(_FUZZ, max_examples=5000)
    @given(doc=documents())
    def check(doc: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory() as folder:
            config = Path(folder) / "watchdog.toml"
            config.write_text(to_toml(doc), encoding="utf-8")
            codes.append(outcome(config)[0])

    check()
    print(f"config fuzz, long (FUZZ_SEED={SEED}): {len(codes)} TOML documents, "
          f"{codes.count(0)} valid, {codes.count(2)} ConfigError, 0 other exceptions")  # fmt: skip


# --- the real console script ------------------------------------------------------------------


async def test_validate_subprocess_exits_0_or_2_without_traceback(tmp_path: Path) -> None:
    """A sample of fuzzed files through `sd-watchdog validate`: exit 0 (a JSON document) or 2
    (a message naming keys), never a traceback, never a secret."""
    docs: list[dict[str, Any]] = []

    @seed(SEED)
    @settings(_FUZZ, max_examples=SUBPROCESS_EXAMPLES, phases=[Phase.generate])
    @given(doc=documents())
    def collect(doc: dict[str, Any]) -> None:
        docs.append(doc)

    collect()
    configs = []
    for i, doc in enumerate(docs):
        config = tmp_path / f"fuzz-{i}.toml"
        config.write_text(to_toml(doc), encoding="utf-8")
        configs.append(config)
    slots = asyncio.Semaphore(os.cpu_count() or 2)  # more at once only makes each slower

    async def validate(config: Path) -> tuple[int, str, str]:
        async with slots:
            return await run_script("validate", "--config", str(config))

    results = await asyncio.gather(*(validate(c) for c in configs))
    codes = []
    for config, (code, out, err) in zip(configs, results, strict=True):
        print(f"--- {config.name}: exit {code}\n{out}{err}")
        codes.append(code)
        assert code in (0, 2), (config.read_text(encoding="utf-8"), err)
        assert "Traceback" not in out + err
        for secret in FUZZ_SECRETS:
            assert secret not in out + err
        if code == 0:
            assert isinstance(json.loads(out), dict)
        else:
            assert out == ""
            assert err.startswith("sd-watchdog: invalid configuration:\n")
            assert len(err.splitlines()) >= 2  # at least one problem line
    print(f"validate subprocess: {len(codes)} fuzzed files, exit 0: {codes.count(0)}, "
          f"exit 2: {codes.count(2)}, tracebacks: 0")  # fmt: skip


# --- a read-only or full state folder ----------------------------------------------------------


def _unavailable(reason: str) -> None:
    """Skip where tmpfs cannot be mounted; under CI (root on the same kind of machine) fail."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI runs as root and must be able to mount tmpfs)")
    pytest.skip(reason)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str, str], Path]]:
    """``mount(name, options)`` mounts a tmpfs at tmp_path/name; all are unmounted after."""
    mount_bin, umount_bin = shutil.which("mount"), shutil.which("umount")
    mounted: list[Path] = []

    def mount(name: str, options: str) -> Path:
        if os.geteuid() != 0 or mount_bin is None or umount_bin is None:
            _unavailable("mounting a tmpfs needs root and mount(8)")
        assert mount_bin is not None
        target = tmp_path / name
        target.mkdir()
        done = subprocess.run(
            [mount_bin, "-t", "tmpfs", "-o", options, "sd-watchdog-test", str(target)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            _unavailable(f"cannot mount a tmpfs: {done.stderr.strip()}")
        mounted.append(target)
        return target

    yield mount
    assert umount_bin is not None or not mounted
    for target in reversed(mounted):
        if subprocess.run([str(umount_bin), str(target)], check=False).returncode != 0:
            subprocess.run([str(umount_bin), "-l", str(target)], check=False)


def remount(target: Path, options: str) -> None:
    mount_bin = shutil.which("mount")
    assert mount_bin is not None
    subprocess.run([mount_bin, "-o", f"remount,{options}", str(target)], check=True)


def fill(folder: Path) -> int:
    """Write into folder/filler until the file system says ENOSPC; the bytes written."""
    written = 0
    with (folder / "filler").open("wb", buffering=0) as fh:
        while True:
            try:
                written += fh.write(b"\0" * 4096) or 0
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                return written


def state_config(tmp_path: Path, state: Path, base_url: str = "http://127.0.0.1:9") -> Path:
    config = tmp_path / f"watchdog-{state.parent.name}.toml"
    config.write_text(
        f'[api]\nbase_url = "{base_url}"\ntoken = "{TOKEN}"\nretry_backoff = 0.01\n'
        '[tasks]\nids = [1, 2]\n[rules]\nqueued_max = "0.001s"\nno_progress = 0\n'
        '[poll]\ninterval = "0.2s"\nshutdown_timeout = "1s"\n'
        f'[server]\nlisten = ""\n[state]\npath = "{state}"\n',
        encoding="utf-8",
    )
    return config


async def test_read_only_state_folder_is_exit_3_at_start(
    tmp_path: Path, tmpfs: Callable[[str, str], Path]
) -> None:
    """A state folder on a read-only file system: `run` and `check` exit 3 naming the state
    file and saying why; an existing state file there is left as it was."""
    empty = tmpfs("ro-empty", "ro,size=1m")
    existing = tmpfs("ro-existing", "size=1m")
    store = Store(existing / "state.db")
    store.open()
    store.close()
    before = (existing / "state.db").read_bytes()
    remount(existing, "ro")
    runs = [
        ("run", state_config(tmp_path, empty / "state.db")),
        ("run", state_config(tmp_path, existing / "state.db")),
        ("check", state_config(tmp_path, existing / "state.db")),
    ]
    results = await asyncio.gather(*(run_script(cmd, "--config", str(c)) for cmd, c in runs))
    for (command, config), (code, out, err) in zip(runs, results, strict=True):
        print(f"--- {command} {config.name}: exit {code}\n{out}{err}")
        assert code == 3, err
        assert "Traceback" not in out + err
        assert "could not start" in err
        assert "state" in err
        assert "read-only" in err or "readonly" in err or "Read-only" in err
    assert (existing / "state.db").read_bytes() == before


async def test_full_state_folder_is_exit_3_at_start(
    tmp_path: Path, tmpfs: Callable[[str, str], Path]
) -> None:
    """A full file system: `run` exits 3 with "the disk is full", for a new state file and
    for an existing one (which still opens once there is room again)."""
    new = tmpfs("full-new", "size=256k")
    existing = tmpfs("full-existing", "size=256k")
    store = Store(existing / "state.db")
    store.open()
    store.close()
    fill(new)
    fill(existing)
    configs = [
        state_config(tmp_path, new / "state.db"),
        state_config(tmp_path, existing / "state.db"),
    ]
    results = await asyncio.gather(*(run_script("run", "--config", str(c)) for c in configs))
    for config, (code, out, err) in zip(configs, results, strict=True):
        print(f"--- run {config.name}: exit {code}\n{out}{err}")
        assert code == 3, err
        assert "Traceback" not in out + err
        assert "state" in err
        assert "full" in err
    (existing / "filler").unlink()
    reopened = Store(existing / "state.db")
    reopened.open()
    reopened.close()


async def test_disk_filling_up_after_start_is_watchdog_crashed_exit_4(
    tmp_path: Path, tmpfs: Callable[[str, str], Path], start_simulator: Callable[..., Any]
) -> None:
    """When the state file can no longer be written after start, the daemon logs
    watchdog.crashed (the store's "disk is full" message) and exits 4 instead of running on
    with state it cannot keep; with room again it starts and resumes the same alerts."""
    sim: Simulator = await start_simulator([stuck_in_queue(i, scale=600) for i in (1, 2)])
    folder = tmpfs("fills-up", "size=1m")
    config = state_config(tmp_path, folder / "state.db", sim.base_url)
    proc = await asyncio.create_subprocess_exec(
        SCRIPT, "run", "--config", str(config), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=child_env(),
    )  # fmt: skip
    assert proc.stdout is not None
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(30):
        async for line in proc.stdout:
            events.append(json.loads(line))
            if sum(e["event"] == "cycle.completed" for e in events) >= 2:
                break
        filled = fill(folder)
        async for line in proc.stdout:
            events.append(json.loads(line))
        code = await proc.wait()
    assert proc.stderr is not None
    err = (await proc.stderr.read()).decode()
    print(f"filled {filled} bytes after 2 cycles; exit {code}\n{err}")
    print("\n".join(json.dumps(e) for e in events))
    assert code == 4, err
    assert "Traceback" not in err
    crashed = [e for e in events if e["event"] == "watchdog.crashed"]
    assert len(crashed) == 1
    assert crashed[0]["error"] == "StoreError"
    assert "full" in crashed[0]["message"]
    stuck = {e["fingerprint"]: e["starts_at"] for e in events if e["event"] == "task.stuck"}
    assert len(stuck) == 2

    (folder / "filler").unlink()
    code, out, err = await run_script("check", "--format", "json", "--config", str(config))
    print(f"--- check after freeing space: exit {code}\n{out}{err}")
    assert code == 1, err
    assert "task.stuck" not in err  # the same alerts: nothing fired anew
    assert sorted(t["alerts"] for t in json.loads(out)["tasks"]) == [["queued_too_long"]] * 2
