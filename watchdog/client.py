"""The SmartDocumentor client: the one place aiohttp, timeout and TLS errors become ours.

    poll(ref) ─► token (client credentials only: auth.TokenCache, single-flight)
              ─► GET {base_url}/api/v1.0/external/sdtask/status   (semaphore → rate limit → send)
              ─► Observed | NotFound | PollFailed | Deferred       (never raises for API trouble)

Every failed attempt is reported through ``on_error`` as an ``ApiErrorInfo``; the client does
not log. Inside, transport trouble is an ``ApiError`` (raised in ``_send`` with ``raise … from``)
and a failed answer is a ``_Failure``; neither leaves ``poll``.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import json
import math
import random
import ssl
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

import aiohttp

from watchdog.auth import (
    TokenCache,
    TokenUnavailable,
    parse_token_response,
    refusal_message,
    token_form,
)
from watchdog.clock import Clock, SystemClock
from watchdog.errors import ApiError, ConfigError
from watchdog.logs import VERSION
from watchdog.models import (
    ApiErrorInfo,
    Deferred,
    NotFound,
    Observed,
    PollFailed,
    PollResult,
    TaskRef,
    TaskStatus,
)
from watchdog.settings import ApiSettings, redact_url
from watchdog.status import invalid_response, parse_task_status

__all__ = ["STATUS_PATH", "TOKEN_PATH", "USER_AGENT", "SmartDocumentorClient", "parse_task_status"]

STATUS_PATH = "/api/v1.0/external/sdtask/status"
TOKEN_PATH = "/connect/token"  # noqa: S105 - a URL path, not a password
_BACKOFF_CAP = 60.0
_ERROR_BODY_LIMIT = 4096  # enough for an OAuth error object; error bodies are never needed whole
_TRANSIENT = frozenset({"timeout", "connection"})


USER_AGENT = f"sd-watchdog/{VERSION}"


def _parse_answer(body: bytes, ref: TaskRef) -> TaskStatus:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # bad JSON, bad UTF-8, absurd nesting or digits
        raise invalid_response("the body is not JSON") from None
    status = parse_task_status(data)
    if ref.task_id is not None and status.task_id != ref.task_id:
        raise invalid_response(f"taskId: asked for {ref.task_id}, got {status.task_id}")
    return status


# --- HTTP helpers -------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)  # a cycle sees the same few Date values over and over
def http_date(value: str | None) -> datetime | None:
    """An HTTP-date header (``Date``, ``Retry-After``) as aware UTC, or None when absent/bad."""
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _env_proxy(base_url: str) -> str | None:
    """The proxy that HTTPS_PROXY/HTTP_PROXY name for ``base_url``, unless NO_PROXY exempts it.

    Read once here instead of aiohttp's ``trust_env``: that also turns a ~/.netrc entry
    (even a ``default`` one) into Basic auth, which aiohttp refuses to combine with our
    Bearer header — every request would fail — and it re-reads both files per request.
    Credentials in the proxy URL become Proxy-Authorization inside aiohttp.
    """
    parts = urlsplit(base_url)
    if urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    proxy = urllib.request.getproxies().get(parts.scheme)
    if not proxy:
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


async def _read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The body, or None when it is longer than ``limit``; never buffers more than limit + 1."""
    if resp.content_length is not None and resp.content_length > limit:
        return None
    buf = bytearray()
    while len(buf) <= limit:
        chunk = await resp.content.read(limit + 1 - len(buf))
        if not chunk:
            return bytes(buf)
        buf += chunk
    return None


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    body: bytes
    date: str | None
    retry_after: str | None


@dataclass(frozen=True, slots=True)
class _Failure:
    """One failed attempt, before it is reported."""

    kind: str
    status: int | None
    message: str
    retryable: bool = False
    retry_after: float | None = None


class _RateLimiter:
    """Requests per second across the client (burst 1). Requests are released one at a time,
    in order, and the next release is timed from the actual moment of this one: a stalled
    event loop delays requests but never lets a backlog out together above the rate."""

    def __init__(self, rate: float, clock: Clock) -> None:
        self._interval = 1.0 / rate
        self._clock = clock
        self._next = -math.inf
        self._lock = asyncio.Lock()  # FIFO: waiters are released in arrival order

    async def wait(self) -> None:
        async with self._lock:
            wait = self._next - self._clock.monotonic()
            if wait > 0:
                await self._clock.sleep(wait)
            self._next = self._clock.monotonic() + self._interval


