"""Dump Celery's Redis result backend as JSON lines, one document per task, for
`taskledger validate --legacy FILE --mapping fixtures/mappings/celery-redis.toml`.

    python -m taskledger.export_celery --redis redis://127.0.0.1:6379/1 > celery-export.jsonl

Reads every `celery-task-meta-*` key (SCAN, never KEYS) and writes its JSON value as stored. With
`result_extended=True` a document has task_id, status, name, args, kwargs, worker, retries, queue
and date_done; without it only task_id, status, result, traceback, date_done. Speaks the Redis
protocol over a socket itself (no dependency); `redis://[:password@]host[:port][/db]`.
"""

from __future__ import annotations

import argparse
import socket
import sys
import urllib.parse
from collections.abc import Iterator

KEY_PATTERN = b"celery-task-meta-*"
#: Keys asked for per SCAN step.
SCAN_COUNT = 1000


class Redis:
    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "redis":
            raise SystemExit(f"export_celery: only redis:// URLs are supported, not {url!r}")
        self.sock = socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or 6379), timeout=timeout_s
        )
        self.reader = self.sock.makefile("rb")
        if parts.password:
            self.call(b"AUTH", parts.password.encode())
        db = parts.path.strip("/")
        if db:
            self.call(b"SELECT", db.encode())

    def call(self, *args: bytes):
        command = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
        self.sock.sendall(command)
        return self._read()

    def _read(self):
        line = self.reader.readline()
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise SystemExit(f"export_celery: redis error: {rest.decode(errors='replace')}")
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            data = self.reader.read(size + 2)
            return data[:-2]
        if kind == b"*":
            return [self._read() for _ in range(int(rest))]
        raise SystemExit(f"export_celery: unexpected reply {line!r}")

    def scan(self, pattern: bytes) -> Iterator[bytes]:
        cursor = b"0"
        while True:
            cursor, keys = self.call(
                b"SCAN", cursor, b"MATCH", pattern, b"COUNT", str(SCAN_COUNT).encode()
            )
            yield from keys
            if cursor == b"0":
                return


def export(url: str, out) -> int:
    redis = Redis(url)
    count = 0
    for key in sorted(redis.scan(KEY_PATTERN)):
        value = redis.call(b"GET", key)
        if value is None:  # expired meanwhile
            continue
        out.write(value.decode() + "\n")
        count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", required=True, help="the result backend, redis://host:port/db")
    args = parser.parse_args(argv)
    count = export(args.redis, sys.stdout)
    print(f"export_celery: {count} documents", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
