"""The configuration: one typed, validated object built from flags, environment, secret files,
the TOML file and defaults (highest priority first), as PRODUCT.md fixes it.

``load_settings`` is the only entry point; every failure becomes a ``ConfigError`` that names
each bad key.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from watchdog.errors import ConfigError
from watchdog.models import Rule, normalise_status

ENV_PREFIX = "WATCHDOG_"
MASK = "********"  # how validate shows a secret

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")


def parse_duration(value: object) -> float:
    """Seconds from a number or a string such as ``"90s"``, ``"1h30m"``; ``false`` is 0."""
    if value is False:
        return 0.0
    if isinstance(value, bool):
        raise ValueError("a duration cannot be true; use a number of seconds or e.g. '30m'")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an int beyond any float, e.g. from TOML
            raise ValueError("a duration must be finite") from None
    elif isinstance(value, str):
        text = value.strip().lower()
        if not text:
            raise ValueError("empty duration")
        try:
            seconds = float(text)
        except ValueError:
            seconds = 0.0
            pos = 0
            for match in _DURATION_PART.finditer(text):
                if match.start() != pos and text[pos : match.start()].strip():
                    break
                seconds += float(match.group(1)) * _UNITS[match.group(2)]
                pos = match.end()
            if pos == 0 or text[pos:].strip():
                raise ValueError(
                    f"invalid duration {value!r}: use seconds or a string like '90s', '30m', "
                    "'4h', '1d'"
                ) from None
    else:
        raise ValueError(f"invalid duration {value!r}")
    if not math.isfinite(seconds):
        raise ValueError("a duration must be finite")
    if seconds < 0:
        raise ValueError("a duration must be >= 0")
    return seconds


def _int_or_false(value: object) -> object:
    """``false`` disables an integer threshold (it means 0)."""
    if value is False:
        return 0
    if value is True:
        raise ValueError("use a number or false")
    return value


Duration = Annotated[float, BeforeValidator(parse_duration)]
PositiveDuration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
IntOrFalse = Annotated[int, BeforeValidator(_int_or_false), Field(ge=0)]


def _empty_to_none(value: object) -> object:
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _path_text(value: object) -> object:
    if isinstance(value, str) and "\x00" in value:  # the OS would refuse it later, less clearly
        raise ValueError("a path cannot contain a NUL character")
    return value


OptionalPath = Annotated[Path | None, BeforeValidator(_path_text), BeforeValidator(_empty_to_none)]
OptionalSecret = Annotated[SecretStr | None, BeforeValidator(_empty_to_none)]
OptionalStr = Annotated[str | None, BeforeValidator(_empty_to_none)]


def is_loopback_host(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost.

    Not ``*.localhost``: most resolvers send those names to DNS, which may answer with any
    address, and http:// would then carry the token in clear text off the machine."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_http_url(value: str, *, what: str) -> str:
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises for a port that is not a number in 0-65535
    except ValueError:  # the message would quote the URL, which may carry credentials
        raise ValueError(f"{what} is not a valid URL (host or port)") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} must be an http:// or https:// URL with a host")
    return value


def redact_url(url: str) -> str:
    """Scheme and host only: how URLs that may carry credentials appear in logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


_HEADER_TOKEN = re.compile(r"[\x21-\x7e]+")  # a bearer token: visible ASCII
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ApiSettings(_Section):
    base_url: str = "https://cloud.smartdocumentor.net"
    allow_insecure: bool = False
    ca_file: OptionalPath = None
    token: OptionalSecret = None
    client_id: OptionalStr = None
    client_secret: OptionalSecret = None
    timeout: PositiveDuration = 10.0
    concurrency: int = Field(default=16, ge=1, le=10_000)
    retries: int = Field(default=3, ge=0, le=100)
    retry_after_max: Duration = 60.0
    #: first retry wait; doubled on each further attempt, with jitter (tests set it small)
    retry_backoff: Duration = 0.5
    rate_limit: float = Field(default=0.0, ge=0)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        value = _check_http_url(value.rstrip("/"), what="base_url")
        parts = urlsplit(value)
        if parts.username is not None or parts.password is not None:
            # aiohttp refuses user-info next to our Authorization header, and validate would
            # print it: credentials belong in token or client_id / client_secret
            raise ValueError("base_url must not contain credentials (user:password@)")
        return value

    @field_validator("token")
    @classmethod
    def _token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _HEADER_TOKEN.fullmatch(value.get_secret_value()):
            # it becomes "Authorization: Bearer <token>"; aiohttp refuses control characters
            raise ValueError("token must be printable ASCII without spaces")
        return value

    @model_validator(mode="after")
    def _auth_and_scheme(self) -> ApiSettings:
        parts = urlsplit(self.base_url)
        if (
            parts.scheme == "http"
            and not self.allow_insecure
            and not is_loopback_host(parts.hostname or "")
        ):
            raise ValueError(
                "base_url: http:// is only accepted for loopback hosts; use https:// "
                "or set allow_insecure = true"
            )
        has_token = self.token is not None
        has_client = self.client_id is not None or self.client_secret is not None
        if has_token and has_client:
            raise ValueError("set exactly one of token or client_id + client_secret, not both")
        if not has_token and not has_client:
            raise ValueError("set exactly one of token or client_id + client_secret")
        if has_client and (self.client_id is None or self.client_secret is None):
            raise ValueError("client_id and client_secret must be set together")
        return self


