#!/usr/bin/env python3
"""Hostile HTTP against a running `taskledger serve` (RELIABILITY.md). Standard library only.

    bench/hostile_http.py --url http://127.0.0.1:PORT --pid PID --token-reporter T [...]

Phases, each while a well-behaved client keeps posting reports and reading them back (its
failures and its worst latency are counted):
  idle       IDLE connections that send nothing, and HALF connections that send half a request
             head; after the header read timeout the server must have closed every one of them
  drip       connections that send their head one byte per second (slowloris): closed too
  oversized  request heads of 100 KiB to 1 MiB (one header, or many): a 4xx or a close, never 5xx
  garbage    random bytes and broken request lines: a 4xx or a close, never 5xx
  flood      CONCURRENT connections open at once, each sending one request: all answered
The service's RSS (/proc/PID/status) and open files (/proc/PID/fd) are sampled throughout.
Exits 1 if the service died, answered any 5xx, the well-behaved client failed, a hostile
connection outlived the timeout by more than its margin, or RSS grew past --rss-max-mb.
"""
import argparse
import asyncio
import json
import os
import random
import sys
import time
import urllib.parse

ap = argparse.ArgumentParser()
ap.add_argument("--url", required=True)
ap.add_argument("--pid", type=int, required=True)
ap.add_argument("--token-reporter", default="")
ap.add_argument("--token-reader", default="")
ap.add_argument("--idle", type=int, default=2000)
ap.add_argument("--half", type=int, default=2000)
ap.add_argument("--drip", type=int, default=200)
ap.add_argument("--concurrent", type=int, default=10000)
ap.add_argument("--header-timeout", type=float, default=10.0, help="serve's HEADER_READ_TIMEOUT_SECONDS")
ap.add_argument("--idle-timeout", type=float, default=60.0, help="serve's CONNECTION_IDLE_SECONDS")
ap.add_argument("--rss-max-mb", type=float, default=1024.0)
ap.add_argument("--json", help="write the figures here")
args = ap.parse_args()
url = urllib.parse.urlparse(args.url)
HOST, PORT = url.hostname, url.port

figures = {"phases": {}, "fiveHundreds": 0, "wellBehaved": {"ok": 0, "failed": 0, "worstMs": 0.0}}
problems = []


def proc(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) / 1024
        return rss, len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, StopIteration, ProcessLookupError):
        return None, None


samples = []


def sample(phase):
    rss, fds = proc(args.pid)
    if rss is None:
        problems.append(f"{phase}: the service is gone")
        return
    samples.append({"phase": phase, "t": round(time.time(), 1), "rssMb": round(rss, 1), "fds": fds})


