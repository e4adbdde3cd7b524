"""Security (issue 5): secrets stay secret, TLS is always verified, plain http:// only on
loopback, the signature example of the README is safe, the HTTP endpoint binds loopback.

The secret test runs the real daemon with every kind of secret configured — client secret (and
the access token it gets), static token, webhook secret and secret file, credentials and a token
in a webhook URL, a header value, Alertmanager URL credentials, a heartbeat URL with its key in
the path, proxy credentials — against a hostile API that echoes the request (form, Authorization
header) in its error bodies and in broken JSON, and receivers that fail the same way; then it
scans every log line, `validate`, `check` and `health` output, /tasks, /metrics, /healthz,
/readyz and the state file. The session-wide scan of ``tests/secretscan.py`` sees all of it too
(it is printed).

Not repeated here: tests/test_client.py::test_tls_is_verified (the client refuses a self-signed
server and trusts it through ``api.ca_file``; here the same goes end to end through `check`,
and for webhooks); tests/test_deploy.py (the image runs as a numeric non-root USER);
tests/test_settings.py (the basic http:// cases and the default listen address).
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import hmac
import inspect
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import TOKEN
from tests.helpers import SCRIPT, child_env, free_port, run_script
from watchdog.errors import ConfigError
from watchdog.payloads import signature
from watchdog.scenarios import stuck_in_queue
from watchdog.settings import ServerSettings, is_loopback_host, load_settings
from watchdog.simulator import STATUS_PATH, TOKEN_PATH, Simulator

ROOT = Path(__file__).resolve().parent.parent

SEC_TOKEN = "sec-token-5f0d2a91"
SEC_CLIENT_SECRET = "sec-client-secret-c38e77"
SEC_ISSUED_TOKEN = "sec-issued-token-91ab4e"
SEC_HOOK_SECRET = "sec-hook-secret-0d6b3f"
SEC_HOOK_FILE_SECRET = "sec-hook-file-secret-7e21c4"
SEC_URL_PASS = "sec-url-pass-a40f19"
SEC_QUERY = "sec-query-token-2bd865"
SEC_HEADER = "sec-header-value-66c0e2"
SEC_AM_PASS = "sec-am-pass-f1938d"
SEC_HEARTBEAT = "sec-heartbeat-uuid-4c77ab"
SEC_PROXY_PASS = "sec-proxy-pass-8e5b03"
SECRETS = (
    SEC_TOKEN, SEC_CLIENT_SECRET, SEC_ISSUED_TOKEN, SEC_HOOK_SECRET, SEC_HOOK_FILE_SECRET,
    SEC_URL_PASS, SEC_QUERY, SEC_HEADER, SEC_AM_PASS, SEC_HEARTBEAT, SEC_PROXY_PASS,
)  # fmt: skip


def leaks(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


# --- a hostile API and receivers ---------------------------------------------------------------


def _status_body(task_id: int) -> dict[str, Any]:
    """A task queued since long ago: queued_too_long fires."""
    return {
        "taskId": task_id, "workspaceId": 1, "batchId": None, "taskNumber": task_id,
        "externalId": None, "displayName": f"task {task_id}", "description": None,
        "createdOn": "2020-01-01T00:00:00Z", "taskStatus": 30, "integrationStatus": 0,
        "taskStatusText": "QueuedForPreProcessing", "integrationStatusText": "NotStarted",
        "totalPages": 0, "preProcessingStartedOn": None,
    }  # fmt: skip


class HostileApi:
    """Answers like SmartDocumentor, but its error answers quote the request back: the form
    with the client secret, the Authorization header with the token."""

    def __init__(self) -> None:
        self.token_requests = 0
        self.status_requests = 0
        self.echoed = 0

    async def _token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        form = await request.text()
        n = self.token_requests
        if n == 1:
            self.echoed += 1
            return web.Response(status=500, text=f"<pre>token endpoint crashed; form={form}</pre>")
        if n % 5 == 0:
            self.echoed += 1
            description = f"client_secret {SEC_CLIENT_SECRET} is not valid (form: {form})"
            return web.json_response(
                {"error": "invalid_client", "error_description": description}, status=400
            )
        return web.json_response({"access_token": SEC_ISSUED_TOKEN, "expires_in": 2})

    async def _status(self, request: web.Request) -> web.Response:
        self.status_requests += 1
        n = self.status_requests
        auth = request.headers.get("Authorization", "")
        task_id = int(request.query.get("taskId", "0"))
        if n % 3 == 0:
            self.echoed += 1
            return web.Response(status=500, text=f"upstream failed for request with {auth}")
        if n % 7 == 0:
            self.echoed += 1
            return web.Response(
                text=f'{{"taskId": {task_id}, "echo": "{auth}"', content_type="application/json"
            )
        if n % 11 == 0:
            self.echoed += 1
            return web.json_response({**_status_body(task_id), "taskStatusText": 5, "x": auth})
        if n % 13 == 0:
            return web.Response(status=401, text=f"token {auth} revoked")
        return web.json_response(_status_body(task_id))

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(TOKEN_PATH, self._token)
        app.router.add_get(STATUS_PATH, self._status)
        return app


class Receivers:
    """A webhook that fails twice (quoting the request headers back), then accepts; a
    heartbeat endpoint that always fails."""

    def __init__(self) -> None:
        self.hooks: list[tuple[dict[str, str], bytes]] = []
        self.pings: list[str] = []

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.hooks.append((dict(request.headers), body))
        if len(self.hooks) <= 2:
            return web.Response(status=500, text=f"rejected: {dict(request.headers)}")
        return web.Response(status=200)

    async def _ping(self, request: web.Request) -> web.Response:
        self.pings.append(request.path)
        return web.Response(status=500, text=f"no such check {request.path}")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        app.router.add_get("/ping/{key}", self._ping)
        return app


@asynccontextmanager
async def serving(
    app: web.Application, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context).start()
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


def write_config(tmp_path: Path, name: str, api: str, body: str) -> Path:
    config = tmp_path / f"{name}.toml"
    config.write_text(f"[api]\n{api}\n{body}", encoding="utf-8")
    return config


def read_state_files(folder: Path) -> dict[str, str]:
    """The state file and its WAL, as text for the scan (secrets at rest count too)."""
    return {p.name: p.read_bytes().decode("latin-1") for p in sorted(folder.glob("state.db*"))}


# --- secrets never leave -------------------------------------------------------------------------


async def test_no_secret_in_any_output_of_the_daemon(tmp_path: Path) -> None:
    """With every kind of secret configured and an API and receivers that quote requests back,
    no secret reaches a log line, validate/check/health output, an endpoint or the state file."""
    api, receivers = HostileApi(), Receivers()
    (tmp_path / "hook.secret").write_text(SEC_HOOK_FILE_SECRET + "\n", encoding="utf-8")
    dead = free_port()
    listen = free_port()
    outputs: dict[str, str] = {}
    async with serving(api.app()) as api_port, serving(receivers.app()) as hook_port:
        base = f'base_url = "http://127.0.0.1:{api_port}"\nretry_backoff = 0.01\nretries = 1\n'
        body = (
            '[tasks]\nids = [1, 2]\n[rules]\nqueued_max = "0.001s"\n'
            '[poll]\ninterval = "0.3s"\nshutdown_timeout = "1s"\n'
            '[alerts]\nretry_initial = "0.05s"\ntimeout = "1s"\n'
            f'[[alerts.webhooks]]\nurl = "http://hook:{SEC_URL_PASS}@127.0.0.1:{hook_port}/hook'
            f'?token={SEC_QUERY}"\nsecret = "{SEC_HOOK_SECRET}"\n'
            f'headers = {{ X-Api-Key = "{SEC_HEADER}" }}\n'
            f'[[alerts.webhooks]]\nurl = "http://127.0.0.1:{dead}/gone"\n'
            'secret_file = "hook.secret"\n'
            f'[alerts.alertmanager]\nurls = ["http://am:{SEC_AM_PASS}@127.0.0.1:{dead}"]\n'
            f'[alerts.heartbeat]\nurl = "http://127.0.0.1:{hook_port}/ping/{SEC_HEARTBEAT}"\n'
            f'[server]\nlisten = "127.0.0.1:{listen}"\n'
            f'[state]\npath = "{tmp_path / "state.db"}"\n'
        )  # fmt: skip
        config = write_config(
            tmp_path,
            "client",
            base + f'client_id = "sd"\nclient_secret = "{SEC_CLIENT_SECRET}"',
            body,
        )
        token_config = write_config(tmp_path, "token", base + f'token = "{SEC_TOKEN}"', body)
        proxy_env = child_env(HTTP_PROXY=f"http://proxy:{SEC_PROXY_PASS}@127.0.0.1:{dead}")

        proc = await asyncio.create_subprocess_exec(
            SCRIPT, "run", "--config", str(config), stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=child_env(),
        )  # fmt: skip
        assert proc.stdout is not None
        assert proc.stderr is not None
        lines: list[str] = []

        async def read() -> None:
            assert proc.stdout is not None
            async for line in proc.stdout:
                lines.append(line.decode())

        reader = asyncio.create_task(read(), name="daemon-log")
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(30):
                while not (len(receivers.hooks) >= 3 and api.token_requests >= 6):
                    assert proc.returncode is None, await proc.stderr.read()
                    await asyncio.sleep(0.1)
            for path in ("/tasks", "/metrics", "/healthz", "/readyz"):
                async with http.get(f"http://127.0.0.1:{listen}{path}") as response:
                    outputs[f"GET {path} ({response.status})"] = await response.text()
            outputs["health"] = "\n".join((await run_script("health", "--config", str(config)))[1:])
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 20)
        await reader
        outputs["run stdout"] = "".join(lines)
        outputs["run stderr"] = (await proc.stderr.read()).decode()
        assert code == 0, outputs["run stderr"]

        runs = await asyncio.gather(
            run_script("validate", "--config", str(config)),
            run_script("check", "--format", "json", "--notify", "--config", str(config)),
            run_script("check", "--format", "json", "--config", str(token_config)),
            run_script("check", "--format", "json", "--config", str(token_config), env=proxy_env),
        )
        for name, (rc, out, err) in zip(
            ("validate", "check (client credentials)", "check (token)", "check (via proxy)"),
            runs,
            strict=True,
        ):
            outputs[f"{name}: exit {rc}"] = out + err
    assert runs[0][0] == 0
    assert runs[3][0] == 3  # the proxy is down: nothing could be polled
    at_rest = read_state_files(tmp_path)

    # the secrets were really in play: configured, sent, quoted back
    sent = [headers for headers, _ in receivers.hooks]
    assert sent[0]["X-Api-Key"] == SEC_HEADER
    stamp, delivered = sent[-1]["X-Watchdog-Timestamp"], receivers.hooks[-1][1]
    assert sent[-1]["X-Watchdog-Signature"] == signature(SEC_HOOK_SECRET, int(stamp), delivered)
    assert receivers.pings
    assert SEC_HEARTBEAT in receivers.pings[0]
    assert api.echoed >= 3
    events = [json.loads(line) for line in outputs["run stdout"].splitlines()]
    names = {e["event"] for e in events}
    assert {"api.error", "alert.delivery_failed", "alert.delivered", "task.stuck"} <= names
    for name, text in outputs.items():
        print(f"===== {name}\n{text}")
    scanned = {**outputs, **at_rest}
    found = {name: leaks(text) for name, text in scanned.items() if leaks(text)}
    total = sum(len(text) for text in scanned.values())
    print(
        f"secret scan of the daemon: {len(events)} log lines, {len(outputs)} outputs and "
        f"{len(at_rest)} state files "
        f"({total:,} characters) scanned for {len(SECRETS)} secrets: {len(found)} leaks"
    )
    assert found == {}


# --- TLS ----------------------------------------------------------------------------------------


def self_signed(folder: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        if os.environ.get("CI") == "true":
            pytest.fail("openssl is not installed")
        pytest.skip("openssl is not installed")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_tls_is_always_verified_end_to_end(tmp_path: Path) -> None:
    """The simulator over HTTPS with a self-signed certificate: `check` refuses it (exit 3,
    certificate verify failed) until api.ca_file trusts it; a webhook with such a certificate
    is refused too (ca_file is for the API only), and nothing is sent to it."""
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    sim = Simulator([stuck_in_queue(1, scale=600)], token=TOKEN)
    receivers = Receivers()
    async with (
        serving(sim.app, context) as api_port,
        serving(receivers.app(), context) as hook_port,
    ):
        body = (
            '[tasks]\nids = [1]\n[rules]\nqueued_max = "0.001s"\n[poll]\nshutdown_timeout = "1s"\n'
            '[alerts]\nretry_initial = "0.05s"\ntimeout = "1s"\n'
            f'[[alerts.webhooks]]\nurl = "https://127.0.0.1:{hook_port}/hook"\n'
            '[server]\nlisten = ""\n'
        )
        api = f'base_url = "https://127.0.0.1:{api_port}"\ntoken = "{TOKEN}"\nretries = 0\n'
        refused = write_config(
            tmp_path, "refused", api, body + f'[state]\npath = "{tmp_path / "a.db"}"\n'
        )
        trusted = write_config(
            tmp_path,
            "trusted",
            api + f'ca_file = "{cert}"\n',
            body + f'[state]\npath = "{tmp_path / "b.db"}"\n',
        )
        (code_a, out_a, err_a), (code_b, out_b, err_b) = await asyncio.gather(
            run_script("check", "--format", "json", "--config", str(refused)),
            run_script("check", "--format", "json", "--notify", "--config", str(trusted)),
        )
    print(f"--- without ca_file: exit {code_a}\n{out_a}{err_a}")
    print(f"--- with ca_file: exit {code_b}\n{out_b}{err_b}")
    assert code_a == 3
    assert "certificate verify failed" in err_a
    assert "error" in json.loads(out_a)
    assert code_b == 1, err_b
    assert json.loads(out_b)["tasks"][0]["alerts"] == ["queued_too_long"]
    failed = [json.loads(line) for line in err_b.splitlines() if '"alert.delivery_failed"' in line]
    assert failed
    assert all("Certificate" in f["error"] or "SSL" in f["error"] for f in failed), failed
    assert receivers.hooks == []


# --- plain http:// only on loopback ------------------------------------------------------------


def api_settings(base_url: str, **api: object) -> object:
    return load_settings(
        None,
        use_default_secrets_dir=False,
        overrides={"api": {"base_url": base_url, "token": "t", **api}},
    )


def config_problem(**api: object) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, use_default_secrets_dir=False, overrides={"api": {"token": "t", **api}})
    return str(caught.value)


@pytest.mark.parametrize(
    "url", ["http://localhost:1", "http://127.0.0.2:8080", "http://[::1]:80", "HTTP://127.0.0.1"]
)
def test_http_on_loopback_is_accepted(url: str) -> None:
    """127.0.0.0/8, ::1 and localhost may use http:// (the simulator, a local proxy)."""
    assert api_settings(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost.example.com",  # a look-alike name
        "http://127.0.0.1.nip.io",  # a public name that resolves to loopback today
        "http://evil.localhost",  # resolvers send *.localhost to DNS: any address
        "http://127.0.0.1@evil.example.com",  # user-info: the host is evil.example.com
        "http://2130706433",  # 127.0.0.1 as one number: refused rather than guessed
        "http://0x7f.0.0.1",
        "http://127.1",
        "http://0.0.0.0",
        "http://[::ffff:7f00:1]",  # IPv4-mapped: not loopback to Python's ipaddress
        "HTTP://SD.EXAMPLE.COM",
    ],
)
def test_http_elsewhere_needs_allow_insecure(url: str) -> None:
    """http:// to anything but a loopback address or "localhost" is refused, naming
    allow_insecure; with allow_insecure = true it is the operator's explicit choice."""
    problem = config_problem(base_url=url)
    if "@" in url:  # refused before the scheme is looked at
        assert "credentials" in problem
        return
    assert "allow_insecure" in problem
    assert api_settings(url, allow_insecure=True)


