"""The client-credentials access token: parsing the token answer and caching it.

The HTTP request itself goes through ``client.SmartDocumentorClient`` (it shares the
concurrency limit, the rate limiter and the retry rules); this module only decides when a new
token is needed and makes sure that many polls waiting for one cause a single request.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Awaitable, Callable

from watchdog.clock import Clock
from watchdog.errors import ApiError

#: the lifetime the docs give when ``expires_in`` is missing
DEFAULT_LIFETIME = 3600.0
_MAX_MARGIN = 60.0
# printable ASCII without spaces: anything else could split or inject a header line
_TOKEN_CHARS = re.compile(r"[\x21-\x7e]+")
_OAUTH_ERROR = re.compile(r"[a-z_]{1,64}")


class TokenUnavailable(ApiError):
    """No token could be had: the polls that needed one fail, or are deferred to ``until``.

    ``until`` is on the client's monotonic clock; ``auth`` is true when the token endpoint
    refused the credentials.
    """

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        status: int | None = None,
        auth: bool = False,
        until: float | None = None,
    ) -> None:
        super().__init__(kind, message, status=status)
        self.auth = auth
        self.until = until

    def copy(self) -> TokenUnavailable:
        """A fresh exception with the same outcome, for another waiting poll to raise."""
        return TokenUnavailable(
            self.kind, str(self), status=self.status, auth=self.auth, until=self.until
        )


def token_form(client_id: str, client_secret: str) -> dict[str, str]:
    """The form of the client-credentials grant (SMARTDOCUMENTOR-API.md §1)."""
    return {
        "grant_type": "client_credentials",
        "scope": "WebAPI",
        "client_id": client_id,
        "client_secret": client_secret,
    }


def parse_token_response(body: bytes) -> tuple[str, float]:
    """``(access_token, lifetime in seconds)`` from a 2xx answer of the token endpoint."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise ApiError("invalid_response", "token answer is not JSON") from None
    if not isinstance(data, dict):
        raise ApiError("invalid_response", "token answer is not a JSON object")
    token = data.get("access_token")
    if type(token) is not str or not _TOKEN_CHARS.fullmatch(token):
        # the message never quotes the value: it may be a (malformed) secret
        raise ApiError("invalid_response", "token answer: access_token missing or malformed")
    lifetime = data.get("expires_in")
    if lifetime is None:
        return token, DEFAULT_LIFETIME
    if isinstance(lifetime, str) and lifetime.strip().isdigit():
        lifetime = int(lifetime)  # some servers send numbers as strings
    if type(lifetime) not in (int, float) or not math.isfinite(lifetime) or lifetime <= 0:
        raise ApiError("invalid_response", "token answer: expires_in is not a positive number")
    return token, float(lifetime)


def refusal_message(status: int, body: bytes) -> str:
    """Why the token endpoint refused us, naming only the OAuth ``error`` code.

    ``error_description`` is left out: servers sometimes echo the request in it.
    """
    code = None
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        data = None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, str) and _OAUTH_ERROR.fullmatch(error):
            code = error
    suffix = f" ({code})" if code else ""
    return f"HTTP {status}: the token endpoint refused the client credentials{suffix}"


class TokenCache:
    """One cached token, valid until shortly before it expires; fetched single-flight."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._token: str | None = None
        self._valid_until = -math.inf
        self._lock = asyncio.Lock()
        self._fetches = 0  # completed fetches, to tell waiters a fetch ended while they waited
        self._last_failure: TokenUnavailable | None = None

    @property
    def current(self) -> str | None:
        """The cached token while it is still valid, else None."""
        if self._token is not None and self._clock.monotonic() < self._valid_until:
            return self._token
        return None

    async def get(self, fetch: Callable[[], Awaitable[tuple[str, float]]]) -> str:
        """The cached token, or a new one from ``fetch`` (which raises TokenUnavailable)."""
        token = self.current
        if token is not None:
            return token
        seen = self._fetches
        async with self._lock:
            token = self.current
            if token is not None:
                return token
            if self._fetches != seen and self._last_failure is not None:
                # the fetch we queued behind just failed: share its outcome rather than
                # sending the same refused credentials once per waiting poll
                raise self._last_failure.copy()
            started = self._clock.monotonic()
            try:
                token, lifetime = await fetch()
            except TokenUnavailable as exc:
                self._last_failure = exc
                self._fetches += 1
                raise
            self._last_failure = None
            self._fetches += 1
            # renew early, so a token never expires between being read and being used
            self._token = token
            self._valid_until = started + lifetime - min(_MAX_MARGIN, 0.1 * lifetime)
            return token

    def invalidate(self, token: str) -> None:
        """Forget ``token`` after a 401, unless a newer one has already replaced it."""
        if self._token == token:
            self._token = None
