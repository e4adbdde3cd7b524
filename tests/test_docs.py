"""The documentation keeps its promises: the example config validates, README snippets parse, and
every rule and log event of the contract is documented."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from watchdog.models import Rule
from watchdog.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
EXAMPLE_CONFIG = ROOT / "config" / "watchdog.example.toml"
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

_FENCE = re.compile(r"^```(\w*)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def _readme() -> str:
    return README.read_text(encoding="utf-8")


def _fenced(language: str) -> list[str]:
    return [body for lang, body in _FENCE.findall(_readme()) if lang == language]


def _section(title: str) -> str:
    """The README text from the heading ``title`` up to the next heading of any level."""
    match = re.search(rf"^#+ {re.escape(title)}\n(.*?)(?=^#+ |\Z)", _readme(), re.M | re.S)
    assert match is not None, f"README has no section {title!r}"
    return match.group(1)


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
    """Every ```toml block parses, and one with an [api] table is a valid configuration."""
    data = tomllib.loads(body)
    if "api" not in data:
        return
    path = tmp_path / "watchdog.toml"
    path.write_text(body, encoding="utf-8")
    load_settings(path, use_default_secrets_dir=False)


@pytest.mark.parametrize("rule", [rule.value for rule in Rule])
def test_readme_documents_every_rule(rule: str) -> None:
    """Each stable rule name appears in the README."""
    assert f"`{rule}`" in _readme()


@pytest.mark.parametrize("event", CONTRACT_EVENTS)
def test_readme_documents_every_log_event(event: str) -> None:
    """Each log event of the contract appears in the README."""
    assert f"`{event}`" in _readme()


def test_quick_start_is_make_demo_and_make_test() -> None:
    """The Quick start section gives the two set-up commands."""
    quick_start = _section("Quick start")
    assert "make demo" in quick_start
    assert "make test" in quick_start