def _parse_shard(value: object) -> object:
    if isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]+)\s*/\s*([0-9]+)\s*", value)
        if not match:
            raise ValueError("shard must look like 'i/N', e.g. '0/3'")
        return (int(match.group(1)), int(match.group(2)))
    return value  # e.g. [0, 3] from TOML: the tuple's own validation, then the range check


def _check_shard(value: tuple[int, int]) -> tuple[int, int]:
    index, total = value
    if total < 1 or not 0 <= index < total:
        raise ValueError("shard 'i/N' needs N >= 1 and 0 <= i < N")
    return value


class TasksSettings(_Section):
    ids: list[Annotated[int, Field(ge=1)]] = Field(default_factory=list)
    external_ids: list[Annotated[str, Field(min_length=1, max_length=512)]] = Field(
        default_factory=list
    )
    file: OptionalPath = None
    # NoDecode: "1/3" from the environment is text, not JSON
    shard: Annotated[
        tuple[int, int], BeforeValidator(_parse_shard), AfterValidator(_check_shard), NoDecode
    ] = (0, 1)

    @field_validator("ids", mode="before")
    @classmethod
    def _no_bool_ids(cls, value: object) -> object:
        if isinstance(value, list) and any(isinstance(v, bool) for v in value):
            raise ValueError("task ids must be integers")
        return value


class PollSettings(_Section):
    interval: PositiveDuration = 60.0
    done_interval: Duration = 3600.0
    max_interval: Duration = 0.0
    shutdown_timeout: Duration = 5.0


class RulesSettings(_Section):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    queued_max: Duration = 1800.0
    processing_max: Duration = 3600.0
    processing_per_page: Duration = 0.0
    max_restarts: IntOrFalse = 3
    zero_pages_after: Duration = 900.0
    no_progress: Duration = 2700.0
    review_max: Duration = 0.0
    for_: dict[Rule, Duration] = Field(default_factory=dict, alias="for")


class PhasesSettings(_Section):
    done: list[str | int] = Field(default_factory=list)
    review: list[str | int] = Field(default_factory=list)
    failed: list[str | int] = Field(default_factory=list)
    queued: list[str | int] = Field(default_factory=list)
    processing: list[str | int] = Field(default_factory=list)

    @model_validator(mode="after")
    def _no_conflicts(self) -> PhasesSettings:
        seen: dict[str, str] = {}
        for phase in ("done", "review", "failed", "queued", "processing"):
            for entry in getattr(self, phase):
                norm = str(entry) if isinstance(entry, int) else normalise_status(entry)
                if not norm:
                    raise ValueError(f"{phase}: empty status text")
                if norm in seen and seen[norm] != phase:
                    raise ValueError(f"status {entry!r} is listed in both {seen[norm]} and {phase}")
                seen[norm] = phase
        return self


class WebhookSettings(_Section):
    url: str
    secret: OptionalSecret = None
    secret_file: OptionalPath = None
    format: Literal["json", "slack"] = "json"
    headers: dict[str, str] = Field(default_factory=dict)
    min_severity: Literal["info", "warning", "critical"] = "info"

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_http_url(value, what="url")

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        # aiohttp refuses such a request, which would drop every delivery to this webhook
        for name, text in value.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError("header names must be HTTP tokens (letters, digits, '-', …)")
            if any((ord(ch) < 0x20 and ch != "\t") or ord(ch) == 0x7F for ch in text):
                raise ValueError(f"header {name}: the value contains a control character")
        return value

    @model_validator(mode="after")
    def _one_secret(self) -> WebhookSettings:
        if self.secret is not None and self.secret_file is not None:
            raise ValueError("set secret or secret_file, not both")
        parts = urlsplit(self.url)
        if (parts.username or parts.password) and any(
            k.lower() == "authorization" for k in self.headers
        ):
            raise ValueError("url credentials and an Authorization header cannot be combined")
        return self

    def signing_key(self) -> SecretStr | None:
        """The HMAC key: ``secret``, or the contents of ``secret_file`` (stripped)."""
        if self.secret is not None:
            return self.secret
        if self.secret_file is not None:
            return SecretStr(self.secret_file.read_text(encoding="utf-8").strip())
        return None


