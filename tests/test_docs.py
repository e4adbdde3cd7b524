"""The documentation keeps its promises: the example config validates, README snippets parse and
run, the payload examples match the code, and every rule, configuration key, metric, log event
and log field the code has is documented."""

from __future__ import annotations

import ast
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast, get_args, get_origin

import pytest
from aiohttp import web
from pydantic import BaseModel
from pytest_aiohttp import AiohttpServer

from tests.conftest import make_settings
from watchdog.alerts import Policy, Transition, step
from watchdog.clock import SystemClock
from watchdog.logs import get_logger
from watchdog.models import Finding, Rule, Severity, TaskRef, fingerprint
from watchdog.notify import Notifier
from watchdog.payloads import alertmanager_body, notices, signature, webhook_body
from watchdog.settings import Settings, load_settings
from watchdog.store import Store

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
EVENTS_DOC = ROOT / "docs" / "events.md"
EXAMPLE_CONFIG = ROOT / "config" / "watchdog.example.toml"
PACKAGE = ROOT / "watchdog"
SCRIPT = Path(sys.executable).parent / "sd-watchdog"

#: every event name of PRODUCT.md's "Log events" table
CONTRACT_EVENTS = (
    "watchdog.started",
    "watchdog.stopped",
    "watchdog.crashed",
    "config.reloaded",
    "config.rejected",
    "config.no_tasks",
    "cycle.completed",
    "cycle.overrun",
    "task.stuck",
    "task.recovered",
    "task.finished",
    "task.not_found",
    "task.unknown_status",
    "alert.flapping",
    "api.error",
    "api.unavailable",
    "api.recovered",
    "clock.skew",
    "alert.delivered",
    "alert.delivery_failed",
)

#: the secret the README's signed example delivery was made with
EXAMPLE_SECRET = "s3cr3t"

Verifier = Callable[[str, Mapping[str, str], bytes], bool]

