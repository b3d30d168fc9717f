"""Client overhead per report: p50/p99 of a `claim` round trip through `taskledger.Ledger`, beside
the same request sent with bare `http.client` (one kept-alive connection, a prebuilt body), one
thread, against TASKLEDGER_URL. The difference is what the client itself costs (building the
report, its reportId, JSON, the outcome). Prints one JSON line.

    python clients/bench/claim_overhead.py --claims 2000
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import time
import urllib.parse
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python", "src"))
from taskledger import Ledger
from taskledger.client import _outcome


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--claims", type=int, default=2000)
    args = parser.parse_args()
    ledger = Ledger()
    run = uuid.uuid4().hex[:8]
    # Two sets of fresh executions (each claim is a real, accepted decision).
    tasks = [(f"bench_py:{run}:{i}", str(uuid.uuid4())) for i in range(2 * args.claims)]
    ledger.report(
        [
            {"op": "enqueue", "taskId": t, "executionId": e, "queue": "bench_py"}
            for t, e in tasks
        ]
    )
    client_ms, bare_ms = [], []
    for task_id, execution in tasks[: args.claims]:
        started = time.perf_counter()
        outcome = ledger.claim(task_id, execution, worker="bench")
        client_ms.append((time.perf_counter() - started) * 1000)
        assert outcome.accepted, outcome
    url = urllib.parse.urlsplit(ledger.url)
    connection = http.client.HTTPConnection(url.hostname, url.port)
    for task_id, execution in tasks[args.claims :]:
        body = json.dumps(
            {
                "op": "claim",
                "taskId": task_id,
                "executionId": execution,
                "worker": "bench",
                "at": "2026-12-01T10:00:00.000Z",
            }
        ).encode()
        started = time.perf_counter()
        connection.request(
            "POST", "/v1/reports", body, {"Content-Type": "application/json"}
        )
        answer = connection.getresponse().read()
        bare_ms.append((time.perf_counter() - started) * 1000)
        assert b'"accepted"' in answer, answer
    # The client's own CPU per report, no I/O: build the report (at, reportId), encode it, decode
    # and map an answer: what the client adds to any round trip.
    answer = json.dumps(
        {
            "line": 1,
            "outcome": "accepted",
            "duplicate": False,
            "eventIds": [str(uuid.uuid4())],
        }
    ).encode()
    rounds = 20000
    started = time.perf_counter()
    for i in range(rounds):
        body = Ledger.prepare(
            {
                "op": "claim",
                "taskId": f"bench_py:{i}",
                "executionId": tasks[0][1],
                "worker": "bench",
                "redelivered": False,
            }
        )
        json.dumps(body, separators=(",", ":")).encode()
        _outcome(body, json.loads(answer))
    cpu_us = (time.perf_counter() - started) / rounds * 1e6
    print(
        json.dumps(
            {
                "client": "python",
                "claims": args.claims,
                "client_p50_ms": round(percentile(client_ms, 50), 3),
                "client_p99_ms": round(percentile(client_ms, 99), 3),
                "bare_p50_ms": round(percentile(bare_ms, 50), 3),
                "bare_p99_ms": round(percentile(bare_ms, 99), 3),
                "overhead_p50_ms": round(
                    statistics.median(client_ms) - statistics.median(bare_ms), 3
                ),
                "client_cpu_us_per_report": round(cpu_us, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