def test_url_credentials_and_header_injection_are_config_errors() -> None:
    """Secrets in the wrong place are refused at start, without repeating them: user-info in
    base_url, a token that cannot be a header value, a header value with a line break."""
    problem = config_problem(base_url=f"https://sd:{SEC_URL_PASS}@cloud.example.com")
    assert "credentials" in problem
    assert SEC_URL_PASS not in problem
    for token in (f"{SEC_TOKEN}\nX-Injected: 1", f"{SEC_TOKEN} extra", f"{SEC_TOKEN}\x7f"):
        with pytest.raises(ConfigError) as caught:
            load_settings(
                None,
                use_default_secrets_dir=False,
                overrides={"api": {"base_url": "https://h", "token": token}},
            )
        assert "api.token" in str(caught.value)
        assert SEC_TOKEN not in str(caught.value)
    hook = {"url": "https://h/x", "headers": {"X-Api-Key": f"{SEC_HEADER}\r\nX-Injected: 1"}}
    with pytest.raises(ConfigError) as caught:
        load_settings(
            None,
            use_default_secrets_dir=False,
            overrides={
                "api": {"base_url": "https://h", "token": "t"},
                "alerts": {"webhooks": [hook]},
            },
        )
    assert "headers" in str(caught.value)
    assert SEC_HEADER not in str(caught.value)