_FENCE = re.compile(r"^```(\w*)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_EVENT_NAME = re.compile(r"[a-z]+\.[a-z_]+")
_LOG_METHODS = frozenset({"debug", "info", "warning", "error"})


def _readme() -> str:
    return README.read_text(encoding="utf-8")


def _events_doc() -> str:
    return EVENTS_DOC.read_text(encoding="utf-8")


def _fenced(language: str, text: str | None = None) -> list[str]:
    source = _readme() if text is None else text
    return [body for lang, body in _FENCE.findall(source) if lang == language]


def _block(language: str, marker: str) -> str:
    """The one README block in ``language`` that contains ``marker``."""
    found = [body for body in _fenced(language) if marker in body]
    assert len(found) == 1, f"expected one ```{language} block with {marker!r}, got {len(found)}"
    return found[0]


def _section(title: str) -> str:
    """The README text from the heading ``title`` up to the next heading of any level."""
    match = re.search(rf"^#+ {re.escape(title)}\n(.*?)(?=^#+ |\Z)", _readme(), re.M | re.S)
    assert match is not None, f"README has no section {title!r}"
    return match.group(1)


def _event_section(event: str) -> str:
    """docs/events.md from ``### `event``` up to the next heading."""
    pattern = rf"^### `{re.escape(event)}`\n(.*?)(?=^#+ |\Z)"
    match = re.search(pattern, _events_doc(), re.M | re.S)
    assert match is not None, f"docs/events.md has no section for {event}"
    return match.group(1)


# --- the example configuration and the README's TOML ----------------------------------------


def test_example_config_validates_through_the_console_script() -> None:
    """`sd-watchdog validate --config config/watchdog.example.toml` exits 0."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("WATCHDOG_")}
    env.pop("CREDENTIALS_DIRECTORY", None)
    result = subprocess.run(
        [str(SCRIPT), "validate", "--config", str(EXAMPLE_CONFIG)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "replace-me" not in result.stdout  # the placeholder token is masked


def test_readme_has_toml_snippets() -> None:
    """The README shows configuration as TOML blocks, at least one of them a whole config."""
    blocks = [tomllib.loads(body) for body in _fenced("toml")]
    assert any("api" in block for block in blocks)


@pytest.mark.parametrize("body", _fenced("toml"))
def test_readme_toml_snippet_is_valid(body: str, tmp_path: Path) -> None:
    """Every ```toml block is a valid configuration (given a token when it shows no [api])."""
    data = tomllib.loads(body)
    if "api" not in data:
        body = '[api]\ntoken = "replace-me"\n\n' + body
    path = tmp_path / "watchdog.toml"
    path.write_text(body, encoding="utf-8")
    load_settings(path, use_default_secrets_dir=False)


@pytest.mark.parametrize("body", _fenced("json") + _fenced("json", EVENTS_DOC.read_text("utf-8")))
def test_json_snippets_parse(body: str) -> None:
    """Every ```json block of the docs is JSON (one document, or one per line)."""
    try:
        json.loads(body)
    except json.JSONDecodeError:
        for line in body.splitlines():
            json.loads(line)


def _config_keys() -> Iterator[tuple[str, str]]:
    """(table, key) for every leaf key of the configuration model."""

    def nested(annotation: Any) -> type[BaseModel] | None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return annotation
        if get_origin(annotation) is list:
            (item,) = get_args(annotation)
            if isinstance(item, type) and issubclass(item, BaseModel):
                return item
        return None

    def walk(model: type[BaseModel], table: str) -> Iterator[tuple[str, str]]:
        for name, info in model.model_fields.items():
            key = info.alias or name
            sub = nested(info.annotation)
            if sub is None:
                yield table, key
            else:
                yield from walk(sub, f"{table}.{key}" if table else key)

    yield from walk(Settings, "")


@pytest.mark.parametrize(("table", "key"), list(_config_keys()))
def test_every_config_key_is_in_the_readme_and_the_example(table: str, key: str) -> None:
    """The README's key table and the example config name every key of the settings model."""
    table_text = _section("Every key")
    assert f"`{key}`" in table_text or f"`[{table}.{key}]`" in table_text, f"{table}.{key}"
    example = EXAMPLE_CONFIG.read_text(encoding="utf-8")
    as_line = re.search(rf"^#?\s*{re.escape(key)}\s*=", example, re.M)
    as_table = re.search(rf"^#?\s*\[{re.escape(table)}\.{re.escape(key)}\]", example, re.M)
    assert as_line or as_table, f"{table}.{key} is missing from {EXAMPLE_CONFIG.name}"


def test_readme_has_no_unbuilt_markers() -> None:
    """Everything the README describes exists: no 'not built yet' or 'coming' notes remain."""
    text = _readme().lower()
    for marker in ("not built yet", "(coming)", "is coming", "are coming", "not emitted yet"):
        assert marker not in text


# --- rules, events, metrics ---------------------------------------------------------------


@pytest.mark.parametrize("rule", [rule.value for rule in Rule])
def test_readme_documents_every_rule(rule: str) -> None:
    """Each stable rule name appears in the README."""
    assert f"`{rule}`" in _readme()


@pytest.mark.parametrize("event", CONTRACT_EVENTS)
def test_readme_documents_every_log_event(event: str) -> None:
    """Each log event of the contract appears in the README and has a section in docs/events.md."""
    assert f"`{event}`" in _readme()
    assert _event_section(event).strip()


def _emitted_events() -> dict[str, set[str]]:
    """Every event name the package logs, with the fields it passes by keyword."""
    events: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in _LOG_METHODS
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
                and _EVENT_NAME.fullmatch(node.args[0].value)
            ):
                continue
            fields = events.setdefault(node.args[0].value, set())
            for keyword in node.keywords:
                if keyword.arg is not None:  # **fields spreads are not checked here
                    fields.add("exception" if keyword.arg == "exc_info" else keyword.arg)
    return events


def test_the_code_emits_every_contract_event() -> None:
    """The AST scan below sees what the code logs; the contract's events are all among them."""
    assert set(CONTRACT_EVENTS) <= set(_emitted_events())


@pytest.mark.parametrize(("event", "fields"), sorted(_emitted_events().items()))
def test_every_emitted_event_and_field_is_documented(event: str, fields: set[str]) -> None:
    """docs/events.md has a section for each event the code logs, naming every field it passes;
    the README's summary table names the event."""
    assert f"`{event}`" in _readme()
    section = _event_section(event)
    missing = sorted(f for f in fields if f"`{f}`" not in section)
    assert not missing, f"{event}: fields {missing} are not in docs/events.md"


