"""The HTTP client: one `Ledger` per process (or per app), safe to share between threads.

Every report carries a `reportId`. When the caller gives none it is derived from the report
itself (see `report_id_for`), computed once per call, so every network retry of that call sends
the same id and the ledger appends it at most once (SPEC section 2). Transient failures
(connection errors, timeouts, HTTP 5xx, 429) are retried with exponential backoff and full jitter
until `retry_total_s` is spent; then `LedgerUnavailable` is raised. A 4xx other than 408/429 is
the ledger refusing the input: `LedgerRefused`, never retried.

No background threads. Connections are kept alive per thread and dropped in a forked child
(`os.register_at_fork`), so prefork pools (Celery, gunicorn) never share a socket with their parent.
"""

from __future__ import annotations

import datetime as _dt
import http.client
import json
import os
import random
import socket
import threading
import time
import traceback
import urllib.parse
import uuid
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Optional, Union

__all__ = [
    "REPORT_ID_NAMESPACE",
    "Ledger",
    "LedgerError",
    "LedgerRefused",
    "LedgerUnavailable",
    "Outcome",
    "report_id_for",
]

#: The uuid5 namespace of derived report ids: `uuid5(REPORT_ID_NAMESPACE, canonical_json)`.
REPORT_ID_NAMESPACE = uuid.UUID("6f1b8a52-2c1e-5d59-9a43-7c1d2f0e9b11")

#: Reports in one POST at most (the server's default `batch_reports_max` is 10,000; a smaller
#: chunk keeps one request's latency and memory small).
BATCH_REPORTS_MAX = 1000
#: A single backoff sleep at most, whatever the attempt number.
BACKOFF_MAX_S = 2.0
#: The first backoff's ceiling; doubled on each attempt (full jitter: sleep uniform in [0, cap]).
BACKOFF_INITIAL_S = 0.05
#: Bytes of an error message / stack sent at most (the ledger's limits are 16 KiB / 128 KiB).
ERROR_MESSAGE_CHARS_MAX = 4000
ERROR_STACK_CHARS_MAX = 32000

ErrorLike = Union[str, BaseException, Mapping[str, Any]]


class LedgerError(Exception):
    """Base of the client's exceptions."""


