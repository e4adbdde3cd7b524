"""Settings: sources and their priority, durations, validation messages, masking."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from watchdog.errors import ConfigError
from watchdog.models import Rule
from watchdog.settings import load_settings, masked, parse_duration, redact_url


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No WATCHDOG_* variable of the developer's shell leaks into a test."""
    import os

    for name in list(os.environ):
        if name.upper().startswith("WATCHDOG_") or name in ("CREDENTIALS_DIRECTORY",):
            monkeypatch.delenv(name)
    return monkeypatch


def load(
    tmp_path: Path, toml: str | None = None, secrets: Path | None = None, **overrides: object
) -> object:
    config = write(tmp_path / "watchdog.toml", toml) if toml is not None else None
    return load_settings(
        config, secrets_dir=secrets, overrides=overrides, use_default_secrets_dir=False
    )


def problems(tmp_path: Path, toml: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, toml)
    return dict(info.value.problems)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (0, 0.0),
        (90, 90.0),
        (1.5, 1.5),
        (False, 0.0),
        ("90", 90.0),
        ("90s", 90.0),
        ("30m", 1800.0),
        ("4h", 14400.0),
        ("1d", 86400.0),
        ("1h30m", 5400.0),
        ("250ms", 0.25),
        (" 2H ", 7200.0),
        ("0", 0.0),
    ],
)
def test_durations_parse(text: object, seconds: float) -> None:
    """Durations accept seconds (int/float), false, and strings like '90s', '30m', '1h30m'."""
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "10x", "-5", -1, "5m garbage", True, None, "nan"])
def test_bad_durations_are_rejected(text: object) -> None:
    """Garbage, negatives and true are not durations."""
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_toml_file_and_defaults(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    """A minimal file gets PRODUCT.md's defaults for every other key."""
    settings = load(tmp_path, '[api]\ntoken = "t"\n[tasks]\nids = [101, 102]\n')
    assert settings.tasks.ids == [101, 102]  # type: ignore[attr-defined]
    assert settings.poll.interval == 60.0  # type: ignore[attr-defined]
    assert settings.rules.queued_max == 1800.0  # type: ignore[attr-defined]
    assert settings.alerts.repeat_interval == 4 * 3600.0  # type: ignore[attr-defined]
    assert settings.server.listen == "127.0.0.1:9465"  # type: ignore[attr-defined]
    assert settings.api.base_url == "https://cloud.smartdocumentor.net"  # type: ignore[attr-defined]


def test_priority_env_over_secrets_over_file(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    """Flags > environment > secret files > TOML file > defaults."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    write(secrets / "WATCHDOG_API__TOKEN", "from-secret\n")
    write(secrets / "watchdog_poll__interval", "  7s  \n")
    toml = '[api]\ntoken = "from-file"\n[poll]\ninterval = "9s"\nshutdown_timeout = 3\n'
    settings = load(tmp_path, toml, secrets)
    assert settings.api.token.get_secret_value() == "from-secret"  # type: ignore[attr-defined]
    assert settings.poll.interval == 7.0  # type: ignore[attr-defined]
    assert settings.poll.shutdown_timeout == 3.0  # type: ignore[attr-defined]
    clean_env.setenv("WATCHDOG_POLL__INTERVAL", "5s")
    clean_env.setenv("WATCHDOG_TASKS__IDS", "[1,2]")
    settings = load(tmp_path, toml, secrets)
    assert settings.poll.interval == 5.0  # type: ignore[attr-defined]
    assert settings.tasks.ids == [1, 2]  # type: ignore[attr-defined]
    settings = load(tmp_path, toml, secrets, poll={"interval": 4})
    assert settings.poll.interval == 4.0  # type: ignore[attr-defined]


def test_unrelated_env_and_secret_files_are_ignored(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    """WATCHDOG_* variables and files that match no key belong to someone else."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    write(secrets / "watchdog_nothing__here", "x")
    write(secrets / "db_password", "x")
    clean_env.setenv("WATCHDOG_CONFIG", "/nope.toml")
    clean_env.setenv("WATCHDOG_API__NOT_A_KEY", "1")
    clean_env.setenv("WATCHDOG_SOMETHING", "1")
    settings = load(tmp_path, '[api]\ntoken = "t"\n', secrets)
    assert settings.api.token is not None  # type: ignore[attr-defined]


def test_unknown_file_keys_are_errors_naming_every_key(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    """Every bad key is named at once, with why."""
    found = problems(
        tmp_path,
        '[api]\ntoken = "t"\ntimeout = 0\n[poll]\nintervall = 5\n[bogus]\nx = 1\n'
        '[rules]\nqueued_max = "soon"\n[log]\nformat = "xml"\n',
    )
    assert set(found) == {
        "api.timeout",
        "poll.intervall",
        "bogus",
        "rules.queued_max",
        "log.format",
    }
    assert found["poll.intervall"] == "unknown key"
    assert "greater than 0" in found["api.timeout"]


@pytest.mark.parametrize(
    ("api", "message"),
    [
        ("", "exactly one of token or client_id"),
        ('token = "t"\nclient_id = "c"\nclient_secret = "s"', "not both"),
        ('client_id = "c"', "together"),
        ('token = "t"\nbase_url = "http://example.com"', "loopback"),
        ('token = "t"\nbase_url = "ftp://example.com"', "http"),
    ],
)
def test_api_section_rules(
    tmp_path: Path, clean_env: pytest.MonkeyPatch, api: str, message: str
) -> None:
    """Exactly one auth method; http:// only for loopback unless allow_insecure."""
    found = problems(tmp_path, f"[api]\n{api}\n")
    assert any(message in m for m in found.values()), found


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080", "http://localhost:1", "http://[::1]:80", "http://127.9.9.9"]
)
def test_http_allowed_on_loopback(tmp_path: Path, clean_env: pytest.MonkeyPatch, url: str) -> None:
    """Loopback hosts may use plain http (the simulator, a local proxy)."""
    assert load(tmp_path, f'[api]\ntoken = "t"\nbase_url = "{url}"\n')


def test_allow_insecure_permits_remote_http(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    """allow_insecure = true is the explicit opt-in for remote http://."""
    toml = '[api]\ntoken = "t"\nbase_url = "http://sd.internal"\nallow_insecure = true\n'
    assert load(tmp_path, toml)


def test_relative_paths_are_relative_to_the_file(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    """tasks.file and state.path in the file resolve against the file's folder."""
    write(tmp_path / "tasks.txt", "1\n")
    settings = load(
        tmp_path, '[api]\ntoken = "t"\n[tasks]\nfile = "tasks.txt"\n[state]\npath = "s.db"\n'
    )
    assert settings.tasks.file == tmp_path / "tasks.txt"  # type: ignore[attr-defined]
    assert settings.state.path == tmp_path / "s.db"  # type: ignore[attr-defined]


def test_missing_config_file_is_an_error(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    """A --config that does not exist is a config error."""
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml", use_default_secrets_dir=False)


def test_state_path_defaults_to_systemd_state_directory(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    """Under systemd the state lives in $STATE_DIRECTORY."""
    clean_env.setenv("STATE_DIRECTORY", str(tmp_path))
    settings = load(tmp_path, '[api]\ntoken = "t"\n')
    assert settings.state.path == tmp_path / "sd-watchdog.db"  # type: ignore[attr-defined]


def test_rules_for_and_false_disable(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    """[rules.for] maps rule names to durations; false disables a threshold."""
    settings = load(
        tmp_path,
        '[api]\ntoken = "t"\n[rules]\nmax_restarts = false\nreview_max = "2h"\n'
        'queued_max = false\n[rules.for]\nno_pages = "5m"\n',
    )
    rules = settings.rules  # type: ignore[attr-defined]
    assert rules.max_restarts == 0
    assert rules.queued_max == 0
    assert rules.review_max == 7200
    assert rules.for_ == {Rule.NO_PAGES: 300.0}
    assert problems(tmp_path, '[api]\ntoken = "t"\n[rules.for]\nnot_a_rule = 5\n')


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ('[tasks]\nshard = "3/3"', "tasks.shard"),
        ('[tasks]\nshard = "x"', "tasks.shard"),
        ("[tasks]\nids = [0]", "tasks.ids.0"),
        ("[tasks]\nids = [true]", "tasks.ids"),
        ('[server]\nlisten = "nohost"', "server.listen"),
        ('[server]\nlisten = "example.com:80"', "server.listen"),
        ("[api.x]\ny = 1", "api.x"),
        ("[alerts]\nmax_alerts_per_request = 0", "alerts.max_alerts_per_request"),
        ('[[alerts.webhooks]]\nurl = "nope"', "alerts.webhooks.0.url"),
        ('[[alerts.webhooks]]\nurl = "https://h"\nmin_severity = "x"',
         "alerts.webhooks.0.min_severity"),
        ('[[alerts.webhooks]]\nurl = "https://h"\nformat = "xml"', "alerts.webhooks.0.format"),
        ('[phases]\ndone = ["A"]\nfailed = ["a"]', "phases"),
        ("[poll]\ninterval = 0", "poll.interval"),
    ],
)  # fmt: skip
def test_bad_values_name_their_key(
    tmp_path: Path, clean_env: pytest.MonkeyPatch, section: str, key: str
) -> None:
    """Each invalid value is reported under its dotted key."""
    found = problems(tmp_path, f'[api]\ntoken = "t"\n{section}\n')
    assert key in found, found


def test_url_credentials_and_authorization_header_conflict(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    """A webhook cannot carry credentials both in its URL and in an Authorization header."""
    found = problems(
        tmp_path,
        '[api]\ntoken = "t"\n[[alerts.webhooks]]\nurl = "https://u:p@h/x"\n'
        'headers = { Authorization = "Bearer x" }\n',
    )
    assert "alerts.webhooks.0" in found


def test_webhook_secret_file_is_read_and_stripped(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    """secret_file (relative to the config) gives the signing key without whitespace."""
    write(tmp_path / "hook.secret", "  s3cret\n")
    settings = load(
        tmp_path,
        '[api]\ntoken = "t"\n[[alerts.webhooks]]\nurl = "https://h/x"\n'
        'secret_file = "hook.secret"\n',
    )
    key = settings.alerts.webhooks[0].signing_key()  # type: ignore[attr-defined]
    assert key is not None
    assert key.get_secret_value() == "s3cret"


def test_masked_output_hides_every_secret(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    """validate's view of the config contains no secret value."""
    settings = load(
        tmp_path,
        '[api]\nclient_id = "cid"\nclient_secret = "CLIENT-SECRET"\n'
        '[[alerts.webhooks]]\nurl = "https://user:URLPASS@h.example/p?key=QUERYKEY"\n'
        'secret = "HOOK-SECRET"\nheaders = { X-Api-Key = "HEADER-SECRET" }\n'
        '[[alerts.webhooks]]\nurl = "https://hooks.slack.com/services/T0/B0/SLACKPATH"\n'
        '[alerts.heartbeat]\nurl = "https://hc.example/ping/HB-UUID?x=1"\n',
    )
    text = json.dumps(masked(settings))  # type: ignore[arg-type]
    secrets = ("CLIENT-SECRET", "URLPASS", "QUERYKEY", "HOOK-SECRET", "HEADER-SECRET", "SLACKPATH")
    for secret in (*secrets, "HB-UUID"):
        assert secret not in text
    assert "h.example" in text


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:pw@hooks.example.com/x?y=1", "https://hooks.example.com"),
        ("http://127.0.0.1:9093/api", "http://127.0.0.1:9093"),
        ("http://[::1]:80/", "http://[::1]:80"),
    ],
)
def test_redact_url_keeps_scheme_and_host(url: str, shown: str) -> None:
    """URLs are logged as scheme and host only."""
    assert redact_url(url) == shown