def test_events_doc_describes_only_real_events() -> None:
    """No section of docs/events.md describes an event the code never logs."""
    documented = set(re.findall(r"^### `([a-z_.]+)`", _events_doc(), re.M))
    assert documented == set(_emitted_events())


def test_readme_documents_every_metric() -> None:
    """Each metric family of watchdog/metrics.py appears in the README's metrics table."""
    source = (PACKAGE / "metrics.py").read_text(encoding="utf-8")
    names = set(re.findall(r'f"\{PREFIX\}_([a-z_]+)"', source))
    assert len(names) >= 10
    table = _section("Metrics")
    missing = sorted(name for name in names if f"`sd_watchdog_{name}" not in table)
    assert not missing


def test_readme_internal_links_resolve() -> None:
    """Every ``](#anchor)`` link of the README points at one of its headings (GitHub's slugs)."""
    prose = _FENCE.sub("", _readme())
    headings = re.findall(r"^#+ (.+)$", prose, re.M)
    slugs = {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}
    links = set(re.findall(r"\]\(#([^)]+)\)", prose))
    assert links
    assert not sorted(links - slugs)


def test_quick_start_is_make_demo_and_make_test() -> None:
    """The Quick start section gives the two set-up commands."""
    quick_start = _section("Quick start")
    assert "make demo" in quick_start
    assert "make test" in quick_start


# --- the payload examples match the code -----------------------------------------------------


def _transitions(workspace_id: int | None = None) -> list[Transition]:
    """A real firing transition of processing_too_long for task 104, from the alert engine."""
    finding = Finding(Rule.PROCESSING_TOO_LONG, Severity.CRITICAL, "task 104 is stuck", {})
    now = datetime(2026, 11, 28, 21, 35, 15, tzinfo=UTC)
    _, changes = step({}, [finding], TaskRef.by_id(104), now, Policy(), workspace_id=workspace_id)
    return changes


def test_readme_payload_example_has_the_shape_of_a_real_payload() -> None:
    """The version-1 example has the keys, in order, of what webhook_body builds."""
    example = json.loads(_block("json", '"version": "1"'))
    real = json.loads(webhook_body(notices(_transitions(), {}, send_resolved=True)))
    assert list(example) == list(real)
    assert list(example["alerts"][0]) == list(real["alerts"][0])
    alert = example["alerts"][0]
    assert alert["fingerprint"] == fingerprint("id:104", alert["rule"])


def test_readme_alertmanager_example_has_the_shape_of_a_real_push() -> None:
    """The Alertmanager example has the labels and fields alertmanager_body sends, and its
    endsAt is 4 x resend_interval (60 s) after the push."""
    (example,) = json.loads(_block("json", '"alertname"'))
    now = datetime(2026, 11, 28, 21, 35, 15, tzinfo=UTC)
    changes = _transitions(workspace_id=1)
    (real,) = json.loads(alertmanager_body(notices(changes, {}, send_resolved=True), now, 60))
    assert sorted(example) == sorted(real)
    assert sorted(example["labels"]) == sorted(real["labels"])
    assert sorted(example["annotations"]) == sorted(real["annotations"])

    def parse(text: str) -> datetime:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    lead = parse(example["endsAt"]) - parse(example["startsAt"])
    assert abs(lead - timedelta(seconds=240)) < timedelta(seconds=1)


_NEEDS_AMTOOL = pytest.mark.skipif(
    shutil.which("amtool") is None and os.environ.get("CI") != "true",
    reason="amtool (Debian package prometheus-alertmanager) is not installed; .ci/run installs it",
)