class AlertmanagerSettings(_Section):
    urls: list[str] = Field(default_factory=list)
    resend_interval: PositiveDuration = 60.0

    @field_validator("urls")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        return [_check_http_url(u.rstrip("/"), what="urls") for u in value]


class HeartbeatSettings(_Section):
    url: str = ""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_http_url(value, what="url") if value else value


class AlertsSettings(_Section):
    repeat_interval: Duration = 4 * 3600.0
    send_resolved: bool = True
    max_delivery_age: Duration = 86400.0
    max_alerts_per_request: int = Field(default=100, ge=1)
    flap_threshold: IntOrFalse = 4
    flap_window: Duration = 3600.0
    #: per delivery attempt (webhooks, Alertmanager, heartbeat)
    timeout: PositiveDuration = 10.0
    #: first delivery retry wait; doubled with jitter up to 60 s (tests set it small)
    retry_initial: PositiveDuration = 2.0
    webhooks: list[WebhookSettings] = Field(default_factory=list)
    alertmanager: AlertmanagerSettings = Field(default_factory=AlertmanagerSettings)
    heartbeat: HeartbeatSettings = Field(default_factory=HeartbeatSettings)


def _parse_listen(value: object) -> object:
    if not isinstance(value, str):
        raise ValueError("listen must be a string 'host:port', or '' to disable")
    value = value.strip()
    if not value:
        return value
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("listen must look like '127.0.0.1:9465' or '[::1]:9465'")
    host = host.strip("[]") or "0.0.0.0"  # noqa: S104 (":9465" means every interface)
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"listen host {host!r} is not an IP address or localhost") from None
    return value


class ServerSettings(_Section):
    listen: Annotated[str, BeforeValidator(_parse_listen)] = "127.0.0.1:9465"
    expose_tasks: bool = False

    @property
    def address(self) -> tuple[str, int] | None:
        """``(host, port)``, or None when the server is disabled."""
        if not self.listen:
            return None
        host, _, port = self.listen.rpartition(":")
        return (host.strip("[]") or "0.0.0.0", int(port))  # noqa: S104 (as configured)


def _default_state_path() -> Path:
    state_dir = os.environ.get("STATE_DIRECTORY")
    if state_dir:
        # systemd may pass several, colon-separated; the first is ours
        return Path(state_dir.split(":")[0]) / "sd-watchdog.db"
    return Path("sd-watchdog.db")


class StateSettings(_Section):
    path: Annotated[Path, BeforeValidator(_path_text)] = Field(default_factory=_default_state_path)
    retention: Duration = 30 * 86400.0


