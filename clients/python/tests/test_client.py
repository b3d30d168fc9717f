"""The client on its own: retries, refusals, reportIds, keep-alive, fork and thread safety,
against a scripted HTTP server in this process, and the outcome mapping against the real ledger."""

from __future__ import annotations

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import LedgerServer

from taskledger import Ledger, LedgerRefused, LedgerUnavailable, report_id_for

EXECUTION = "0b6f0000-0000-4000-8000-000000000001"
ACCEPTED = {"line": 1, "outcome": "accepted", "duplicate": False, "eventIds": ["e1"]}


class Script:
    """Answers in order (status, headers, body); then 200 ACCEPTED. Records every request."""

    def __init__(self, answers=()):
        self.answers = list(answers)
        self.requests: list[tuple[int, dict]] = []  # (client port, body)
        self.authorization: list[str | None] = []
        self.lock = threading.Lock()


@pytest.fixture
def stub():
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with script.lock:
                script.requests.append((self.client_address[1], json.loads(body.splitlines()[0])))
                script.authorization.append(self.headers.get("Authorization"))
                status, headers, answer = (
                    script.answers.pop(0) if script.answers else (200, {}, ACCEPTED)
                )
            if "X-Delay" in headers:  # a server too slow for the client's timeout
                time.sleep(float(headers.pop("X-Delay")))
            data = json.dumps(answer).encode()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    script.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield script
    server.shutdown()
    server.server_close()


def test_transient_answers_are_retried_with_the_same_report_id(stub):
    stub.answers = [
        (503, {}, {"error": {"code": "internal", "message": "x"}}),
        (429, {"Retry-After": "0.2"}, {}),
        (500, {}, {}),
    ]
    ledger = Ledger(stub.url, token="t0k", retry_total_s=5)
    started = time.monotonic()
    outcome = ledger.claim("q:a", EXECUTION, worker="w1")
    assert stub.authorization == ["Bearer t0k"] * 4
    assert outcome.accepted and outcome.outcome == "accepted" and outcome.event_ids == ["e1"]
    assert len(stub.requests) == 4
    assert time.monotonic() - started >= 0.2  # Retry-After honoured
    ids = {body["reportId"] for _, body in stub.requests}
    assert ids == {outcome.report_id}
    assert ledger.retries == 3


def test_a_timed_out_request_is_retried(stub):
    stub.answers = [(200, {"X-Delay": "1.0"}, ACCEPTED)]
    ledger = Ledger(stub.url, timeout=0.3, retry_total_s=5)
    started = time.monotonic()
    assert ledger.succeed("q:a", EXECUTION).accepted
    assert 0.3 <= time.monotonic() - started < 1.0
    assert len(stub.requests) == 2 and ledger.retries == 1
    assert stub.requests[0][1]["reportId"] == stub.requests[1][1]["reportId"]


def test_refusal_is_not_retried_and_carries_the_servers_error(stub):
    error = {
        "error": {
            "code": "invalid_report",
            "message": "field `at`: is required",
            "place": {"line": 1, "field": "at"},
        }
    }
    stub.answers = [(400, {}, error)]
    with pytest.raises(LedgerRefused) as refused:
        Ledger(stub.url, retry_total_s=5).succeed("q:a", EXECUTION)
    assert refused.value.status == 400 and refused.value.code == "invalid_report"
    assert refused.value.place == {"line": 1, "field": "at"}
    assert "field at" in str(refused.value)
    assert len(stub.requests) == 1


def test_unavailable_after_the_retry_budget():
    ledger = Ledger("http://127.0.0.1:9", retry_total_s=0.8)  # discard port: refused
    started = time.monotonic()
    with pytest.raises(LedgerUnavailable) as unavailable:
        ledger.claim("q:a", EXECUTION)
    elapsed = time.monotonic() - started
    assert elapsed < 0.8 + 0.3, elapsed
    assert unavailable.value.attempts >= 3
    assert isinstance(unavailable.value.last_error, OSError)


def test_report_ids_are_deterministic():
    report = {
        "op": "claim",
        "taskId": "q:a",
        "executionId": EXECUTION,
        "worker": "w",
        "at": "2026-12-01T10:00:00.000Z",
    }
    assert report_id_for(report) == report_id_for(dict(reversed(list(report.items()))))
    assert report_id_for(report) == report_id_for({**report, "reportId": "ignored"})
    assert report_id_for(report) != report_id_for({**report, "at": "2026-12-01T10:00:00.001Z"})
    prepared = Ledger.prepare(report)
    assert prepared["reportId"] == report_id_for(report)
    assert Ledger.prepare(report, report_id="mine")["reportId"] == "mine"