async def request(method, path, body=b"", token="", headers=None, timeout=30.0):
    """One request on its own connection; (status, body) or raises."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, PORT), timeout)
    try:
        head = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{PORT}", "Connection: close",
                f"Content-Length: {len(body)}"]
        if token:
            head.append(f"Authorization: Bearer {token}")
        if body:
            head.append("Content-Type: application/x-ndjson")
        for name, value in (headers or {}).items():
            head.append(f"{name}: {value}")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    line = data.split(b"\r\n", 1)[0].split()
    status = int(line[1]) if len(line) >= 2 and line[1].isdigit() else 0
    if status >= 500:
        figures["fiveHundreds"] += 1
        problems.append(f"{method} {path}: {status}")
    return status, data.split(b"\r\n\r\n", 1)[-1]


class WellBehaved:
    """Posts a report and reads its task back, over and over, until stopped."""

    def __init__(self):
        self.stop = False
        self.n = 0

    async def run(self):
        while not self.stop:
            self.n += 1
            task = f"hostile:well:{os.getpid()}:{self.n}"
            report = json.dumps({"op": "enqueue", "taskId": task,
                                 "executionId": f"00000000-0000-4000-8000-{self.n:012d}",
                                 "queue": "hostile", "at": "2026-01-21T10:00:00.000Z"}).encode()
            started = time.monotonic()
            try:
                status, _ = await request("POST", "/v1/reports", report, args.token_reporter, timeout=15)
                ok = status == 200
                status, _ = await request("GET", f"/v1/tasks/{urllib.parse.quote(task)}/history",
                                          token=args.token_reader, timeout=15)
                ok = ok and status == 200
            except (OSError, asyncio.TimeoutError):
                ok = False
            took = (time.monotonic() - started) * 1000
            w = figures["wellBehaved"]
            w["ok" if ok else "failed"] += 1
            w["worstMs"] = round(max(w["worstMs"], took), 1)
            await asyncio.sleep(0.05)


async def closed_by_server(reader, deadline):
    """True when the server closes the connection before the deadline."""
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            chunk = await asyncio.wait_for(reader.read(65536), left)
            if not chunk:
                return True
    except (asyncio.TimeoutError,):
        return False
    except OSError:
        return True


async def hold(kind, payload, deadline, drip=False):
    try:
        reader, writer = await asyncio.open_connection(HOST, PORT)
    except OSError:
        return "refused"
    try:
        if drip:
            async def dripping():
                for byte in payload:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(1.0)
            dripper = asyncio.ensure_future(dripping())
        elif payload:
            writer.write(payload)
            await writer.drain()
        closed = await closed_by_server(reader, deadline)
        if drip:
            dripper.cancel()
        return "closed" if closed else "open"
    except OSError:
        return "closed"
    finally:
        writer.close()


async def phase_idle():
    half = f"POST /v1/reports HTTP/1.1\r\nHost: {HOST}\r\nContent-Le".encode()
    # Idle ones go at the idle timeout, half-sent ones at the header read timeout.
    margin = max(args.header_timeout, args.idle_timeout) + 10
    deadline = time.monotonic() + margin
    started = time.monotonic()
    tasks = [hold("idle", b"", deadline) for _ in range(args.idle)]
    tasks += [hold("half", half, deadline) for _ in range(args.half)]
    sampler = asyncio.ensure_future(sample_every("idle", 2))
    results = await asyncio.gather(*tasks)
    sampler.cancel()
    counts = {k: results.count(k) for k in ("closed", "open", "refused")}
    counts["seconds"] = round(time.monotonic() - started, 1)
    figures["phases"]["idle+half"] = counts
    if counts["open"]:
        problems.append(f"idle/half-sent: {counts['open']} connections still open after {margin} s")


async def phase_drip():
    head = f"GET /healthz HTTP/1.1\r\nHost: {HOST}\r\nX-Slow: {'a' * 200}\r\n\r\n".encode()
    margin = args.header_timeout + 10
    deadline = time.monotonic() + margin
    results = await asyncio.gather(*[hold("drip", head, deadline, drip=True) for _ in range(args.drip)])
    counts = {k: results.count(k) for k in ("closed", "open", "refused")}
    figures["phases"]["drip"] = counts
    if counts["open"]:
        problems.append(f"drip: {counts['open']} connections still open after {margin} s")


async def phase_oversized():
    statuses = {}
    cases = [
        {"X-Big": "a" * (100 * 1024)},
        {"X-Big": "a" * (1024 * 1024)},
        {f"X-Many-{i}": "b" * 100 for i in range(2000)},
        {"Cookie": "c=" + "d" * (200 * 1024)},
        {"Authorization": "Bearer " + "e" * (300 * 1024)},
    ]
    for headers in cases:
        for _ in range(5):
            try:
                status, _ = await request("GET", "/healthz", headers=headers, timeout=20)
            except (OSError, asyncio.TimeoutError):
                status = "closed"
            statuses[str(status)] = statuses.get(str(status), 0) + 1
    # A path of 1 MiB.
    try:
        status, _ = await request("GET", "/v1/tasks/" + "x" * (1024 * 1024), timeout=20)
    except (OSError, asyncio.TimeoutError):
        status = "closed"
    statuses[str(status)] = statuses.get(str(status), 0) + 1
    figures["phases"]["oversized"] = statuses
    sample("oversized")


async def phase_garbage():
    rng = random.Random(20)
    statuses = {}
    payloads = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4096))) for _ in range(300)]
    payloads += [b"GET\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"\r\n\r\n\r\n", b"POST /v1/reports HTTP/1.1\r\n"
                 b"Host: x\r\nContent-Length: -1\r\n\r\n", b"POST /v1/reports HTTP/1.1\r\nHost: x\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", b"GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n",
                 b"POST /v1/reports HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nabcde"]
    for payload in payloads:
        try:
            reader, writer = await asyncio.open_connection(HOST, PORT)
            writer.write(payload)
            await writer.drain()
            writer.write_eof()
            data = await asyncio.wait_for(reader.read(), args.header_timeout + 10)
            writer.close()
            line = data.split(b"\r\n", 1)[0].split()
            status = int(line[1]) if len(line) >= 2 and line[1].isdigit() else "closed"
        except (OSError, asyncio.TimeoutError):
            status = "closed"
        if isinstance(status, int) and status >= 500:
            figures["fiveHundreds"] += 1
            problems.append(f"garbage {payload[:40]!r}: {status}")
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    figures["phases"]["garbage"] = statuses


async def phase_flood():
    """CONCURRENT connections open at once (all connected before any sends), then each sends a
    request and reads its answer."""
    started = time.monotonic()
    connections = []
    refused = 0
    for chunk in range(0, args.concurrent, 500):
        opened = await asyncio.gather(*[asyncio.open_connection(HOST, PORT)
                                        for _ in range(min(500, args.concurrent - chunk))],
                                      return_exceptions=True)
        for item in opened:
            if isinstance(item, BaseException):
                refused += 1
            else:
                connections.append(item)
    sample("flood-open")
    open_at_once = len(connections)

    async def one(reader, writer):
        try:
            writer.write(f"GET /healthz HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
            data = await asyncio.wait_for(reader.read(), 60)
            line = data.split(b"\r\n", 1)[0].split()
            return int(line[1]) if len(line) >= 2 and line[1].isdigit() else 0
        except (OSError, asyncio.TimeoutError):
            return 0
        finally:
            writer.close()

    statuses = await asyncio.gather(*[one(r, w) for r, w in connections])
    answered = sum(1 for s in statuses if s == 200)
    five = sum(1 for s in statuses if s >= 500)
    figures["fiveHundreds"] += five
    figures["phases"]["flood"] = {"opened": open_at_once, "refused": refused, "answered200": answered,
                                  "other": len(statuses) - answered, "seconds": round(time.monotonic() - started, 1)}
    if answered != args.concurrent:
        problems.append(f"flood: {answered} of {args.concurrent} connections answered 200")
    sample("flood-done")


async def sample_every(phase, seconds):
    while True:
        sample(phase)
        await asyncio.sleep(seconds)


async def main():
    sample("start")
    client = WellBehaved()
    running = asyncio.ensure_future(client.run())
    for name, phase in [("idle", phase_idle), ("drip", phase_drip), ("oversized", phase_oversized),
                        ("garbage", phase_garbage), ("flood", phase_flood)]:
        t = time.monotonic()
        await phase()
        print(f"hostile-http: {name}: {json.dumps(figures['phases'].get(name) or figures['phases'].get(name + '+half'))}"
              f" ({time.monotonic() - t:.1f} s)", flush=True)
    await asyncio.sleep(1)
    client.stop = True
    await running
    sample("end")
    try:
        status, _ = await request("GET", "/healthz")
    except OSError:
        status = 0
    if status != 200:
        problems.append(f"the service does not answer /healthz at the end ({status})")
    w = figures["wellBehaved"]
    if w["failed"] or not w["ok"]:
        problems.append(f"well-behaved client: {w['failed']} failed, {w['ok']} ok")
    rss = [s["rssMb"] for s in samples]
    figures["rssMb"] = {"start": rss[0] if rss else None, "max": max(rss) if rss else None,
                        "end": rss[-1] if rss else None}
    fds = [s["fds"] for s in samples]
    figures["fds"] = {"start": fds[0] if fds else None, "max": max(fds) if fds else None,
                      "end": fds[-1] if fds else None}
    if rss and max(rss) > args.rss_max_mb:
        problems.append(f"RSS reached {max(rss)} MB (limit {args.rss_max_mb})")
    figures["problems"] = problems
    print("hostile-http: " + json.dumps({k: v for k, v in figures.items() if k != "phases"}), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**figures, "samples": samples}, f, indent=1)
    return 1 if problems else 0


sys.exit(asyncio.run(main()))
