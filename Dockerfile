# syntax=docker/dockerfile:1
#
# sd-watchdog container image: a sidecar or a stand-alone service.
#
#   docker build -t sd-watchdog .
#   docker run -d --name sd-watchdog \
#     -e WATCHDOG_API__TOKEN=... -e WATCHDOG_TASKS__IDS='[101, 102]' \
#     -v sd-watchdog-state:/var/lib/sd-watchdog -p 127.0.0.1:9465:9465 sd-watchdog
#
# Configuration: the environment alone is enough (WATCHDOG_* variables, nested keys joined
# with "__"). For a TOML file, mount it read-only at /etc/sd-watchdog/watchdog.toml and set
# WATCHDOG_CONFIG=/etc/sd-watchdog/watchdog.toml; the image does not set WATCHDOG_CONFIG itself,
# because a configured file that is missing is a config error (exit 2). Secrets: mount files
# named like the variables into /run/secrets (e.g. /run/secrets/watchdog_api__token), which is
# what compose and Kubernetes secrets do, or pass WATCHDOG_API__TOKEN.
#
# Signals: tini is PID 1 and forwards SIGTERM; sd-watchdog drains for at most
# [poll] shutdown_timeout (5 s by default) and exits 0, inside Docker's 10 s stop timeout.
# `docker run --init` is not needed (harmless if used).
#
# The base image and the tini pin go together: bump both when moving to another Debian.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/sd-watchdog/bin:$PATH
# sd-watchdog gets a virtualenv of its own: its import package `watchdog` shares the name of
# an unrelated PyPI package. The venv is copied whole into the final stage.
RUN python -m venv /opt/sd-watchdog
WORKDIR /src
# Dependencies in their own layer: it is rebuilt only when pyproject.toml changes, not on
# every code change. The pins come straight from [project] dependencies.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
    && pip install --no-cache-dir --requirement requirements.txt
# Then the package itself, without touching the dependencies again.
COPY watchdog/ watchdog/
RUN pip install --no-cache-dir --no-deps . \
    && sd-watchdog --version

FROM ${PYTHON_IMAGE}
# tini as PID 1: forwards signals and reaps zombies (the HEALTHCHECK execs a process
# every interval). No curl: the health check is the program itself.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini=0.19.0-1+b3 \
    && rm -rf /var/lib/apt/lists/*
# A fixed, non-root UID/GID, so volume ownership and Kubernetes runAsUser line up.
RUN groupadd --system --gid 10001 sd-watchdog \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /var/lib/sd-watchdog --shell /usr/sbin/nologin sd-watchdog \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/sd-watchdog
COPY --from=builder /opt/sd-watchdog /opt/sd-watchdog
# STATE_DIRECTORY: the SQLite state defaults to $STATE_DIRECTORY/sd-watchdog.db (the volume).
# The server binds every interface so that probes and Prometheus can reach it from outside the
# container; /tasks stays 404 there unless [server] expose_tasks = true, and
# `sd-watchdog health` asks a wildcard bind on loopback.
ENV PATH=/opt/sd-watchdog/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    STATE_DIRECTORY=/var/lib/sd-watchdog \
    WATCHDOG_SERVER__LISTEN=0.0.0.0:9465
VOLUME /var/lib/sd-watchdog
WORKDIR /var/lib/sd-watchdog
USER 10001:10001
EXPOSE 9465
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["sd-watchdog", "health"]
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["sd-watchdog", "run"]