def test_keep_alive_per_thread_and_a_fresh_connection_after_fork(stub):
    ledger = Ledger(stub.url, retry_total_s=5)
    ledger.claim("q:a", EXECUTION, worker="parent")
    ledger.claim("q:a", EXECUTION, worker="parent")
    pid = os.fork()
    if pid == 0:  # the child: must not write on the parent's socket
        code = 1
        try:
            code = 0 if ledger.claim("q:a", EXECUTION, worker="child").accepted else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    ledger.claim("q:a", EXECUTION, worker="parent")  # the parent's connection still works
    ports = {}
    for port, body in stub.requests:
        ports.setdefault(body["worker"], set()).add(port)
    assert len(ports["parent"]) == 1, ports  # one kept-alive connection
    assert ports["child"].isdisjoint(ports["parent"]), ports


def test_threads_share_one_ledger(stub):
    ledger = Ledger(stub.url, retry_total_s=5)
    failures = []

    def work(n):
        try:
            for i in range(20):
                assert ledger.claim(f"q:{n}", EXECUTION, worker=f"t{n}-{i}").accepted
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    assert len(stub.requests) == 160
    assert len({port for port, _ in stub.requests}) == 8  # one connection per thread


def test_outcomes_against_the_real_ledger(ledger_server):
    ledger = Ledger(ledger_server.url, retry_total_s=5)
    enqueued = ledger.enqueue("orders:client-test:1", metadata={"orderId": 1}, max_retries=1)
    assert enqueued.accepted and not enqueued.duplicate and enqueued.execution_id
    execution = enqueued.execution_id
    at = "2026-12-01T10:00:00.000Z"
    first = ledger.claim("orders:client-test:1", execution, worker="w1", at=at)
    again = ledger.claim("orders:client-test:1", execution, worker="w1", at=at)
    assert first.accepted and again.accepted and again.duplicate and not again.event_ids
    refused = ledger.claim("orders:client-test:1", execution, worker="w2")
    assert not refused.accepted and refused.reason == "notClaimable"
    assert refused.status == "processing"
    failed = ledger.fail("orders:client-test:1", execution, ConnectionError("ETIMEDOUT"))
    assert failed.accepted
    batch = ledger.report(
        [
            {
                "op": "claim",
                "taskId": "orders:client-test:1",
                "executionId": execution,
                "worker": "w3",
            },
            {
                "op": "fail",
                "taskId": "orders:client-test:1",
                "executionId": execution,
                "error": {"message": "partner api down"},
            },
            {"op": "succeed", "taskId": "orders:never-seen:1", "executionId": execution},
        ]
    )
    assert [o.outcome for o in batch] == ["accepted", "accepted", "rejected"]
    assert batch[2].reason == "unknownExecution"
    status = ledger.task("orders:client-test:1")
    assert status["status"] == "dlq" and status["retryCount"] == 2
    assert ledger.archive("orders:client-test:1", execution, reason="gone", by="ops").accepted
    retried = ledger.retry("orders:client-test:1", by="ops", reason="partner is back")
    assert retried.accepted and ledger.task("orders:client-test:1")["status"] == "queued"
    assert ledger.task("orders:no-such-task") is None
    with pytest.raises(LedgerRefused) as refusal:
        ledger.claim("orders:client-test:1", "not-a-uuid")
    assert refusal.value.place.get("field") == "executionId"


def test_tokens_and_roles_against_the_real_ledger(tmp_path):
    binary = os.environ.get("TASKLEDGER_BIN")
    if not binary:
        pytest.skip("TASKLEDGER_BIN does not name the taskledger binary (tests/clients.rs sets it)")
    server = LedgerServer(binary, tmp_path, tokens="w1=reporter,dash=reader")
    try:
        assert Ledger(server.url, token="w1").enqueue("orders:tokens:1").accepted
        with pytest.raises(LedgerRefused) as unknown:
            Ledger(server.url, token="nope").enqueue("orders:tokens:2")
        assert unknown.value.status == 401 and unknown.value.code == "unauthorized"
        with pytest.raises(LedgerRefused) as forbidden:
            Ledger(server.url, token="dash").enqueue("orders:tokens:3")
        assert forbidden.value.status == 403 and forbidden.value.code == "forbidden"
        assert Ledger(server.url, token="dash").task("orders:tokens:1")["status"] == "queued"
        # Archive and retry are operators' actions, whatever token a worker holds.
        reporter = Ledger(server.url, token="w1")
        with pytest.raises(LedgerRefused) as not_operator:
            reporter.retry("orders:tokens:1", by="ops@acme")
        assert not_operator.value.status == 403 and not_operator.value.code == "forbidden"
        assert "operator" in str(not_operator.value)
    finally:
        server.stop()
