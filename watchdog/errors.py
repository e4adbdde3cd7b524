"""The exception tree of sd-watchdog.

    WatchdogError
    ├── ConfigError      bad configuration or usage            → exit 2
    ├── StartupError     could not start (port, state file, …) → exit 3
    │   └── StoreError   the state store is unwritable or corrupt
    └── ApiError         a SmartDocumentor request failed (translated once, in client.py)
        └── AuthError    the API rejected our credentials (401/403, invalid_client)

Lower-level exceptions (aiohttp, ssl, sqlite3, OSError) are translated into these at the
boundary that sees them, with ``raise … from``; code above a boundary catches only these.
"""

from __future__ import annotations

# The exit codes of PRODUCT.md, here so that the CLI need not import the daemon to know them.
EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_STARTUP = 3
EXIT_CRASHED = 4
EXIT_FORCED = 130


class WatchdogError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(WatchdogError):
    """The configuration (or the command line) is invalid.

    ``problems`` lists ``(key, message)`` pairs, one per bad key, so the CLI can name them all.
    """

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{key}: {msg}" if key else msg for key, msg in problems))


class StartupError(WatchdogError):
    """The daemon could not start: state path unwritable, store corrupt, port taken, …"""


class StoreError(StartupError):
    """The SQLite state store cannot be opened, migrated or written."""


class ApiError(WatchdogError):
    """A SmartDocumentor request failed.

    ``kind`` is the short name logged as ``error`` in ``api.error`` (``timeout``,
    ``connection``, ``http_status``, ``invalid_response``, ``too_large``, ``auth``, …).
    """

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.kind = kind
        self.status = status
        self.retry_after = retry_after
        super().__init__(message)


class AuthError(ApiError):
    """The API rejected our credentials (401/403 on status, or the token endpoint refused)."""