def test_http_endpoint_binds_loopback_by_default() -> None:
    """Without [server] listen the endpoint binds a loopback address (the container image
    sets 0.0.0.0 explicitly, and /tasks then needs expose_tasks)."""
    address = ServerSettings().address
    assert address is not None
    assert is_loopback_host(address[0])


# --- the README's signature example --------------------------------------------------------------


def readme_verifier() -> tuple[str, Callable[..., object]]:
    """The first ```python block of README.md that uses compare_digest, and its verifier."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    found = [b for b in blocks if "compare_digest" in b]
    if not found:
        reason = "README.md has no ```python block with compare_digest (signature example)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    source = found[0]
    namespace: dict[str, Any] = {"__name__": "readme_snippet"}
    exec(compile(source, "README.md", "exec"), namespace)  # noqa: S102 (our own README)
    for value in namespace.values():
        if inspect.isfunction(value) and value.__module__ == "readme_snippet":
            params = set(inspect.signature(value).parameters)
            if {"secret", "body"} <= params or {"secret", "payload"} <= params:
                return source, value
    pytest.fail("the README's signature example defines no verify(secret, …, body) function")


def _call(verify: Callable[..., object], secret: str, headers: dict[str, str], body: bytes) -> bool:
    """True when the snippet accepts the request (a truthy answer); False or an exception
    is a refusal."""
    kwargs: dict[str, object] = {}
    for name, param in inspect.signature(verify).parameters.items():
        if name in ("secret", "key"):
            kwargs[name] = secret
        elif name == "headers":
            kwargs[name] = headers
        elif name in ("body", "payload", "raw", "raw_body"):
            kwargs[name] = body
        elif name in ("timestamp", "ts"):
            kwargs[name] = headers["X-Watchdog-Timestamp"]
        elif name in ("signature", "sig"):
            kwargs[name] = headers["X-Watchdog-Signature"]
        elif param.default is inspect.Parameter.empty:
            pytest.fail(f"the README's verifier takes {name!r}: teach this test about it")
    try:
        return bool(verify(**kwargs))
    except Exception:  # noqa: BLE001 (raising is how some verifiers refuse)
        return False


def test_readme_signature_example_is_constant_time_and_rejects_stale() -> None:
    """The README's receiver example accepts a fresh signed delivery and refuses a stale or
    future timestamp, a changed body, another secret and a missing signature; it compares with
    hmac.compare_digest and never with ==."""
    source, verify = readme_verifier()
    tree = ast.parse(source)
    calls = [ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)]
    assert any(c.endswith("compare_digest") for c in calls), calls
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(
            isinstance(o, ast.Eq | ast.NotEq) for o in node.ops
        ):
            text = ast.unparse(node).lower()
            assert not re.search(r"sig|mac|digest|hexdigest", text), f"plain comparison: {text}"

    secret, body = "readme-example-key", b'{"version": "1", "alerts": []}'

    def signed(at: float, key: str = secret, payload: bytes = body) -> dict[str, str]:
        stamp = int(at)
        return {
            "X-Watchdog-Delivery": "6737efe7-6ddf-4248-a4ad-f8a2d99c3f68",
            "X-Watchdog-Timestamp": str(stamp),
            "X-Watchdog-Signature": signature(key, stamp, payload),
        }

    now = time.time()
    assert _call(verify, secret, signed(now), body), "a fresh, correctly signed delivery"
    assert _call(verify, secret, signed(now - 60), body), "a minute old (a retry in flight)"
    assert not _call(verify, secret, signed(now - 3600), body), "an hour old: a replay"
    assert not _call(verify, secret, signed(now - 86400 * 365), body), "a year old"
    assert not _call(verify, secret, signed(now + 3600), body), "an hour in the future"
    assert not _call(verify, secret, signed(now), body + b" "), "a changed body"
    assert not _call(verify, secret, signed(now, key="another-key"), body), "another secret"
    unsigned = {k: v for k, v in signed(now).items() if k != "X-Watchdog-Signature"}
    assert not _call(verify, secret, unsigned, body), "no signature"
    garbage = {**signed(now), "X-Watchdog-Timestamp": "soon"}
    assert not _call(verify, secret, garbage, body), "a timestamp that is not a number"
    # the reference: what the snippet must agree with
    mac = hmac.new(secret.encode(), f"{int(now)}.".encode() + body, hashlib.sha256)
    assert signed(now)["X-Watchdog-Signature"] == f"sha256={mac.hexdigest()}"


# --- the session scan itself --------------------------------------------------------------------


async def test_secretscan_plugin_fails_a_session_that_prints_a_secret(tmp_path: Path) -> None:
    """tests/secretscan.py turns a passing session whose output shows a known secret into a
    failed one (exit 1, naming the test), and leaves a clean session alone."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    (tmp_path / "test_leaky.py").write_text(
        "import logging\n\n\ndef test_prints():\n"
        f"    print('token is {SEC_TOKEN[:9]}' + '{SEC_TOKEN[9:]}')\n\n\n"
        "def test_logs():\n"
        "    logging.getLogger('x').warning(\n"
        f"        'secret %s', '{SEC_HOOK_SECRET[:8]}' + '{SEC_HOOK_SECRET[8:]}'\n"
        "    )\n",
        encoding="utf-8",
    )
    (tmp_path / "test_clean.py").write_text(
        "def test_quiet():\n    print('nothing')\n", encoding="utf-8"
    )
    env = child_env(PYTHONPATH=str(ROOT))
    args = ("-m", "pytest", "-p", "tests.secretscan", "-p", "no:cacheprovider", "-q",
            "--rootdir", str(tmp_path), "-c", str(tmp_path / "pytest.ini"))  # fmt: skip

    async def pytest_run(target: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *args, str(tmp_path / target), stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env=env, cwd=tmp_path,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode is not None
        return proc.returncode, out.decode()

    (leaky_code, leaky), (clean_code, clean) = await asyncio.gather(
        pytest_run("test_leaky.py"), pytest_run("test_clean.py")
    )
    print(leaky.replace(SEC_TOKEN, "<token>").replace(SEC_HOOK_SECRET, "<hook secret>"))
    print(clean)
    assert leaky_code == 1
    assert "2 passed" in leaky
    assert "SECRET SCAN FAILED" in leaky
    assert "test_leaky.py::test_prints" in leaky
    assert "test_leaky.py::test_logs" in leaky
    assert clean_code == 0
    assert "secret scan:" in clean
    assert "none found" in clean