@_NEEDS_AMTOOL
def test_readme_alertmanager_config_passes_amtool(tmp_path: Path) -> None:
    """The alertmanager.yml example is a valid Alertmanager configuration."""
    amtool = shutil.which("amtool")
    assert amtool is not None, "amtool is required under CI=true"
    path = tmp_path / "alertmanager.yml"
    path.write_text(_block("yaml", "route:"), encoding="utf-8")
    result = subprocess.run(
        [amtool, "check-config", str(path)], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- the signature verification snippet ------------------------------------------------------


def _snippet(now: float | None = None) -> Verifier:
    """The README's verify_signature, executed; with ``now``, its clock reads that time."""
    namespace: dict[str, Any] = {"__name__": "readme_snippet"}
    code = compile(_block("python", "def verify_signature"), "README.md", "exec")
    exec(code, namespace)  # noqa: S102 (the README's own snippet is what is under test)
    if now is not None:
        namespace["time"] = SimpleNamespace(time=lambda: now)
    return cast(Verifier, namespace["verify_signature"])


def _example_delivery() -> tuple[dict[str, str], bytes]:
    """The README's example headers, and its payload as it was sent (one compact line)."""
    headers: dict[str, str] = {}
    for line in _block("http", "X-Watchdog-Signature").splitlines()[1:]:
        name, _, value = line.partition(":")
        headers[name.strip()] = value.strip()
    body = json.dumps(json.loads(_block("json", '"version": "1"')), separators=(",", ":"))
    return headers, body.encode()


def test_readme_signed_example_is_genuine() -> None:
    """The README's example delivery is byte-exact: its signature is what the code computes,
    and the snippet accepts it within 5 minutes of its timestamp and refuses it after."""
    headers, body = _example_delivery()
    stamp = int(headers["X-Watchdog-Timestamp"])
    assert headers["X-Watchdog-Signature"] == signature(EXAMPLE_SECRET, stamp, body)
    assert len(body) == 1048  # the Content-Length the README states
    assert _snippet(now=stamp + 10)(EXAMPLE_SECRET, headers, body)
    assert not _snippet(now=stamp + 301)(EXAMPLE_SECRET, headers, body)


def test_signature_snippet_rejects_what_it_must() -> None:
    """Tampered body, wrong secret, stale or future timestamps, missing or junk headers."""
    verify = _snippet()
    body = webhook_body(notices(_transitions(), {}, send_resolved=True)).encode()

    def signed(stamp: int) -> dict[str, str]:
        return {
            "X-Watchdog-Timestamp": str(stamp),
            "X-Watchdog-Signature": signature("hook-secret", stamp, body),
        }

    now = int(time.time())
    assert verify("hook-secret", signed(now), body)
    assert not verify("hook-secret", signed(now), body.replace(b"104", b"105"))
    assert not verify("other-secret", signed(now), body)
    assert not verify("hook-secret", signed(now - 301), body)
    assert not verify("hook-secret", signed(now + 301), body)
    assert not verify("hook-secret", {}, body)
    assert not verify("hook-secret", {**signed(now), "X-Watchdog-Timestamp": "soon"}, body)
    forged = {**signed(now), "X-Watchdog-Signature": "sha256=ünïcode"}
    assert not verify("hook-secret", forged, body)


async def test_signature_snippet_accepts_a_live_signed_delivery(
    tmp_path: Path, aiohttp_server: AiohttpServer
) -> None:
    """A webhook delivery sent by the real notifier from the real outbox passes the snippet;
    the same request with one byte changed does not."""
    received: list[tuple[dict[str, str], bytes]] = []
    arrived = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        arrived.set()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    server = await aiohttp_server(app, host="127.0.0.1")
    settings = make_settings(
        alerts={
            "webhooks": [{"url": f"http://127.0.0.1:{server.port}/hook", "secret": "live-key"}],
            "retry_initial": 0.05,
            "timeout": 5,
        },
        state={"path": str(tmp_path / "state.db")},
    )
    clock = SystemClock()
    store = Store(settings.state.path)
    store.open()
    notifier = Notifier(settings, store, clock, get_logger())
    try:
        deliveries = notifier.plan(_transitions(), {})
        store.save(now=clock.now().timestamp(), deliveries=deliveries)
        await notifier.start()
        await asyncio.wait_for(arrived.wait(), timeout=10)
    finally:
        await notifier.close()
        store.close()
    headers, body = received[0]
    assert headers["X-Watchdog-Delivery"] == deliveries[0].delivery_id
    verify = _snippet()
    assert verify("live-key", headers, body)
    assert not verify("live-key", headers, body[:-1] + b" ")