class LogSettings(_Section):
    format: Literal["json", "console", "auto"] = "json"
    level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("format", "level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value


# --- sources ----------------------------------------------------------------------------

_TOML_FILE: ContextVar[Path | None] = ContextVar("toml_file", default=None)
_SECRETS_DIR: ContextVar[Path | None] = ContextVar("secrets_dir", default=None)

#: keys whose relative paths are resolved against the config file's folder
_PATH_KEYS = (("api", "ca_file"), ("tasks", "file"), ("state", "path"))


class _WholeSource(PydanticBaseSettingsSource):
    """A source that builds its whole dict in ``__call__`` (no per-field lookups)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False


class _TomlSource(_WholeSource):
    """The TOML file; relative paths in it are relative to the file's folder."""

    def __call__(self) -> dict[str, Any]:
        path = _TOML_FILE.get()
        if path is None:
            return {}
        with path.open("rb") as fh:
            data = tomllib.load(fh)
        # Not resolve(): a Kubernetes ConfigMap file is a symlink into a folder that is
        # replaced on every update; the mount point is the stable base.
        base = path.absolute().parent
        for section, key in _PATH_KEYS:
            table = data.get(section)
            if isinstance(table, dict) and isinstance(table.get(key), str) and table[key]:
                table[key] = _relative_to(base, table[key], f"{section}.{key}")
        alerts = data.get("alerts")
        hooks = alerts.get("webhooks") if isinstance(alerts, dict) else None
        if isinstance(hooks, list):
            for hook in hooks:
                secret_file = hook.get("secret_file") if isinstance(hook, dict) else None
                if isinstance(secret_file, str) and secret_file:
                    hook["secret_file"] = _relative_to(base, secret_file, "alerts.webhooks")
        return data


def _relative_to(base: Path, text: str, key: str) -> str:
    """``text`` with ``~`` expanded, relative to ``base`` (the config file's folder)."""
    try:
        return str(base / Path(text).expanduser())
    except RuntimeError:  # "~someone" of an unknown user, or no home folder at all
        raise ConfigError([(key, "cannot expand '~': unknown user or no home folder")]) from None


class _SecretsDirSource(_WholeSource):
    """Files named like the environment variables (``watchdog_api__token``), any case."""

    def __call__(self) -> dict[str, Any]:
        directory = _SECRETS_DIR.get()
        if directory is None or not _is_dir(directory):
            return {}
        result: dict[str, Any] = {}
        for entry in sorted(directory.iterdir()):
            name = entry.name.lower()
            if not name.startswith(ENV_PREFIX.lower()) or not entry.is_file():
                continue
            parts = name[len(ENV_PREFIX) :].split("__")
            if not _known_path(parts):
                continue  # other programs share this folder
            value = entry.read_text(encoding="utf-8").strip()
            target = result
            for part in parts[:-1]:
                target = target.setdefault(part, {})
            target[parts[-1]] = value
        return result


def _known_path(parts: list[str]) -> bool:
    """True when ``parts`` names a scalar key of the model (``["api", "token"]``)."""
    model: type[BaseModel] = Settings
    for i, part in enumerate(parts):
        fields = model.model_fields
        if part not in fields:
            return False
        annotation = fields[part].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
            continue
        return i == len(parts) - 1
    return False


class Settings(BaseSettings):
    """Every key of PRODUCT.md; sections are frozen models."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        case_sensitive=False,
        extra="forbid",
        frozen=True,
        nested_model_default_partial_update=True,
    )

    api: ApiSettings
    tasks: TasksSettings = Field(default_factory=TasksSettings)
    poll: PollSettings = Field(default_factory=PollSettings)
    rules: RulesSettings = Field(default_factory=RulesSettings)
    phases: PhasesSettings = Field(default_factory=PhasesSettings)
    alerts: AlertsSettings = Field(default_factory=AlertsSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    state: StateSettings = Field(default_factory=StateSettings)
    log: LogSettings = Field(default_factory=LogSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            _FilteredEnvSource(env_settings),
            _SecretsDirSource(settings_cls),
            _TomlSource(settings_cls),
        )


class _FilteredEnvSource(_WholeSource):
    """The environment, less ``WATCHDOG_*`` variables that match no key (others share it)."""

    def __init__(self, inner: PydanticBaseSettingsSource) -> None:
        super().__init__(inner.settings_cls)
        self._inner = inner

    def __call__(self) -> dict[str, Any]:
        return _prune(self._inner(), Settings)


def _prune(data: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    fields = model.model_fields
    aliases = {f.alias: name for name, f in fields.items() if f.alias}
    for key, value in data.items():
        name = aliases.get(key, key)
        if name not in fields:
            continue
        annotation = fields[name].annotation
        if (
            isinstance(value, dict)
            and isinstance(annotation, type)
            and issubclass(annotation, BaseModel)
        ):
            out[key] = _prune(value, annotation)
        else:
            out[key] = value
    return out


# --- loading ----------------------------------------------------------------------------


def default_secrets_dir() -> Path | None:
    """``$CREDENTIALS_DIRECTORY`` (systemd) when set, else ``/run/secrets`` when it exists."""
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if creds:
        return Path(creds)
    run_secrets = Path("/run/secrets")
    return run_secrets if run_secrets.is_dir() else None


def load_settings(
    config_file: Path | str | None = None,
    *,
    secrets_dir: Path | str | None = None,
    overrides: Mapping[str, Any] | None = None,
    use_default_secrets_dir: bool = True,
) -> Settings:
    """Build the settings; raise ``ConfigError`` naming every bad key."""
    toml_path = Path(config_file) if config_file else None
    if toml_path is not None and not _is_file(toml_path):
        raise ConfigError([("--config", f"file not found: {toml_path}")])
    secrets = Path(secrets_dir) if secrets_dir else None
    if secrets is None and use_default_secrets_dir:
        secrets = default_secrets_dir()
    elif secrets is not None and not _is_dir(secrets):
        raise ConfigError([("--secrets-dir", f"not a directory: {secrets}")])
    token_toml = _TOML_FILE.set(toml_path)
    token_secrets = _SECRETS_DIR.set(secrets)
    try:
        settings = Settings(**dict(overrides or {}))
    except ValidationError as exc:
        raise ConfigError(_problems(exc)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([("--config", f"{toml_path}: not valid TOML: {exc}")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([("", f"cannot read configuration: {exc}")]) from None
    except ValueError as exc:  # e.g. an environment variable that is not valid JSON
        raise ConfigError([("", _scrub(str(exc)))]) from None
    finally:
        _TOML_FILE.reset(token_toml)
        _SECRETS_DIR.reset(token_secrets)
    _check_files(settings)
    return settings


def _is_file(path: Path) -> bool:
    """``Path.is_file`` that answers False, not OSError, for e.g. a name that is too long."""
    try:
        return path.is_file()
    except OSError:
        return False


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def _check_files(settings: Settings) -> None:
    problems: list[tuple[str, str]] = []
    if settings.api.ca_file is not None and not _is_file(settings.api.ca_file):
        problems.append(("api.ca_file", f"file not found: {settings.api.ca_file}"))
    for i, hook in enumerate(settings.alerts.webhooks):
        if hook.secret_file is not None:
            try:
                if not hook.secret_file.read_text(encoding="utf-8").strip():
                    problems.append((f"alerts.webhooks.{i}.secret_file", "the file is empty"))
            except OSError as exc:
                problems.append(
                    (f"alerts.webhooks.{i}.secret_file", f"cannot read: {exc.strerror or exc}")
                )
            except UnicodeDecodeError:
                problems.append((f"alerts.webhooks.{i}.secret_file", "not UTF-8 text"))
    if problems:
        raise ConfigError(problems)


def _scrub(message: str) -> str:
    """Error messages must not echo input values (they may be secrets)."""
    return message.split("[type=", maxsplit=1)[0].strip()


def _problems(exc: ValidationError) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for error in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(part) for part in error["loc"])
        msg = error["msg"]
        if error["type"] == "extra_forbidden":
            msg = "unknown key"
        elif error["type"] == "missing":
            msg = "required"
        msg = msg.removeprefix("Value error, ")
        problems.append((loc, msg))
    return problems


# --- presentation -------------------------------------------------------------------------


def masked(settings: Settings) -> dict[str, Any]:
    """The effective configuration as plain data, secrets masked (for ``validate``)."""
    data = settings.model_dump(mode="json", by_alias=True)
    for key in ("token", "client_secret"):
        if data["api"].get(key) is not None:
            data["api"][key] = MASK
    for hook in data["alerts"]["webhooks"]:
        if hook.get("secret") is not None:
            hook["secret"] = MASK
        hook["url"] = _mask_url(hook["url"])
        hook["headers"] = dict.fromkeys(hook["headers"], MASK)
    data["alerts"]["alertmanager"]["urls"] = [
        _mask_url(u) for u in data["alerts"]["alertmanager"]["urls"]
    ]
    if data["alerts"]["heartbeat"]["url"]:
        data["alerts"]["heartbeat"]["url"] = _mask_url(data["alerts"]["heartbeat"]["url"])
    data["tasks"]["shard"] = "{}/{}".format(*settings.tasks.shard)
    return data


def _mask_url(url: str) -> str:
    """Keep scheme and host; hide user-info, path and query (Slack and healthchecks.io URLs
    carry their secret in the path)."""
    parts = urlsplit(url)
    hidden = parts.path.strip("/") or parts.query
    return redact_url(url) + ("/********" if hidden else "")


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The rule thresholds in seconds; 0 disables a rule (see rules.py)."""

    queued_max: float
    processing_max: float
    processing_per_page: float
    max_restarts: int
    zero_pages_after: float
    no_progress: float
    review_max: float

    @classmethod
    def from_settings(cls, rules: RulesSettings) -> Thresholds:
        return cls(
            queued_max=rules.queued_max,
            processing_max=rules.processing_max,
            processing_per_page=rules.processing_per_page,
            max_restarts=rules.max_restarts,
            zero_pages_after=rules.zero_pages_after,
            no_progress=rules.no_progress,
            review_max=rules.review_max,
        )
