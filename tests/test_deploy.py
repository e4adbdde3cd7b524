"""The deployment artifacts: the Dockerfile, the systemd unit, the Kubernetes and compose
examples. Each is linted or validated offline, and where it starts the program, the command
line it ships is run against the locally installed copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import TOKEN
from tests.helpers import free_port
from watchdog.scenarios import healthy
from watchdog.settings import PollSettings, TasksSettings, parse_duration
from watchdog.simulator import Simulator

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).absolute().parent  # the venv's bin (not the resolved interpreter's)
SCRIPT = BIN / "sd-watchdog"
DOCKERFILE = ROOT / "Dockerfile"
UNIT = ROOT / "config" / "systemd" / "sd-watchdog.service"
KUBERNETES = ROOT / "config" / "kubernetes"
COMPOSE = ROOT / "compose.yaml"
KUBERNETES_VERSION = "1.33.0"  # a version kubernetes-validate ships schemas for
RESERVED_PORTS = {9090, 9093, 9465}  # real Prometheus / Alertmanager / sd-watchdog defaults
SHUTDOWN_TIMEOUT = PollSettings().shutdown_timeout
MASK = "********"
COMMAND_TIMEOUT = 30.0  # any one short command (validate, health)


# --- helpers ---------------------------------------------------------------------------------


def require_tool(name: str) -> str:
    """The path of ``name`` (the venv's bin first); skip without it, but fail on CI."""
    candidate = BIN / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is not installed, and CI must run this test")
        pytest.skip(f"{name} is not installed")
    return found


def child_env() -> dict[str, str]:
    """The test process's environment without any sd-watchdog configuration in it."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.upper().startswith("WATCHDOG_") and k != "CREDENTIALS_DIRECTORY"
    }


async def run_command(
    argv: list[str], env: Mapping[str, str], cwd: Path | str
) -> tuple[int, str, str]:
    """Run a command to completion (bounded); return its exit code, stdout and stderr."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=dict(env),
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(COMMAND_TIMEOUT):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


class Daemon:
    """A long-running child whose combined output is collected while it runs."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._reader = asyncio.create_task(self._read(), name=f"daemon-output-{proc.pid}")

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.lines.append(line.decode(errors="replace").rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    async def wait(self) -> int:
        """The exit code, once the process ended and its output is read to the end."""
        code = await self.proc.wait()
        await self._reader
        return code

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@contextlib.asynccontextmanager
async def daemon(argv: list[str], env: Mapping[str, str], cwd: Path | str) -> AsyncIterator[Daemon]:
    """Start ``argv``; it is killed at the end if the test did not stop it."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=dict(env),
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    child = Daemon(proc)
    try:
        yield child
    finally:
        await child.close()


# --- Dockerfile ------------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # also inside a continuation, as Docker does
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    return instructions


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8"))
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def exec_form(args: str) -> list[str]:
    """The JSON array of an exec-form CMD / ENTRYPOINT / HEALTHCHECK CMD (shell form fails)."""
    value = json.loads(args)
    assert isinstance(value, list), f"not exec form: {args}"
    assert all(isinstance(part, str) for part in value), args
    return [str(part) for part in value]


def image_instruction(keyword: str) -> str:
    found = [args for kw, args in final_stage() if kw == keyword]
    assert found, f"the final stage has no {keyword}"
    return found[-1]  # the last one wins, as in Docker


def image_cmd() -> list[str]:
    return exec_form(image_instruction("CMD"))


def image_healthcheck() -> list[str]:
    match = re.fullmatch(r"((?:--\S+\s+)*)CMD\s+(\[.*\])", image_instruction("HEALTHCHECK"))
    assert match, "HEALTHCHECK must be `[--options] CMD [exec form]`"
    return exec_form(match.group(2))


def image_env() -> dict[str, str]:
    """The final stage's ENV, as ``KEY=value`` pairs (``$PATH`` left unexpanded)."""
    env: dict[str, str] = {}
    for keyword, args in final_stage():
        if keyword == "ENV":
            for token in shlex.split(args):
                key, sep, value = token.partition("=")
                assert sep, f"use ENV KEY=value, not the legacy form: {args}"
                env[key] = value
    return env


def image_user() -> int:
    uid = image_instruction("USER").split(":")[0]
    assert uid.isdigit(), "USER must be numeric so that runAsNonRoot can check it"
    return int(uid)


def test_dockerfile_declares_the_runtime_contract() -> None:
    """Multi-stage, non-root, tini, SIGTERM, a self-made HEALTHCHECK and the state volume."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    instructions = dockerfile_instructions(text)
    assert sum(keyword == "FROM" for keyword, _ in instructions) >= 2
    assert any(keyword == "COPY" and args.startswith("--from=") for keyword, args in final_stage())
    assert image_user() != 0
    assert image_instruction("STOPSIGNAL") == "SIGTERM"
    assert exec_form(image_instruction("ENTRYPOINT"))[:2] == ["/usr/bin/tini", "--"]
    assert image_cmd() == ["sd-watchdog", "run"]
    assert image_healthcheck() == ["sd-watchdog", "health"]
    commands = " ".join(args for _, args in instructions)
    assert not re.search(r"\b(curl|wget)\b", commands), "the image checks its health by itself"
    env = image_env()
    volumes = image_instruction("VOLUME").split()
    assert env["STATE_DIRECTORY"] in volumes
    listen_host, _, listen_port = env["WATCHDOG_SERVER__LISTEN"].rpartition(":")
    assert listen_host == "0.0.0.0"  # noqa: S104 (probes come from outside the container)
    assert image_instruction("EXPOSE").split() == [listen_port]


def test_dockerfile_passes_hadolint() -> None:
    """hadolint reports nothing for the Dockerfile, not even style notes."""
    hadolint = require_tool("hadolint")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


async def wait_until_healthy(
    argv: list[str], env: Mapping[str, str], cwd: Path, child: Daemon
) -> tuple[int, str, str]:
    """Run the health command until it passes, the daemon exits or 20 s are up."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20.0
    while True:
        result = await run_command(argv, env, cwd)
        if result[0] == 0 or child.proc.returncode is not None or loop.time() > deadline:
            return result
        await asyncio.sleep(0.2)


async def test_image_cmd_and_healthcheck_run_against_the_installed_copy(
    tmp_path: Path, start_simulator: Any
) -> None:
    """The image's CMD serves, its HEALTHCHECK says 0 while it runs and 1 once it stopped."""
    sim: Simulator = await start_simulator([healthy(1)])
    env = child_env()
    env.update({k: v for k, v in image_env().items() if k != "PATH"})
    # like the image's PATH=/opt/sd-watchdog/bin:$PATH, so the argv runs unchanged
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', os.defpath)}"
    state = tmp_path / "state"
    state.mkdir()
    env.update(
        STATE_DIRECTORY=str(state),
        WATCHDOG_SERVER__LISTEN=f"127.0.0.1:{free_port()}",
        WATCHDOG_API__TOKEN=TOKEN,
        WATCHDOG_API__BASE_URL=sim.base_url,
        WATCHDOG_TASKS__IDS="[1]",
    )
    check = image_healthcheck()
    async with daemon(image_cmd(), env, state) as child:
        code, out, err = await wait_until_healthy(check, env, state, child)
        assert code == 0, f"{out}{err}\n--- daemon ---\n{child.output}"
        child.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            assert await child.wait() == 0, child.output
    code, _, err = await run_command(check, env, state)
    assert code == 1, err
    assert "Traceback" not in err
    assert TOKEN not in child.output + err


# --- systemd ---------------------------------------------------------------------------------


def unit_directives(text: str) -> dict[str, list[str]]:
    """Every ``Key=value`` of the unit, in order (keys such as Environment= repeat)."""
    directives: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;" or line.startswith("["):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a directive: {line}"
        directives.setdefault(key.strip(), []).append(value.strip())
    return directives


def unit_value(directives: Mapping[str, list[str]], key: str) -> str:
    values = directives.get(key)
    assert values, f"the unit has no {key}="
    return values[-1]


def local_execstart(directives: Mapping[str, list[str]], config: Path) -> list[str]:
    """The unit's ExecStart with the program replaced by the installed script and --config by
    ``config``; everything else as shipped."""
    argv = shlex.split(unit_value(directives, "ExecStart"))
    assert argv[0] == "/opt/sd-watchdog/bin/sd-watchdog"
    assert argv[1:3] == ["run", "--config"], argv
    return [str(SCRIPT), argv[1], argv[2], str(config), *argv[4:]]


def unit_credential(directives: Mapping[str, list[str]]) -> str:
    """The LoadCredential= ID of the token: the file name under $CREDENTIALS_DIRECTORY."""
    name, _, source = unit_value(directives, "LoadCredential").partition(":")
    assert source.startswith("/")
    return name


def test_unit_declares_the_service_contract() -> None:
    """Type=notify with a watchdog, no restart on a bad config, stop timeout above the drain."""
    directives = unit_directives(UNIT.read_text(encoding="utf-8"))
    assert unit_value(directives, "Type") == "notify"
    assert unit_value(directives, "NotifyAccess") == "main"
    assert parse_duration(unit_value(directives, "WatchdogSec")) > 0
    assert unit_value(directives, "Restart") == "on-failure"
    assert "2" in unit_value(directives, "RestartPreventExitStatus").split()
    assert parse_duration(unit_value(directives, "TimeoutStopSec")) > SHUTDOWN_TIMEOUT + 5
    assert unit_value(directives, "DynamicUser") == "yes"
    assert unit_value(directives, "StateDirectory") == "sd-watchdog"
    assert unit_credential(directives) == "watchdog_api__token"
    assert "PYTHONUNBUFFERED=1" in directives["Environment"]


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """`systemd-analyze verify` prints nothing for the unit pointed at the installed script."""
    analyze = require_tool("systemd-analyze")
    config = tmp_path / "watchdog.toml"
    config.write_text('[api]\nbase_url = "http://127.0.0.1:1"\n', encoding="utf-8")
    token = tmp_path / "token"
    token.write_text(TOKEN, encoding="utf-8")
    directives = unit_directives(UNIT.read_text(encoding="utf-8"))
    execstart = shlex.join(local_execstart(directives, config))
    replaced = {
        "ExecStart": execstart,
        "LoadCredential": f"{unit_credential(directives)}:{token}",
    }
    lines = []
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        key = line.partition("=")[0]
        lines.append(f"{key}={replaced[key]}" if key in replaced else line)
    copy = tmp_path / UNIT.name
    copy.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.stderr == ""
    assert result.returncode == 0


def test_unit_security_exposure_is_at_most_2() -> None:
    """`systemd-analyze security --offline=true` rates the shipped unit 2.0 or better."""
    analyze = require_tool("systemd-analyze")
    result = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0, result.stdout


@contextlib.contextmanager
def notify_socket(folder: Path) -> Iterator[tuple[socket.socket, str]]:
    """A real AF_UNIX datagram socket, as systemd's $NOTIFY_SOCKET (paths ≤ 107 bytes)."""
    path = folder / "notify.sock"
    with contextlib.ExitStack() as stack:
        if len(os.fsencode(path)) > 100:
            short = stack.enter_context(tempfile.TemporaryDirectory(prefix="sdw-"))
            path = Path(short) / "notify.sock"
        sock = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
        sock.bind(str(path))
        sock.setblocking(False)
        yield sock, str(path)


class NotifyListener:
    """Reads sd_notify datagrams; keeps every message it saw (callers bound the waits)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.messages: list[dict[str, str]] = []

    async def until(self, key: str, value: str = "1") -> dict[str, str]:
        """The next message that carries ``key=value``."""
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self._sock, 65536)
            fields = dict(line.partition("=")[::2] for line in data.decode().splitlines())
            self.messages.append(fields)
            if fields.get(key) == value:
                return fields


def systemd_environment(directives: Mapping[str, list[str]], **extra: str) -> dict[str, str]:
    """What systemd gives a service: a fixed PATH, the unit's Environment=, and ``extra``
    (the caller's environment is not inherited). Coverage settings pass through."""
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin", "LANG": "C.UTF-8"}
    for assignment in directives.get("Environment", []):
        for token in shlex.split(assignment):
            key, _, value = token.partition("=")
            env[key] = value
    env.update({k: v for k, v in os.environ.items() if k.startswith("COVERAGE_")})
    env.update(extra)
    return env


async def test_unit_execstart_speaks_sd_notify(tmp_path: Path, start_simulator: Any) -> None:
    """Under an emulated systemd: READY=1, WATCHDOG=1 pings, STOPPING=1 on SIGTERM, exit 0."""
    sim: Simulator = await start_simulator([healthy(1), healthy(2)])
    directives = unit_directives(UNIT.read_text(encoding="utf-8"))
    config = tmp_path / "watchdog.toml"
    config.write_text(
        f'[api]\nbase_url = "{sim.base_url}"\nretry_backoff = 0.01\n'
        f'[tasks]\nids = [1, 2]\n[server]\nlisten = "127.0.0.1:{free_port()}"\n',
        encoding="utf-8",
    )
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / unit_credential(directives)).write_text(TOKEN + "\n", encoding="utf-8")
    state = tmp_path / "state" / unit_value(directives, "StateDirectory")
    state.mkdir(parents=True)
    with notify_socket(tmp_path) as (sock, address):
        env = systemd_environment(
            directives,
            NOTIFY_SOCKET=address,
            WATCHDOG_USEC="1000000",  # pings every 0.5 s
            CREDENTIALS_DIRECTORY=str(credentials),
            STATE_DIRECTORY=str(state),
        )
        cwd = unit_value(directives, "WorkingDirectory")
        assert cwd == "/"
        listener = NotifyListener(sock)
        async with daemon(local_execstart(directives, config), env, cwd) as child:
            step = "READY=1"
            try:
                async with asyncio.timeout(20):
                    ready = await listener.until("READY")
                assert ready.get("STATUS"), ready
                assert ready.get("MAINPID", str(child.proc.pid)) == str(child.proc.pid)
                step = "two WATCHDOG=1 pings"
                async with asyncio.timeout(5):
                    await listener.until("WATCHDOG")
                    await listener.until("WATCHDOG")
                child.proc.send_signal(signal.SIGTERM)
                step = "STOPPING=1"
                async with asyncio.timeout(10):
                    await listener.until("STOPPING")
                step = "exit"
                async with asyncio.timeout(15):
                    code = await child.wait()
            except TimeoutError:
                pytest.fail(f"no {step} in time; sd_notify: {listener.messages}\n{child.output}")
            assert code == 0, child.output
    assert TOKEN not in child.output
    assert (state / "sd-watchdog.db").exists()


# --- Kubernetes ------------------------------------------------------------------------------

KUBERNETES_EXAMPLES = [("sidecar.yaml", "Deployment"), ("statefulset-sharded.yaml", "StatefulSet")]
POD_INDEX_FIELD = "metadata.labels['apps.kubernetes.io/pod-index']"


def load_documents(path: Path) -> list[dict[str, Any]]:
    documents = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    assert all(isinstance(d, dict) for d in documents), path
    return documents


def find_object(documents: list[dict[str, Any]], kind: str, name: str | None = None) -> Any:
    found = [
        d
        for d in documents
        if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def watchdog_container(pod: Mapping[str, Any]) -> Any:
    containers = [c for c in pod["containers"] if c["name"] == "sd-watchdog"]
    assert len(containers) == 1
    return containers[0]


@pytest.mark.parametrize(("filename", "_kind"), KUBERNETES_EXAMPLES)
def test_kubernetes_example_validates_offline(filename: str, _kind: str) -> None:
    """Every object passes kubernetes-validate's strict schemas (shipped, no network)."""
    validator = importlib.import_module("kubernetes_validate")
    documents = load_documents(KUBERNETES / filename)
    assert documents
    for document in documents:
        where = f"{filename}: {document['kind']}/{document['metadata']['name']}"
        try:
            validator.validate(document, KUBERNETES_VERSION, strict=True)
        except (validator.ValidationError, validator.SchemaNotFoundError) as err:
            pytest.fail(f"{where}: {err.message}")


@pytest.mark.parametrize(("filename", "kind"), KUBERNETES_EXAMPLES)
def test_kubernetes_watchdog_is_probed_limited_and_locked_down(filename: str, kind: str) -> None:
    """/healthz liveness, /readyz readiness, requests and limits, and a locked-down context."""
    workload = find_object(load_documents(KUBERNETES / filename), kind)
    pod = workload["spec"]["template"]["spec"]
    container = watchdog_container(pod)
    port = int(image_env()["WATCHDOG_SERVER__LISTEN"].rpartition(":")[2])
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port}
    for bound in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][bound])
    context = container["securityContext"]
    pod_context = pod.get("securityContext", {})

    def effective(key: str) -> Any:
        return context.get(key, pod_context.get(key))

    assert effective("runAsNonRoot") is True
    assert effective("runAsUser") in (None, image_user())
    assert effective("seccompProfile") == {"type": "RuntimeDefault"}
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert image_env()["STATE_DIRECTORY"] in mounts  # writable despite the read-only root
    termination = pod.get("terminationGracePeriodSeconds", 30)
    assert termination > SHUTDOWN_TIMEOUT + 5


