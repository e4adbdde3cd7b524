"""A session-wide secret scan (issue 5, Security): no test's captured output may contain one of
the fake secrets the suite configures.

Registered from ``tests/conftest.py`` with ``pytest_plugins = ("tests.secretscan",)``; a run
can opt out with ``-p no:tests.secretscan``. For every test phase it reads what pytest captured
(stdout, stderr and log records: ``report.sections``) and the structured log lines of the
``captured_logs`` fixture (any fixture value with an ``io.StringIO`` ``stream``), and at the end
of the session it fails the run (exit 1) naming each test whose output held a known secret.
Tests that run the console script print its output, so that it is scanned too.

Tracebacks of failing tests are not scanned: they quote the test's own source, secrets included.
"""

from __future__ import annotations

import io
from collections.abc import Iterable

import pytest

#: Fake secret values the tests configure (grep the tests for more when adding one). Each is
#: long and odd enough never to be a substring of ordinary output.
KNOWN_SECRETS: tuple[str, ...] = (
    "test-token-7f3a9c",  # tests.conftest.TOKEN
    "st4tic-T0KEN-do-not-leak",  # test_client
    "cl1ent-S3CRET-do-not-leak",
    "hook-secret-0a1b2c",  # test_notify
    "URLPASSWORD",
    "QUERYTOKEN",
    "HEADERKEY",
    "hook-secret-5d2e81",  # test_prometheus
    "CLIENT-SECRET",  # test_settings
    "HOOK-SECRET",
    "HEADER-SECRET",
    "hunter2",  # test_client's ~/.netrc password
    "fuzz-token-3c9e1d7a",  # test_config_fuzz
    "fuzz-client-secret-8b2f6e",
    "fuzz-hook-secret-4d7a0c",
    "fuzz-url-pass-e5190b",
    "fuzz-header-val-72c4aa",
    "sec-token-5f0d2a91",  # test_security
    "sec-client-secret-c38e77",
    "sec-issued-token-91ab4e",
    "sec-hook-secret-0d6b3f",
    "sec-hook-file-secret-7e21c4",
    "sec-url-pass-a40f19",
    "sec-query-token-2bd865",
    "sec-header-value-66c0e2",
    "sec-am-pass-f1938d",
    "sec-heartbeat-uuid-4c77ab",
    "sec-proxy-pass-8e5b03",
)


def known_secrets() -> tuple[str, ...]:
    """KNOWN_SECRETS, and tests.conftest.TOKEN as it is now (should it ever change)."""
    try:
        from tests.conftest import TOKEN
    except ImportError:  # the plugin used outside this repository
        return KNOWN_SECRETS
    return tuple(dict.fromkeys((*KNOWN_SECRETS, TOKEN)))


class SecretScan:
    """Collects hits per test; fails the session when there are any."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = tuple(s for s in secrets if s)
        self.hits: dict[str, set[tuple[str, str]]] = {}
        self.reports = 0
        self.scanned = 0  # characters

    def scan(self, nodeid: str, where: str, text: str) -> None:
        self.scanned += len(text)
        for secret in self.secrets:
            if secret in text:
                self.hits.setdefault(nodeid, set()).add((where, secret))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.reports += 1
        for title, content in report.sections:
            self.scan(report.nodeid, title, content)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> object:
        report = yield
        if call.when == "call":
            for name, value in getattr(item, "funcargs", {}).items():
                stream = getattr(value, "stream", None)
                if isinstance(stream, io.StringIO):
                    self.scan(item.nodeid, f"fixture {name}", stream.getvalue())
        return report

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.hits and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        tr = terminalreporter
        figures = (
            f"{self.reports:,} test reports, {self.scanned:,} characters of captured output, "
            f"{len(self.secrets)} known secrets"
        )
        if not self.hits:
            tr.write_line(f"secret scan: {figures}: none found")
            return
        tr.write_sep("=", "SECRET SCAN FAILED", red=True)
        tr.write_line(f"secret scan: {figures}: found in {len(self.hits)} tests")
        for nodeid, found in sorted(self.hits.items()):
            for where, secret in sorted(found):
                tr.write_line(f"  {nodeid} [{where}]: {secret!r}", red=True)


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(SecretScan(known_secrets()), "secretscan-session")
