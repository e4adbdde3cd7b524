"""The floor for this stack: a bare aiohttp loop (one session, a semaphore, GET every ID, parse
the JSON) — what any asyncio client must spend to poll the same tasks.

Run as its own process so that it pays an interpreter start-up like ``sd-watchdog check``::

    python -m bench.floor URL TOKEN N CONCURRENCY   # prints {"ok": n, "wall": s, "cpu": s}

It imports nothing from the watchdog, so its start-up is that of ``import aiohttp``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Sequence

import aiohttp

STATUS_PATH = "/api/v1.0/external/sdtask/status"


async def fetch_all(base_url: str, token: str, ids: Sequence[int], concurrency: int) -> int:
    """GET every ID's status at most ``concurrency`` at a time; the number of JSON objects."""
    semaphore = asyncio.Semaphore(concurrency)
    url = base_url + STATUS_PATH
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def one(task_id: int) -> int:
            async with semaphore, session.get(url, params={"taskId": str(task_id)}) as resp:
                body = await resp.read()
            return 1 if resp.status == 200 and isinstance(json.loads(body), dict) else 0

        return sum(await asyncio.gather(*(one(i) for i in ids)))


def main(argv: Sequence[str]) -> int:
    base_url, token, count, concurrency = argv[0], argv[1], int(argv[2]), int(argv[3])
    started, cpu = time.perf_counter(), time.process_time()
    ok = asyncio.run(fetch_all(base_url, token, range(1, count + 1), concurrency))
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    sys.stdout.write(json.dumps({"ok": ok, "wall": wall, "cpu": cpu}) + "\n")
    return 0 if ok == count else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