def emulate_container(
    documents: list[dict[str, Any]], pod: Mapping[str, Any], root: Path, ordinal: int
) -> tuple[dict[str, str], Path, Path]:
    """The container's environment, and local copies of its config and secret mounts: the
    ConfigMap files under ``root``/config, the Secret items under ``root``/secrets."""
    container = watchdog_container(pod)
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_dir, secrets_dir = root / "config", root / "secrets"
    config_dir.mkdir()
    secrets_dir.mkdir()
    config_mount = ""
    for mount in container["volumeMounts"]:
        volume = volumes.get(mount["name"], {})
        if "configMap" in volume:
            data = find_object(documents, "ConfigMap", volume["configMap"]["name"])["data"]
            for key, value in data.items():
                (config_dir / key).write_text(value, encoding="utf-8")
            config_mount = mount["mountPath"]
        elif "secret" in volume:
            assert mount["mountPath"] == "/run/secrets", "the default secrets directory"
            secret = find_object(documents, "Secret", volume["secret"]["secretName"])
            for item in volume["secret"]["items"]:
                (secrets_dir / item["path"]).write_text(
                    secret["stringData"][item["key"]], encoding="utf-8"
                )
    assert config_mount, "the config is mounted from a ConfigMap"
    # Absolute paths in the file point into the mount: follow them to the local copy.
    for path in config_dir.iterdir():
        text = path.read_text(encoding="utf-8").replace(f"{config_mount}/", f"{config_dir}/")
        path.write_text(text, encoding="utf-8")
    env: dict[str, str] = {}
    for entry in container.get("env", []):
        if "value" in entry:
            value = re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), entry["value"])
        elif "secretKeyRef" in entry["valueFrom"]:
            ref = entry["valueFrom"]["secretKeyRef"]
            value = find_object(documents, "Secret", ref["name"])["stringData"][ref["key"]]
        else:
            assert entry["valueFrom"]["fieldRef"]["fieldPath"] == POD_INDEX_FIELD
            value = str(ordinal)
        env[entry["name"]] = value
    assert env["WATCHDOG_CONFIG"].startswith(f"{config_mount}/")
    config = config_dir / env.pop("WATCHDOG_CONFIG").removeprefix(f"{config_mount}/")
    return env, config, secrets_dir


