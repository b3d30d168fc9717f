"""Celery integration: `instrument(app)` makes a Celery app report every task's lifecycle.

It hooks Celery's own signals (connected with `weak=False`, once per app, and again in every pool
child on `worker_process_init`):

| Celery                                   | report                                          |
|------------------------------------------|-------------------------------------------------|
| `before_task_publish` (`retries` == 0)   | `enqueue`, awaited before the message is sent   |
| `before_task_publish` (`retries` > 0)    | a `Task.retry()` re-publish: no enqueue; the    |
|                                          | failure that caused it is reported (`fail`) now, |
|                                          | before the retry can be delivered               |
| `task_prerun`                            | `claim` (`redelivered` from the message's       |
|                                          | `delivery_info`, e.g. an acks_late redelivery)  |
| refused claim                            | the task is skipped (`Ignore`), configurable    |
| `task_success`                           | `succeed`                                       |
| `task_retry`                             | `fail` (same execution; same reportId as above) |
| `task_failure` (incl. `WorkerLostError`) | `fail`                                          |
| `task_revoked`                           | `fail` ("revoked: …") then `archive`            |

Identity: the executionId is Celery's task id (a UUID, kept by retries and redeliveries). The
taskId is `task_id(name, args, kwargs)` when given, else `{queue}:{name}:{args[0]}` (`{queue}` is
`instrument(queue=…)`, else the routing key the message is published with, else the app's default
queue; without positional arguments the first keyword argument's value, without any the Celery
task id). The producer puts it in the message header `taskledger_task_id`, so workers use the
very same taskId.

Eager mode (`task_always_eager`, `Task.apply`) publishes nothing, so no publish signal fires: the
enqueue is reported at `task_prerun` instead, just before the claim.

The claim gate is the app's base task class's `before_start` (Celery >= 5.2), the one place
where raising `Ignore` skips a task: signal handlers cannot, Celery logs what they raise. Tasks
with their own `base=` class that does not derive from `app.Task` can mix in `ClaimGate`.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Optional

from celery import signals
from celery.exceptions import Ignore, Reject

from taskledger.client import Ledger, LedgerError, LedgerUnavailable, Outcome, error_body

__all__ = ["ClaimGate", "Instrumentation", "default_task_id", "instrument"]

log = logging.getLogger("taskledger.celery")

TaskIdFn = Callable[[str, Sequence[Any], Mapping[str, Any]], str]

#: The message header carrying the taskId from the producer to the workers.
TASK_ID_HEADER = "taskledger_task_id"
#: Namespace of the integration's own report ids (see `_report_id`).
_NAMESPACE = uuid.UUID("3c0f6f1e-9a2b-5b7e-8d41-2f6a1c9e0b37")


def default_task_id(
    queue: str, name: str, args: Sequence[Any], kwargs: Mapping[str, Any], celery_id: str
) -> str:
    """`{queue}:{name}:{first argument}` (see the module's doc)."""
    if args:
        key = str(args[0])
    elif kwargs:
        key = str(next(iter(kwargs.values())))
    else:
        key = celery_id
    return f"{queue}:{name}:{key}"


def _report_id(*parts: Any) -> str:
    """A report id both sides of one fact compute alike (the fail reported at the retry's
    publish and again at `task_retry`): uuid5 over the parts joined by '|'."""
    return str(uuid.uuid5(_NAMESPACE, "|".join(str(p) for p in parts)))


# Every instrumented app of this process, in instrumentation order.
_INSTRUMENTATIONS: list[Instrumentation] = []


class Instrumentation:
    """What `instrument` connected; `disconnect()` undoes it (tests, reloads)."""

    def __init__(
        self,
        app: Any,
        ledger: Ledger,
        task_id: Optional[TaskIdFn],
        queue: Optional[str],
        on_refused: str,
        on_unavailable: str,
        include: Callable[[str], bool],
    ) -> None:
        if on_refused not in ("skip", "run"):
            raise ValueError("on_refused must be 'skip' or 'run'")
        if on_unavailable not in ("requeue", "run", "raise"):
            raise ValueError("on_unavailable must be 'requeue', 'run' or 'raise'")
        self.app = app
        self.ledger = ledger
        self.task_id_fn = task_id
        self.queue = queue
        self.on_refused = on_refused
        self.on_unavailable = on_unavailable
        self.include = include
        self._uid = f"taskledger-{id(app)}"
        #: The last claim outcome of this process (tests, debugging).
        self.last_claim: Optional[Outcome] = None

    # -- identity ----------------------------------------------------------------------------

    def _queue_name(self, routing_key: Optional[str]) -> str:
        return self.queue or routing_key or self.app.conf.task_default_queue or "celery"

    def compute_task_id(
        self,
        name: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        celery_id: str,
        routing_key: Optional[str],
    ) -> str:
        if self.task_id_fn is not None:
            return self.task_id_fn(name, args, kwargs)
        return default_task_id(self._queue_name(routing_key), name, args, kwargs, celery_id)

    def _request_task_id(self, task: Any, request: Any) -> str:
        value = getattr(request, TASK_ID_HEADER, None)
        if not value:
            headers = getattr(request, "headers", None) or {}
            value = headers.get(TASK_ID_HEADER) if isinstance(headers, Mapping) else None
        if value:
            return str(value)
        delivery = getattr(request, "delivery_info", None) or {}
        return self.compute_task_id(
            task.name,
            request.args or (),
            request.kwargs or {},
            request.id,
            delivery.get("routing_key"),
        )

    def _worker(self, request: Any) -> str:
        host = getattr(request, "hostname", None) or socket.gethostname()
        return f"{host}:{os.getpid()}"

    # -- whose signal ------------------------------------------------------------------
    # Celery's signals are process-wide: with two instrumented apps in one process, each task's
    # signals must be reported by its own app's instrumentation only, and once.

    def _mine(self, task: Any) -> bool:
        return getattr(task, "app", None) is self.app and self.include(task.name)

    def _publishes(self, name: str) -> bool:
        """The publish signal names only the task: it is this app's when this app has the task,
        or when no instrumented app has it and this one was instrumented first."""
        owners = [i for i in _INSTRUMENTATIONS if name in i.app.tasks]
        if owners:
            return owners[0] is self
        return bool(_INSTRUMENTATIONS) and _INSTRUMENTATIONS[0] is self

    # -- the signal handlers --------------------------------------------------------------

    def on_before_publish(
        self,
        sender: Any = None,
        body: Any = None,
        exchange: Any = None,
        routing_key: Any = None,
        headers: Any = None,
        **_: Any,
    ) -> None:
        name = str(sender or (headers or {}).get("task") or "")
        if not name or not self.include(name) or not self._publishes(name):
            return
        headers = headers if headers is not None else {}
        if "id" in headers:  # task message protocol 2
            celery_id = headers["id"]
            retries = int(headers.get("retries") or 0)
            args, kwargs = (body[0], body[1]) if isinstance(body, (list, tuple)) else ((), {})
        else:  # protocol 1: everything in the body
            celery_id = body.get("id")
            retries = int(body.get("retries") or 0)
            args, kwargs = body.get("args") or (), body.get("kwargs") or {}
        if retries > 0:
            self._report_retry_failure(name, celery_id, retries, headers)
            return
        task_id = self.compute_task_id(name, args, kwargs, celery_id, routing_key)
        headers[TASK_ID_HEADER] = task_id
        task = self.app.tasks.get(name)
        max_retries = getattr(task, "max_retries", None)
        metadata: dict[str, Any] = {"celeryTask": name}
        if headers.get("eta"):
            metadata["eta"] = str(headers["eta"])
        try:
            outcome = self.ledger.enqueue(
                task_id,
                celery_id,
                queue=self._queue_name(routing_key),
                max_retries=max_retries if isinstance(max_retries, int) else None,
                metadata=metadata,
                report_id=_report_id("enqueue", task_id, celery_id),
            )
        except LedgerError:
            # Celery logs what a publish signal raises and publishes anyway; this message's
            # claim will then be refused (unknownExecution) and the task skipped. The client
            # has retried for `retry_total_s` before giving up.
            log.exception("taskledger: enqueue of %s[%s] not recorded", name, celery_id)
            return
        if not outcome.accepted:
            log.info(
                "taskledger: enqueue of %s[%s] %s: %s", name, celery_id, outcome.reason, outcome.raw
            )

    def _report_retry_failure(
        self, name: str, celery_id: str, retries: int, headers: Mapping[str, Any]
    ) -> None:
        # Task.retry() publishes the next attempt before Celery fires task_retry; report the
        # failure first so the next attempt's claim finds the execution `failed`, not
        # `processing`. Only where the retrying task is the one running here.
        current = self.app.current_worker_task
        if current is None or current.request.id != celery_id:
            return
        request = current.request
        task_id = self._request_task_id(current, request)
        error = sys.exc_info()[1]
        self._fail(
            task_id,
            celery_id,
            error if error is not None else "retry",
            request,
            _report_id("fail", task_id, celery_id, retries - 1),
        )
        if isinstance(headers, dict):
            headers[TASK_ID_HEADER] = task_id

    def on_prerun(
        self, sender: Any = None, task_id: Any = None, task: Any = None, **_: Any
    ) -> None:
        task = task or sender
        if task is None or not self._mine(task):
            return
        request = task.request
        ledger_task_id = self._request_task_id(task, request)
        request.taskledger_task_id = ledger_task_id
        delivery = getattr(request, "delivery_info", None) or {}
        redelivered = bool(delivery.get("redelivered"))
        try:
            if getattr(request, "is_eager", False):
                self.ledger.enqueue(
                    ledger_task_id,
                    request.id,
                    queue=self._queue_name(delivery.get("routing_key")),
                    report_id=_report_id("enqueue", ledger_task_id, request.id),
                )
            outcome = self.ledger.claim(
                ledger_task_id, request.id, worker=self._worker(request), redelivered=redelivered
            )
        except LedgerUnavailable:
            log.exception("taskledger: claim of %s[%s] not recorded", task.name, request.id)
            request.taskledger_gate = self.on_unavailable
            return
        except LedgerError:
            # Refused input (a taskId the ledger does not accept, a token without the reporter
            # role): requeueing cannot help, so the task runs and the error is logged.
            log.exception("taskledger: claim of %s[%s] refused as input", task.name, request.id)
            request.taskledger_gate = "run"
            return
        self.last_claim = outcome
        request.taskledger_claim = outcome
        if not outcome.accepted:
            log.warning(
                "taskledger: claim of %s[%s] refused (%s); %s",
                task.name,
                request.id,
                outcome.reason,
                "skipping it" if self.on_refused == "skip" else "running",
            )
            request.taskledger_gate = "skip" if self.on_refused == "skip" else "run"
        else:
            request.taskledger_gate = "run"

    def gate(self, task: Any) -> None:
        """Called from `before_start`: skip (`Ignore`) or requeue (`Reject`) as decided."""
        decision = getattr(task.request, "taskledger_gate", "run")
        if decision == "skip":
            raise Ignore()
        if decision == "requeue":
            raise Reject("taskledger unavailable", requeue=True)
        if decision == "raise":
            raise LedgerUnavailable("claim not recorded", 0, None)

    def on_success(self, sender: Any = None, **_: Any) -> None:
        if sender is None or not self._mine(sender):
            return
        request = sender.request
        self._call(
            self.ledger.succeed,
            self._request_task_id(sender, request),
            request.id,
            worker=self._worker(request),
        )

    def on_retry(
        self, sender: Any = None, request: Any = None, reason: Any = None, **_: Any
    ) -> None:
        if sender is None or not self._mine(sender) or request is None:
            return
        task_id = self._request_task_id(sender, request)
        retries = int(getattr(request, "retries", 0) or 0)
        error = reason if reason is not None else "retry"
        self._fail(
            task_id, request.id, error, request, _report_id("fail", task_id, request.id, retries)
        )

    def on_failure(
        self,
        sender: Any = None,
        task_id: Any = None,
        exception: Any = None,
        einfo: Any = None,
        **_: Any,
    ) -> None:
        if sender is None or not self._mine(sender):
            return
        request = sender.request
        celery_id = task_id or request.id
        ledger_task_id = self._request_task_id(sender, request)
        retries = int(getattr(request, "retries", 0) or 0)
        stack = str(einfo.traceback) if einfo is not None and einfo.traceback else None
        self._call(
            self.ledger.fail,
            ledger_task_id,
            celery_id,
            error_body(exception if exception is not None else "failure", stack=stack),
            worker=self._worker(request),
            report_id=_report_id("fail", ledger_task_id, celery_id, retries, "final"),
        )

    def on_revoked(
        self,
        sender: Any = None,
        request: Any = None,
        terminated: Any = None,
        signum: Any = None,
        expired: Any = None,
        **_: Any,
    ) -> None:
        # Sent in the worker's main process, with the task as sender and the request's Context.
        if sender is None or request is None or not self._mine(sender):
            return
        ledger_task_id = self._request_task_id(sender, request)
        why = "expired" if expired else ("terminated" if terminated else "revoked")
        self._call(
            self.ledger.fail,
            ledger_task_id,
            request.id,
            {"message": f"revoked: Celery {why} the task", "category": "revoked"},
            report_id=_report_id("fail", ledger_task_id, request.id, "revoked"),
        )
        self._call(
            self.ledger.archive,
            ledger_task_id,
            request.id,
            reason=f"celery: {why}",
            by="celery",
            report_id=_report_id("archive", ledger_task_id, request.id, "revoked"),
        )

    def on_worker_process_init(self, **_: Any) -> None:
        # A pool child: connections were dropped at the fork (client.py); connect the handlers
        # again in case the pool did not fork from an instrumented parent (idempotent).
        self.connect()

    # -- plumbing ------------------------------------------------------------------------

    def _fail(self, task_id: str, celery_id: str, error: Any, request: Any, report_id: str) -> None:
        self._call(
            self.ledger.fail,
            task_id,
            celery_id,
            error_body(error),
            worker=self._worker(request),
            report_id=report_id,
        )

    def _call(self, method: Callable[..., Outcome], *args: Any, **kwargs: Any) -> None:
        # Outcome reports must never crash a worker: the client already retried for
        # `retry_total_s`; what is left is logged.
        try:
            outcome = method(*args, **kwargs)
        except LedgerError:
            log.exception("taskledger: %s report not recorded", method.__name__)
            return
        if not outcome.accepted:
            log.info("taskledger: %s of %s %s", outcome.op, outcome.task_id, outcome.reason)

    def _handlers(self) -> list[tuple[Any, Callable[..., Any]]]:
        return [
            (signals.before_task_publish, self.on_before_publish),
            (signals.task_prerun, self.on_prerun),
            (signals.task_success, self.on_success),
            (signals.task_retry, self.on_retry),
            (signals.task_failure, self.on_failure),
            (signals.task_revoked, self.on_revoked),
            (signals.worker_process_init, self.on_worker_process_init),
        ]

    def connect(self) -> None:
        for signal, handler in self._handlers():
            signal.connect(handler, weak=False, dispatch_uid=f"{self._uid}-{handler.__name__}")

    def disconnect(self) -> None:
        for signal, handler in self._handlers():
            signal.disconnect(handler, dispatch_uid=f"{self._uid}-{handler.__name__}")
        if self in _INSTRUMENTATIONS:
            _INSTRUMENTATIONS.remove(self)
        if getattr(self.app, "_taskledger", None) is self:
            del self.app._taskledger


class ClaimGate:
    """Mix into a custom task base class (`class MyTask(ClaimGate, Task)`) whose `before_start`
    would otherwise hide the app's gate."""

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        instrumentation = getattr(self.app, "_taskledger", None)  # type: ignore[attr-defined]
        if instrumentation is not None:
            instrumentation.gate(self)
        parent = super()
        if hasattr(parent, "before_start"):
            parent.before_start(task_id, args, kwargs)  # type: ignore[misc]


def instrument(
    app: Any,
    ledger: Optional[Ledger] = None,
    task_id: Optional[TaskIdFn] = None,
    queue: Optional[str] = None,
    *,
    on_refused: str = "skip",
    on_unavailable: str = "requeue",
    include: Optional[Callable[[str], bool]] = None,
) -> Instrumentation:
    """Instrument `app`. `ledger` defaults to `Ledger()` (TASKLEDGER_URL / TASKLEDGER_TOKEN).

    - `task_id(name, args, kwargs) -> str`: the business identity (default: module doc).
    - `queue`: the ledger's queue name for every task (default: the routing key).
    - `on_refused`: "skip" (default: a refused claim skips the task, `Ignore`) or "run".
    - `on_unavailable` (the claim could not be recorded within the client's retry budget):
      "requeue" (default, `Reject(requeue=True)`), "run", or "raise" (the task fails).
    - `include(name) -> bool`: which tasks to report (default: all but Celery's own `celery.*`).

    Call it where the app is defined (producers and workers import it alike). Idempotent.
    """
    existing = getattr(app, "_taskledger", None)
    if existing is not None:
        return existing
    instrumentation = Instrumentation(
        app,
        ledger or Ledger(),
        task_id,
        queue,
        on_refused,
        on_unavailable,
        include or (lambda name: not name.startswith("celery.")),
    )
    app._taskledger = instrumentation
    _INSTRUMENTATIONS.append(instrumentation)
    instrumentation.connect()
    _install_gate(app)
    return instrumentation


def _install_gate(app: Any) -> None:
    base = app.Task
    previous = base.__dict__.get("before_start")

    def before_start(self: Any, task_id: str, args: Any, kwargs: Any) -> None:
        instrumentation = getattr(self.app, "_taskledger", None)
        if instrumentation is not None:
            instrumentation.gate(self)
        if previous is not None:
            previous(self, task_id, args, kwargs)

    before_start.__module__ = __name__  # counts as a custom before_start for Celery's tracer
    base.before_start = before_start