class LedgerRefused(LedgerError):
    """The ledger refused the request (HTTP 4xx): bad input, a missing or unknown token, too large.

    Retrying the same request cannot succeed. `code`, `message` and `place` are the server's
    (`{"error":{"code","message","place":{"line","field"}}}`).
    """

    def __init__(
        self, status: int, code: str, message: str, place: Optional[dict[str, Any]] = None
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.place = place or {}
        where = ""
        if self.place:
            where = " (" + ", ".join(f"{k} {v}" for k, v in sorted(self.place.items())) + ")"
        super().__init__(f"ledger refused the request: HTTP {status} {code}: {message}{where}")


class LedgerUnavailable(LedgerError):
    """The ledger could not be reached (or kept answering 5xx/429) within the retry budget."""

    def __init__(self, message: str, attempts: int, last_error: Optional[BaseException]) -> None:
        self.attempts = attempts
        self.last_error = last_error
        super().__init__(f"{message} after {attempts} attempt(s): {last_error!r}")


@dataclass(frozen=True)
class Outcome:
    """The ledger's decision on one report.

    `outcome` is "accepted" or "rejected"; `reason` names the rejection (`duplicateEnqueue`,
    `notClaimable`, `unknownExecution`, `invalidTransition`); `duplicate` is true when the ledger
    had this report already (same reportId) and answers with the first outcome.
    """

    accepted: bool
    outcome: str
    reason: Optional[str]
    duplicate: bool
    event_ids: list[str]
    report_id: str
    op: str
    task_id: str
    execution_id: Optional[str]
    #: The server's whole answer for this report (e.g. `status` of a `notClaimable`).
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> Optional[str]:
        """The execution's status a rejection names (`notClaimable`, `invalidTransition`)."""
        value = self.raw.get("status")
        return value if isinstance(value, str) else None

    def __bool__(self) -> bool:
        return self.accepted


def now_rfc3339() -> str:
    """The current UTC instant with milliseconds, as the ledger writes them."""
    moment = _dt.datetime.now(_dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def report_id_for(report: Mapping[str, Any]) -> str:
    """The deterministic reportId of a report: uuid5 over its canonical JSON (keys sorted, no
    spaces), the `reportId` field itself left out. The same report (same op, taskId,
    executionId, `at`, …) always gets the same id."""
    body = {k: v for k, v in report.items() if k != "reportId"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return str(uuid.uuid5(REPORT_ID_NAMESPACE, canonical))


def error_body(error: ErrorLike, category: Optional[str] = None, stack: Optional[str] = None):
    """`{"message","category","stack"}` from a string, an exception or a mapping."""
    if isinstance(error, BaseException):
        message = f"{type(error).__name__}: {error}"
        if stack is None and error.__traceback__ is not None:
            stack = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        body: dict[str, Any] = {"message": message}
    elif isinstance(error, Mapping):
        body = dict(error)
    else:
        body = {"message": str(error)}
    body["message"] = str(body.get("message") or "error")[:ERROR_MESSAGE_CHARS_MAX]
    if category is not None:
        body["category"] = category
    if stack is not None:
        body["stack"] = stack[-ERROR_STACK_CHARS_MAX:]
    return body


class _Transient(Exception):
    """A retryable answer (5xx, 429, 408), with the server's Retry-After when it gave one."""

    def __init__(self, status: int, body: bytes, retry_after_s: Optional[float]) -> None:
        self.status = status
        self.retry_after_s = retry_after_s
        super().__init__(f"HTTP {status}: {body[:200]!r}")


_CONNECTION_ERRORS = (OSError, http.client.HTTPException)  # socket.timeout is an OSError

# Every live Ledger, so a forked child can drop the connections it inherited.
_LEDGERS: weakref.WeakSet[Ledger] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for ledger in list(_LEDGERS):
        ledger._forget_connections()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Ledger:
    """A taskledger service.

    `url` defaults to `TASKLEDGER_URL` (else `http://127.0.0.1:7070`), `token` to
    `TASKLEDGER_TOKEN` (sent as a bearer token), `timeout` is per HTTP request (seconds) and
    `retry_total_s` bounds all attempts of one call (`TASKLEDGER_RETRY_TOTAL_S`, default 30).
    `worker` names this process in claims (default `hostname:pid`, recomputed after a fork).
    """

    def __init__(
        self,
        url: Optional[str] = None,
        token: Optional[str] = None,
        timeout: float = 10.0,
        retry_total_s: Optional[float] = None,
        worker: Optional[str] = None,
    ) -> None:
        url = url or os.environ.get("TASKLEDGER_URL") or "http://127.0.0.1:7070"
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"taskledger url must be http(s)://host[:port], not {url!r}")
        self.url = url.rstrip("/")
        self._scheme = parsed.scheme
        self._host = parsed.hostname
        self._port = parsed.port or (443 if parsed.scheme == "https" else 80)
        self._base_path = parsed.path.rstrip("/")
        self.token = token if token is not None else os.environ.get("TASKLEDGER_TOKEN") or None
        self.timeout = timeout
        if retry_total_s is None:
            retry_total_s = float(os.environ.get("TASKLEDGER_RETRY_TOTAL_S", "30"))
        self.retry_total_s = retry_total_s
        self._worker = worker
        self._local = threading.local()
        self._random = random.Random()
        #: Attempts beyond the first, over this object's life (like posthog's retry counts).
        self.retries = 0
        self._retries_lock = threading.Lock()
        _LEDGERS.add(self)

    # -- the reports -----------------------------------------------------------------------

    @property
    def worker(self) -> str:
        return self._worker or f"{socket.gethostname()}:{os.getpid()}"

    def enqueue(
        self,
        task_id: str,
        execution_id: Optional[str] = None,
        *,
        queue: Optional[str] = None,
        max_retries: Optional[int] = None,
        message_version: Optional[str] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        at: Optional[str] = None,
        report_id: Optional[str] = None,
        **extra: Any,
    ) -> Outcome:
        """A new execution (a fresh UUID when `execution_id` is None; it is in the outcome).
        `queue` defaults to the taskId's prefix before the first ':'."""
        report = {
            "op": "enqueue",
            "taskId": task_id,
            "executionId": execution_id or str(uuid.uuid4()),
            "queue": queue or task_id.split(":", 1)[0],
            "maxRetries": max_retries,
            "messageVersion": message_version,
            "metadata": dict(metadata) if metadata is not None else None,
            **extra,
        }
        return self._one(report, at, report_id)

    def claim(
        self,
        task_id: str,
        execution_id: str,
        *,
        worker: Optional[str] = None,
        redelivered: bool = False,
        at: Optional[str] = None,
        report_id: Optional[str] = None,
        **extra: Any,
    ) -> Outcome:
        """The idempotency gate: process the task only when `.accepted` is true."""
        report = {
            "op": "claim",
            "taskId": task_id,
            "executionId": execution_id,
            "worker": worker or self.worker,
            "redelivered": bool(redelivered),
            **extra,
        }
        return self._one(report, at, report_id)

    def succeed(
        self,
        task_id: str,
        execution_id: str,
        *,
        worker: Optional[str] = None,
        at: Optional[str] = None,
        report_id: Optional[str] = None,
        **extra: Any,
    ) -> Outcome:
        report = {
            "op": "succeed",
            "taskId": task_id,
            "executionId": execution_id,
            "worker": worker,
            **extra,
        }
        return self._one(report, at, report_id)

    def fail(
        self,
        task_id: str,
        execution_id: str,
        error: ErrorLike,
        *,
        category: Optional[str] = None,
        stack: Optional[str] = None,
        worker: Optional[str] = None,
        at: Optional[str] = None,
        report_id: Optional[str] = None,
        **extra: Any,
    ) -> Outcome:
        """`error` is a message, an exception (message `Type: text`, its traceback as the
        stack) or a `{"message","category","stack"}` mapping."""
        report = {
            "op": "fail",
            "taskId": task_id,
            "executionId": execution_id,
            "error": error_body(error, category, stack),
            "worker": worker,
            **extra,
        }
        return self._one(report, at, report_id)

    def archive(
        self,
        task_id: str,
        execution_id: str,
        *,
        reason: Optional[str] = None,
        by: Optional[str] = None,
        at: Optional[str] = None,
        report_id: Optional[str] = None,
        **extra: Any,
    ) -> Outcome:
        report = {
            "op": "archive",
            "taskId": task_id,
            "executionId": execution_id,
            "reason": reason,
            "by": by,
            **extra,
        }
        return self._one(report, at, report_id)

    def retry(
        self,
        task_id: str,
        execution_id: Optional[str] = None,
        *,
        by: Optional[str] = None,
        reason: Optional[str] = None,
        queue: Optional[str] = None,
        max_retries: Optional[int] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        at: Optional[str] = None,
        report_id: Optional[str] = None,
        **extra: Any,
    ) -> Outcome:
        """A manual retry: a new execution (fresh UUID unless given) in the task's stream."""
        report = {
            "op": "retry",
            "taskId": task_id,
            "executionId": execution_id or str(uuid.uuid4()),
            "by": by,
            "reason": reason,
            "queue": queue,
            "maxRetries": max_retries,
            "metadata": dict(metadata) if metadata is not None else None,
            **extra,
        }
        return self._one(report, at, report_id)

    def report(self, reports: Iterable[Mapping[str, Any]]) -> list[Outcome]:
        """A batch of reports (dicts in the SPEC's camelCase shape), decided in order. Each gets
        `at` (now) and `reportId` (derived) when it has none. Sent in chunks of
        `BATCH_REPORTS_MAX`; one outcome per report, in order."""
        prepared = [self.prepare(r) for r in reports]
        outcomes: list[Outcome] = []
        for start in range(0, len(prepared), BATCH_REPORTS_MAX):
            chunk = prepared[start : start + BATCH_REPORTS_MAX]
            body = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in chunk)
            answer = self._request("POST", "/v1/reports", body.encode(), "application/x-ndjson")
            # A one-line body is answered with one object, a longer one with {"results": [...]}.
            if isinstance(answer, dict) and "outcome" in answer:
                answer = {"results": [answer]}
            results = answer.get("results") if isinstance(answer, dict) else None
            if not isinstance(results, list) or len(results) != len(chunk):
                raise LedgerError(f"unexpected answer to a batch of {len(chunk)}: {answer!r}")
            outcomes.extend(_outcome(r, res) for r, res in zip(chunk, results))
        return outcomes

    @staticmethod
    def prepare(
        report: Mapping[str, Any], at: Optional[str] = None, report_id: Optional[str] = None
    ) -> dict[str, Any]:
        """The report as sent: None values dropped, `at` and `reportId` filled in."""
        body = {k: v for k, v in report.items() if v is not None}
        if at is not None:
            body["at"] = at
        body.setdefault("at", now_rfc3339())
        if report_id is not None:
            body["reportId"] = report_id
        if "reportId" not in body:
            body["reportId"] = report_id_for(body)
        return body

    # -- reads (handy for tests and tools) --------------------------------------------------

    def task(self, task_id: str) -> Optional[dict[str, Any]]:
        """`GET /v1/tasks/{taskId}`, or None when the ledger has never seen it."""
        return self._get(f"/v1/tasks/{urllib.parse.quote(task_id, safe=':')}")

    def chain(self, task_id: str) -> Optional[dict[str, Any]]:
        return self._get(f"/v1/tasks/{urllib.parse.quote(task_id, safe=':')}/chain")

    def history(self, task_id: str) -> Optional[list[Any]]:
        return self._get(f"/v1/tasks/{urllib.parse.quote(task_id, safe=':')}/history")

    # -- the transport ----------------------------------------------------------------------

    def _one(self, report: dict[str, Any], at: Optional[str], report_id: Optional[str]) -> Outcome:
        body = self.prepare(report, at, report_id)
        answer = self._request(
            "POST",
            "/v1/reports",
            json.dumps(body, separators=(",", ":")).encode(),
            "application/json",
        )
        if not isinstance(answer, dict) or "outcome" not in answer:
            raise LedgerError(f"unexpected answer to a report: {answer!r}")
        return _outcome(body, answer)

    def _get(self, path: str) -> Any:
        try:
            return self._request("GET", path, None, None)
        except LedgerRefused as refused:
            if refused.status == 404:
                return None
            raise

    def _forget_connections(self) -> None:
        # After a fork: the inherited sockets belong to the parent. Dropping the references only
        # closes the child's copies of the descriptors; the parent's connections live on.
        self._local = threading.local()
        self._random = random.Random()
        self._retries_lock = threading.Lock()

    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            if self._scheme == "https":
                connection = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self.timeout
                )
            else:
                connection = http.client.HTTPConnection(
                    self._host, self._port, timeout=self.timeout
                )
            self._local.connection = connection
        return connection

    def _drop_connection(self) -> None:
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            connection.close()

    def _attempt(
        self, method: str, path: str, body: Optional[bytes], content_type: Optional[str]
    ) -> Any:
        headers = {"Accept": "application/json", "User-Agent": "taskledger-python/0.1"}
        if content_type:
            headers["Content-Type"] = content_type
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        connection = self._connection()
        try:
            connection.request(method, self._base_path + path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
        except _CONNECTION_ERRORS:
            self._drop_connection()
            raise
        if response.will_close:
            self._drop_connection()
        status = response.status
        if status in (408, 429) or status >= 500:
            self._drop_connection()
            raise _Transient(status, data, _retry_after(response.getheader("Retry-After")))
        try:
            answer = json.loads(data) if data else None
        except ValueError as error:
            if status >= 400:
                raise LedgerRefused(
                    status, "http_error", data[:500].decode(errors="replace")
                ) from error
            raise LedgerError(f"the ledger answered HTTP {status} with no JSON") from error
        if status >= 400:
            problem = answer.get("error", {}) if isinstance(answer, dict) else {}
            raise LedgerRefused(
                status,
                str(problem.get("code", "http_error")),
                str(problem.get("message", "")),
                problem.get("place"),
            )
        return answer

    def _request(
        self, method: str, path: str, body: Optional[bytes], content_type: Optional[str]
    ) -> Any:
        deadline = time.monotonic() + self.retry_total_s
        attempts = 0
        stale_retry_left = True
        while True:
            attempts += 1
            reused = getattr(self._local, "connection", None) is not None
            # No attempt outlives the budget: its timeout is what is left of it.
            self._set_timeout(min(self.timeout, max(0.05, deadline - time.monotonic())))
            try:
                return self._attempt(method, path, body, content_type)
            except (_Transient, *_CONNECTION_ERRORS) as error:
                last_error: BaseException = error
                retry_after = error.retry_after_s if isinstance(error, _Transient) else None
                if reused and stale_retry_left and not isinstance(error, _Transient):
                    # A kept-alive connection the server closed meanwhile: try a fresh one now.
                    stale_retry_left = False
                    self._count_retry()
                    continue
            cap = min(BACKOFF_MAX_S, BACKOFF_INITIAL_S * (2 ** min(attempts - 1, 16)))
            sleep_s = self._random.uniform(0, cap)
            if retry_after is not None:
                sleep_s = max(sleep_s, retry_after)
            if time.monotonic() + sleep_s > deadline:
                raise LedgerUnavailable(
                    f"taskledger at {self.url} unavailable for {self.retry_total_s:g} s",
                    attempts,
                    last_error,
                )
            time.sleep(sleep_s)
            self._count_retry()

    def _count_retry(self) -> None:
        with self._retries_lock:
            self.retries += 1

    def _set_timeout(self, timeout_s: float) -> None:
        connection = self._connection()
        connection.timeout = timeout_s
        if connection.sock is not None:
            connection.sock.settimeout(timeout_s)

    def close(self) -> None:
        """Closes this thread's connection (others close when their threads end)."""
        self._drop_connection()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _retry_after(value: Optional[str]) -> Optional[float]:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare from this server; the backoff applies


def _outcome(sent: Mapping[str, Any], answer: Mapping[str, Any]) -> Outcome:
    outcome = str(answer.get("outcome"))
    reason = answer.get("reason")
    return Outcome(
        accepted=outcome == "accepted",
        outcome=outcome,
        reason=reason if isinstance(reason, str) else None,
        duplicate=bool(answer.get("duplicate", False)),
        event_ids=[str(e) for e in answer.get("eventIds", [])],
        report_id=str(sent.get("reportId")),
        op=str(sent.get("op")),
        task_id=str(sent.get("taskId")),
        execution_id=sent.get("executionId"),
        raw=dict(answer),
    )
