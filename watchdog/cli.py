"""argv → run | check | validate | health | demo. Maps our exceptions to exit codes; the only
place that calls ``sys.exit``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from watchdog import logs
from watchdog.errors import (
    EXIT_CONFIG,
    EXIT_CRASHED,
    EXIT_OK,
    EXIT_STARTUP,
    ConfigError,
    StartupError,
)
from watchdog.settings import Settings, load_settings, masked
from watchdog.tasks import watched_tasks

_ENV_CONFIG = "WATCHDOG_CONFIG"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # usage errors are exit 2 without a traceback
        self.print_usage(sys.stderr)
        sys.stderr.write(f"sd-watchdog: error: {message}\n")
        raise SystemExit(EXIT_CONFIG)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sd-watchdog",
        description="Watches SmartDocumentor tasks and raises the alarm when one looks stuck.",
    )
    parser.add_argument("--version", action="version", version=f"sd-watchdog {logs.VERSION}")
    common = _Parser(add_help=False)
    common.add_argument(
        "--config",
        metavar="FILE",
        help=f"TOML configuration file (default: ${_ENV_CONFIG}, else environment only)",
    )
    common.add_argument("--secrets-dir", metavar="DIR", help="folder of secret files")
    common.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    common.add_argument("--log-format", choices=["json", "console", "auto"])
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    commands.add_parser(
        "run", parents=[common], help="the daemon: poll on a schedule until SIGTERM/SIGINT"
    )
    check = commands.add_parser(
        "check", parents=[common], help="one poll cycle, print a report, exit 0/1/3"
    )
    check.add_argument("--format", choices=["table", "json"], default="table")
    check.add_argument(
        "--notify", action="store_true", help="deliver alerts (and undelivered ones)"
    )
    commands.add_parser(
        "validate", parents=[common], help="validate the configuration and print it, masked"
    )
    commands.add_parser(
        "health", parents=[common], help="ask the running daemon's /healthz (exit 0 healthy)"
    )
    demo = commands.add_parser(
        "demo", help="run against the built-in simulator: every rule fires (about a minute)"
    )
    demo.add_argument("--duration", type=float, default=60.0, help=argparse.SUPPRESS)
    demo.add_argument("--log-format", choices=["json", "console", "auto"], default="auto")
    return parser


def _load(args: argparse.Namespace) -> Settings:
    config = args.config or os.environ.get(_ENV_CONFIG) or None
    overrides: dict[str, Any] = {}
    log_over: dict[str, str] = {}
    if args.log_level:
        log_over["level"] = args.log_level
    if args.log_format:
        log_over["format"] = args.log_format
    if log_over:
        overrides["log"] = log_over
    settings = load_settings(config, secrets_dir=args.secrets_dir, overrides=overrides)
    watched_tasks(settings.tasks)  # a bad tasks file is a config error now, not at start
    return settings


def _print_config_error(err: ConfigError, out: TextIO) -> None:
    out.write("sd-watchdog: invalid configuration:\n")
    for key, message in err.problems:
        out.write(f"  {key}: {message}\n" if key else f"  {message}\n")


def main(argv: Sequence[str] | None = None) -> None:
    sys.exit(run_cli(argv))


def run_cli(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from watchdog.demo import run_demo  # noqa: PLC0415 (lazy: fast start-up)

        logs.configure("info", args.log_format)
        return asyncio.run(run_demo(duration=args.duration))
    try:
        settings = _load(args)
    except ConfigError as err:
        _print_config_error(err, sys.stderr)
        # A health probe answers healthy or not: Docker reserves exit code 2.
        return 1 if args.command == "health" else EXIT_CONFIG
    if args.command == "validate":
        sys.stdout.write(json.dumps(masked(settings), indent=2) + "\n")
        return EXIT_OK
    if args.command == "health":
        from watchdog.health import check_health  # noqa: PLC0415 (lazy: fast start-up)

        return check_health(settings)
    if args.command == "check":
        from watchdog.report import run_check  # noqa: PLC0415 (lazy: fast start-up)

        logs.configure(settings.log.level, settings.log.format, stream=sys.stderr)
        try:
            return asyncio.run(run_check(settings, fmt=args.format, notify=args.notify))
        except StartupError as err:
            sys.stderr.write(f"sd-watchdog: could not start: {err}\n")
            return EXIT_STARTUP
    logs.configure(settings.log.level, settings.log.format)
    return _run_daemon(settings, args)


def _run_daemon(settings: Settings, args: argparse.Namespace) -> int:
    from watchdog.app import App  # noqa: PLC0415 (lazy: validate and health start fast)

    app = App(settings, reload=lambda: _load(args))
    try:
        return asyncio.run(app.serve())
    except ConfigError as err:
        _print_config_error(err, sys.stderr)
        return EXIT_CONFIG
    except StartupError as err:
        sys.stderr.write(f"sd-watchdog: could not start: {err}\n")
        return EXIT_STARTUP
    except Exception as exc:  # noqa: BLE001 (last resort: say so, structured, and exit 4)
        logs.get_logger().error(
            "watchdog.crashed", error=type(exc).__name__, message=str(exc)[:500], exc_info=exc
        )
        return EXIT_CRASHED


if __name__ == "__main__":  # pragma: no cover
    main()