@pytest.mark.parametrize(("filename", "kind"), KUBERNETES_EXAMPLES)
def test_kubernetes_config_passes_sd_watchdog_validate(
    filename: str, kind: str, tmp_path: Path
) -> None:
    """The ConfigMap's watchdog.toml, with the container's env and Secret, is a valid config."""
    documents = load_documents(KUBERNETES / filename)
    workload = find_object(documents, kind)
    pod = workload["spec"]["template"]["spec"]
    replicas = int(workload["spec"].get("replicas", 1))
    assert watchdog_container(pod)["args"] == image_cmd()
    last = replicas - 1
    env, config, secrets = emulate_container(documents, pod, tmp_path, ordinal=last)
    shard = env.get("WATCHDOG_TASKS__SHARD")
    if kind == "StatefulSet":
        # every ordinal gets its own valid shard of exactly `replicas`
        assert shard == f"{last}/{replicas}"
        for ordinal in range(replicas):
            assert TasksSettings(shard=shard.replace(str(last), str(ordinal))).shard == (
                ordinal,
                replicas,
            )
    process_env = child_env()
    process_env.update({k: v for k, v in image_env().items() if k != "PATH"})
    process_env.update(env, STATE_DIRECTORY=str(tmp_path / "state"))
    result = subprocess.run(
        [str(SCRIPT), "validate", "--config", str(config), "--secrets-dir", str(secrets)],
        capture_output=True,
        text=True,
        env=process_env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    effective = json.loads(result.stdout)
    assert effective["api"]["token"] == MASK  # from the Secret, and masked
    tasks = effective["tasks"]
    assert tasks["ids"] or tasks["external_ids"] or tasks["file"]
    assert tasks["shard"] == (shard or "0/1")


# --- compose ---------------------------------------------------------------------------------


def test_compose_example_structure() -> None:
    """compose.yaml builds the image, health-checks it, mounts secret, config and state."""
    document = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    service = document["services"]["sd-watchdog"]
    build = service["build"]
    context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
    dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    assert (context / dockerfile).resolve() == DOCKERFILE
    test = service["healthcheck"]["test"]
    assert test[0] in ("CMD", "CMD-SHELL")
    assert "sd-watchdog" in test[1:]
    assert "health" in test[1:]
    assert parse_duration(service["stop_grace_period"]) > SHUTDOWN_TIMEOUT + 5
    assert service.get("init") is True or image_instruction("ENTRYPOINT").find("tini") >= 0
    # the secret file lands as /run/secrets/<name>, which must be a settings key
    secrets = [s if isinstance(s, str) else s["source"] for s in service["secrets"]]
    assert "watchdog_api__token" in secrets
    for name in secrets:
        assert "file" in document["secrets"][name]
    volumes = {v["target"]: v for v in service["volumes"]}
    state = volumes[image_env()["STATE_DIRECTORY"]]
    assert state["type"] == "volume"
    assert state["source"] in document["volumes"]
    config = volumes[service["environment"]["WATCHDOG_CONFIG"]]
    assert config["read_only"] is True
    assert (ROOT / config["source"]).is_file()