@dataclass(frozen=True, slots=True)
class _Live:
    """What exists between open() and close()."""

    session: aiohttp.ClientSession
    semaphore: asyncio.Semaphore
    limiter: _RateLimiter | None
    tokens: TokenCache | None
    proxy: str | None


def _ignore(info: ApiErrorInfo) -> None:
    """The default ``on_error``."""


class SmartDocumentorClient:
    """Polls task status; see the module docstring. Use as ``async with client: …``."""

    def __init__(
        self,
        settings: ApiSettings,
        *,
        on_error: Callable[[ApiErrorInfo], None] = _ignore,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        connector_factory: Callable[[], aiohttp.BaseConnector] | None = None,
    ) -> None:
        self._api = settings
        self._on_error = on_error
        self._clock: Clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._connector_factory = connector_factory
        self._live: _Live | None = None
        self._sent = 0

    def __repr__(self) -> str:
        auth = "token" if self._api.token is not None else "client_credentials"
        state = "open" if self._live is not None else "closed"
        return f"<SmartDocumentorClient {redact_url(self._api.base_url)} auth={auth} {state}>"

    @property
    def requests_sent(self) -> int:
        """Status and token requests actually sent (after the limits), since construction."""
        return self._sent

    # --- lifecycle ----------------------------------------------------------------------

    async def open(self) -> None:
        """Create the one HTTP session; ``ConfigError`` when ``api.ca_file`` cannot be loaded."""
        if self._live is not None:
            raise RuntimeError("the client is already open")
        api = self._api
        if self._connector_factory is not None:
            connector = self._connector_factory()
        else:
            # ssl=True: aiohttp's own verified default context, built once at its import;
            # a context of ours only to add the ca_file trust anchors
            tls: ssl.SSLContext | bool = self._ssl_context() if api.ca_file is not None else True
            connector = aiohttp.TCPConnector(ssl=tls, limit=api.concurrency)
        session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=api.timeout),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            cookie_jar=aiohttp.DummyCookieJar(),  # the API needs none; keep the client stateless
        )
        self._live = _Live(
            session=session,
            semaphore=asyncio.Semaphore(api.concurrency),
            limiter=_RateLimiter(api.rate_limit, self._clock) if api.rate_limit > 0 else None,
            tokens=TokenCache(self._clock) if api.token is None else None,
            proxy=_env_proxy(api.base_url),
        )

    async def close(self) -> None:
        live, self._live = self._live, None
        if live is not None:
            await live.session.close()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _ssl_context(self) -> ssl.SSLContext:
        # verification stays on: ca_file only adds trust anchors to the system's
        context = ssl.create_default_context()
        if self._api.ca_file is not None:
            try:
                context.load_verify_locations(cafile=self._api.ca_file)
            except OSError as exc:  # ssl.SSLError is an OSError too
                reason = exc.strerror or type(exc).__name__
                raise ConfigError(
                    [("api.ca_file", f"cannot load the CA bundle: {reason}")]
                ) from exc
        return context

    def _require_open(self) -> _Live:
        if self._live is None:
            raise RuntimeError("the client is not open")
        return self._live

    # --- polling ------------------------------------------------------------------------

    async def poll(self, ref: TaskRef, *, deadline: float | None = None) -> PollResult:
        """One task's status, retried as configured; ``deadline`` is on ``clock.monotonic()``."""
        live = self._require_open()
        attempt = retries = 0
        refreshed = api_ok = False
        while True:
            try:
                token = await self._token(live, deadline)
            except TokenUnavailable as exc:
                if exc.until is not None:
                    return Deferred(ref, until=exc.until, error=exc.kind, status=exc.status)
                return PollFailed(ref, exc.kind, exc.status, auth=exc.auth, api_ok=api_ok)
            attempt += 1
            result = await self._status_attempt(live, ref, token)
            if not isinstance(result, _Failure):
                return result
            code = result.status
            api_ok = api_ok or (code is not None and code < 500 and code not in (401, 403))
            if result.kind == "auth":
                # 401/403 may only mean our cached token was revoked early: one fresh try
                tokens = live.tokens if code in (401, 403) and not refreshed else None
                self._report("status", result, attempt, tokens is not None, ref.key)
                if tokens is None:
                    return PollFailed(ref, "auth", code, auth=True, api_ok=api_ok)
                tokens.invalidate(token)
                refreshed = True
                continue
            until = await self._wait_to_retry(
                "status", result, attempt=attempt, retries=retries, deadline=deadline, key=ref.key
            )
            if until is None:
                retries += 1
            elif math.isfinite(until):
                return Deferred(ref, until=until, error=result.kind, status=code)
            else:
                return PollFailed(ref, result.kind, code, api_ok=api_ok)

    async def _status_attempt(
        self, live: _Live, ref: TaskRef, token: str
    ) -> Observed | NotFound | _Failure:
        headers = {"Authorization": f"Bearer {token}"}
        try:
            answer = await self._send(live, "GET", STATUS_PATH, params=ref.query, headers=headers)
        except ApiError as exc:
            return _Failure(exc.kind, exc.status, str(exc), exc.kind in _TRANSIENT)
        if answer.status == 404:
            return NotFound(ref)
        if not 200 <= answer.status < 300:
            return self._http_failure(answer, "status")
        try:
            status = _parse_answer(answer.body, ref)
        except ApiError as exc:
            return _Failure(exc.kind, answer.status, str(exc))
        return Observed(ref, status, server_date=http_date(answer.date))

    async def _token(self, live: _Live, deadline: float | None) -> str:
        if live.tokens is None:  # settings guarantee a static token then
            return self._api.token.get_secret_value() if self._api.token else ""
        return await live.tokens.get(lambda: self._fetch_token(live, deadline))

    async def _fetch_token(self, live: _Live, deadline: float | None) -> tuple[str, float]:
        """POST /connect/token, retried like a status request; raises TokenUnavailable."""
        secret = self._api.client_secret  # settings guarantee both are set here
        form = token_form(self._api.client_id or "", secret.get_secret_value() if secret else "")
        attempt = retries = 0
        while True:
            attempt += 1
            failure = await self._token_attempt(live, form)
            if not isinstance(failure, _Failure):
                return failure
            if failure.kind == "auth":
                self._report("token", failure, attempt, False, None)
                raise TokenUnavailable("auth", failure.message, status=failure.status, auth=True)
            until = await self._wait_to_retry(
                "token", failure, attempt=attempt, retries=retries, deadline=deadline, key=None
            )
            if until is None:
                retries += 1
                continue
            raise TokenUnavailable(
                failure.kind,
                failure.message,
                status=failure.status,
                until=until if math.isfinite(until) else None,
            )

    async def _token_attempt(
        self, live: _Live, form: dict[str, str]
    ) -> tuple[str, float] | _Failure:
        try:
            answer = await self._send(live, "POST", TOKEN_PATH, data=form)
        except ApiError as exc:
            return _Failure(exc.kind, exc.status, str(exc), exc.kind in _TRANSIENT)
        if not 200 <= answer.status < 300:
            return self._http_failure(answer, "token")
        try:
            return parse_token_response(answer.body)
        except ApiError as exc:
            return _Failure(exc.kind, answer.status, str(exc))

    async def _send(
        self,
        live: _Live,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        data: dict[str, str] | None = None,
    ) -> _Answer:
        """One request under the concurrency and rate limits; transport trouble → ApiError."""
        async with live.semaphore:
            if live.limiter is not None:
                await live.limiter.wait()
            if live.session.closed:  # close() ran while this poll waited: no retries either
                raise ApiError("closed", "the client was closed during the poll")
            self._sent += 1
            try:
                async with live.session.request(
                    method,
                    self._api.base_url + path,
                    params=params,
                    headers=headers,
                    data=data,
                    proxy=live.proxy,
                    allow_redirects=False,  # never carry the bearer token elsewhere
                ) as resp:
                    if 200 <= resp.status < 300:
                        body = await _read_capped(resp, self._api.max_body_bytes)
                        if body is None:
                            raise ApiError(
                                "too_large",
                                f"body larger than {self._api.max_body_bytes} bytes",
                                status=resp.status,
                            )
                    else:
                        body = await _read_capped(resp, _ERROR_BODY_LIMIT) or b""
                    return _Answer(
                        resp.status, body, resp.headers.get("Date"), resp.headers.get("Retry-After")
                    )
            except TimeoutError as exc:  # aiohttp's total timeout is not a ClientError
                raise ApiError("timeout", f"no answer within {self._api.timeout:g} s") from exc
            except (aiohttp.ClientError, OSError) as exc:  # ssl.SSLError is an OSError
                raise ApiError("connection", f"{type(exc).__name__}: {exc}"[:300]) from exc

    def _http_failure(self, answer: _Answer, endpoint: str) -> _Failure:
        status = answer.status
        if endpoint == "token" and status in (400, 401, 403):  # OAuth says 400 invalid_client
            return _Failure("auth", status, refusal_message(status, answer.body))
        if status in (401, 403):
            return _Failure("auth", status, f"HTTP {status}: the API rejected the credentials")
        retry_after = self._retry_after(answer) if status in (429, 503) else None
        return _Failure(
            "http_status", status, f"HTTP {status}", status >= 500 or status == 429, retry_after
        )

    def _retry_after(self, answer: _Answer) -> float | None:
        """Seconds from a ``Retry-After`` of delay-seconds or an HTTP-date; None when absent."""
        value = (answer.retry_after or "").strip()
        if not value:
            return None
        try:
            seconds = float(value)
        except ValueError:
            when = http_date(value)
            if when is None:
                return None
            # measured against the server's own Date when it sent one: immune to clock skew
            now = http_date(answer.date) or self._clock.now()
            return max(0.0, (when - now).total_seconds())
        return seconds if math.isfinite(seconds) and seconds >= 0 else None

    async def _wait_to_retry(
        self,
        endpoint: str,
        failure: _Failure,
        *,
        attempt: int,
        retries: int,
        deadline: float | None,
        key: str | None,
    ) -> float | None:
        """Report a failed attempt, then sleep and return None to try again; otherwise return
        the monotonic time to defer to, or ``inf`` to give up."""
        wait = self._backoff(failure, retries)
        until = math.inf
        if wait is not None:
            end = self._clock.monotonic() + wait
            if deadline is None or end <= deadline:
                self._report(endpoint, failure, attempt, True, key)
                await self._clock.sleep(wait)
                return None
            until = end  # the wait reaches past the cycle: the caller polls again then
        elif failure.retryable and failure.retry_after is not None and deadline is not None:
            # Out of retries, but the server asked for a pause that outlasts this cycle: the
            # next cycle must not come back before it ends either.
            end = self._clock.monotonic() + min(failure.retry_after, self._api.retry_after_max)
            if end > deadline:
                until = end
        self._report(endpoint, failure, attempt, False, key)
        return until

    def _backoff(self, failure: _Failure, retries: int) -> float | None:
        """The wait before the next attempt, or None when there is none."""
        if not failure.retryable or retries >= self._api.retries:
            return None
        if failure.retry_after is not None:
            return min(failure.retry_after, self._api.retry_after_max)
        base = min(_BACKOFF_CAP, self._api.retry_backoff * 2.0**retries)
        # equal jitter: spread the retries of many tasks, but keep a floor
        return base / 2 + self._rng.uniform(0, base / 2)

    def _report(
        self, endpoint: str, failure: _Failure, attempt: int, will_retry: bool, key: str | None
    ) -> None:
        message = failure.message
        for secret in (self._api.token, self._api.client_secret):
            if secret is not None and secret.get_secret_value():
                message = message.replace(secret.get_secret_value(), "********")
        self._on_error(
            ApiErrorInfo(
                endpoint=endpoint,
                error=failure.kind,
                status=failure.status,
                attempt=attempt,
                will_retry=will_retry,
                message=message,
                task_key=key,
            )
        )
