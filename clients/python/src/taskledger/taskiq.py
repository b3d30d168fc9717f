"""TaskiQ integration: `broker.add_middlewares(LedgerMiddleware())`.

| TaskiQ hook                          | report                                                |
|--------------------------------------|-------------------------------------------------------|
| `pre_send` (no `_retries` label)     | `enqueue`, awaited before the message is sent         |
| `pre_send` (`_retries` > 0)          | a SmartRetryMiddleware retry (same task_id since      |
|                                      | 0.11.19): no enqueue; the failure is reported first   |
| `pre_execute`                        | `claim`; refused → the task is skipped                |
| `on_error`                           | `fail` (same execution; retried or final)             |
| `post_execute` (no error)            | `succeed`                                             |

Identity: the executionId is TaskiQ's task_id (a UUID; TaskiQ's own are 32 hex digits, written
here in the dashed form; a task_id that is not a UUID is mapped to uuid5 of itself). The taskId is
`task_id(name, args, kwargs)` when given, else `{queue}:{name}:{args[0]}` (queue: the broker's
`queue_name`, else "taskiq"; no positional arguments: the first keyword argument's value; none:
the TaskiQ task_id). It travels in the label `taskledger_task_id`.

maxRetries: SmartRetryMiddleware / SimpleRetryMiddleware count the first attempt in
`max_retries` (3 means three attempts), the ledger counts retries, so the enqueue says
`max_retries - 1` for a task that retries on error and 0 for one that does not: the ledger's
`dlq` then falls on the very failure after which TaskiQ stops. Put this middleware after the
retry middleware (`with_middlewares(SmartRetryMiddleware(...), LedgerMiddleware())`): TaskiQ calls
`on_error` in reverse order, so the failure is reported (with its exception) before the retry
is sent; in the other order it is reported at the retry's `pre_send`, with a generic message.

Skipping a refused claim: TaskiQ's `pre_execute` cannot cancel a message, so the middleware
wraps each task's function once (on its first message) with a gate that raises `NoResultError`
when this message's claim was refused (a context variable set in `pre_execute`; thread-pool sync
tasks see it too, process-pool tasks do not). No result is stored and no retry is made.

TaskiQ gives no redelivery flag; to let a redelivered message (e.g. RedisStreamBroker's
`xautoclaim` after a worker died) be reclaimed, configure the queue's `claimLease` in the ledger.

The client is synchronous; every report runs in a thread (`asyncio.to_thread`), never on the
event loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import os
import socket
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Optional

from taskiq import TaskiqMiddleware
from taskiq.exceptions import NoResultError

from taskledger.client import Ledger, LedgerError, Outcome, error_body

__all__ = ["LedgerMiddleware"]

log = logging.getLogger("taskledger.taskiq")

TaskIdFn = Callable[[str, Sequence[Any], Mapping[str, Any]], str]
TASK_ID_LABEL = "taskledger_task_id"
_NAMESPACE = uuid.UUID("a4d2c7e9-1f3b-5c6d-8e9f-0b1a2c3d4e5f")
# True while the message being executed in this context had its claim refused.
_SKIP: contextvars.ContextVar[bool] = contextvars.ContextVar("taskledger_skip", default=False)


def _report_id(*parts: Any) -> str:
    return str(uuid.uuid5(_NAMESPACE, "|".join(str(p) for p in parts)))


def execution_id(task_id: str) -> str:
    """TaskiQ's task_id as the ledger's executionId (see the module's doc)."""
    try:
        return str(uuid.UUID(task_id))
    except ValueError:
        return str(uuid.uuid5(_NAMESPACE, task_id))


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _gated(func: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def gated_async(*args: Any, **kwargs: Any) -> Any:
            if _SKIP.get():
                raise NoResultError()
            return await func(*args, **kwargs)

        gated_async.__taskledger_gated__ = True  # type: ignore[attr-defined]
        return gated_async

    @functools.wraps(func)
    def gated(*args: Any, **kwargs: Any) -> Any:
        if _SKIP.get():
            raise NoResultError()
        return func(*args, **kwargs)

    gated.__taskledger_gated__ = True  # type: ignore[attr-defined]
    return gated


class LedgerMiddleware(TaskiqMiddleware):
    """Reports every TaskiQ task's lifecycle to the ledger (see the module's doc).

    `on_refused`: "skip" (default) or "run"; `on_unavailable` (the claim could not be recorded
    within the client's retry budget): "run" (default) or "skip".
    """

    def __init__(
        self,
        ledger: Optional[Ledger] = None,
        task_id: Optional[TaskIdFn] = None,
        *,
        queue: Optional[str] = None,
        on_refused: str = "skip",
        on_unavailable: str = "run",
    ) -> None:
        super().__init__()
        if on_refused not in ("skip", "run") or on_unavailable not in ("skip", "run"):
            raise ValueError("on_refused / on_unavailable must be 'skip' or 'run'")
        self.ledger = ledger or Ledger()
        self.task_id_fn = task_id
        self.queue = queue
        self.on_refused = on_refused
        self.on_unavailable = on_unavailable

    # -- identity ---------------------------------------------------------------------------

    def _queue_name(self) -> str:
        return self.queue or getattr(self.broker, "queue_name", None) or "taskiq"

    def compute_task_id(
        self, name: str, args: Sequence[Any], kwargs: Mapping[str, Any], taskiq_id: str
    ) -> str:
        if self.task_id_fn is not None:
            return self.task_id_fn(name, args, kwargs)
        if args:
            key = str(args[0])
        elif kwargs:
            key = str(next(iter(kwargs.values())))
        else:
            key = taskiq_id
        return f"{self._queue_name()}:{name}:{key}"

    def _message_task_id(self, message: Any) -> str:
        value = message.labels.get(TASK_ID_LABEL)
        if value:
            return str(value)
        return self.compute_task_id(
            message.task_name, message.args, message.kwargs, message.task_id
        )

    def _max_retries(self, message: Any) -> int:
        """The ledger's maxRetries for this message (retries after the first attempt)."""
        retry = None
        for middleware in getattr(self.broker, "middlewares", []):
            if hasattr(middleware, "default_retry_count") and hasattr(
                middleware, "default_retry_label"
            ):
                retry = middleware
        if retry is None:
            return 0
        label = message.labels.get("retry_on_error")
        retrying = retry.default_retry_label if label is None else _truthy(label)
        if not retrying:
            return 0
        attempts = int(message.labels.get("max_retries", retry.default_retry_count))
        return max(0, attempts - 1)

    @staticmethod
    def _worker() -> str:
        return f"{socket.gethostname()}:{os.getpid()}"

    # -- the hooks ------------------------------------------------------------------------

    async def pre_send(self, message: Any) -> Any:
        retries = int(message.labels.get("_retries", 0) or 0)
        task_id = self._message_task_id(message)
        message.labels[TASK_ID_LABEL] = task_id
        execution = execution_id(message.task_id)
        if retries > 0:
            # The retry of a failed attempt: report that failure before the retry can run.
            await self._report(
                self.ledger.fail,
                task_id,
                execution,
                error_body("retry scheduled"),
                worker=self._worker(),
                report_id=_report_id("fail", task_id, execution, retries - 1),
            )
            return message
        await self._report(
            self.ledger.enqueue,
            task_id,
            execution,
            queue=self._queue_name(),
            max_retries=self._max_retries(message),
            metadata={"taskiqTask": message.task_name},
            report_id=_report_id("enqueue", task_id, execution),
        )
        return message

    async def pre_execute(self, message: Any) -> Any:
        task = self.broker.find_task(message.task_name)
        if task is not None and not getattr(task.original_func, "__taskledger_gated__", False):
            task.original_func = _gated(task.original_func)
        task_id = self._message_task_id(message)
        execution = execution_id(message.task_id)
        try:
            outcome = await asyncio.to_thread(
                self.ledger.claim, task_id, execution, worker=self._worker()
            )
        except LedgerError:
            log.exception(
                "taskledger: claim of %s[%s] not recorded", message.task_name, message.task_id
            )
            _SKIP.set(self.on_unavailable == "skip")
            return message
        if not outcome.accepted:
            log.warning(
                "taskledger: claim of %s[%s] refused (%s)",
                message.task_name,
                message.task_id,
                outcome.reason,
            )
        _SKIP.set(not outcome.accepted and self.on_refused == "skip")
        return message

    async def post_execute(self, message: Any, result: Any) -> None:
        if _SKIP.get() or result.is_err:
            return
        task_id = self._message_task_id(message)
        await self._report(
            self.ledger.succeed, task_id, execution_id(message.task_id), worker=self._worker()
        )

    async def on_error(self, message: Any, result: Any, exception: BaseException) -> None:
        if isinstance(exception, NoResultError) or _SKIP.get():
            return
        task_id = self._message_task_id(message)
        execution = execution_id(message.task_id)
        retries = int(message.labels.get("_retries", 0) or 0)
        await self._report(
            self.ledger.fail,
            task_id,
            execution,
            error_body(exception),
            worker=self._worker(),
            report_id=_report_id("fail", task_id, execution, retries),
        )

    async def _report(self, method: Callable[..., Outcome], *args: Any, **kwargs: Any) -> None:
        # Reports never crash a worker or a producer: the client retried for `retry_total_s`.
        try:
            outcome = await asyncio.to_thread(method, *args, **kwargs)
        except LedgerError:
            log.exception("taskledger: %s report not recorded", method.__name__)
            return
        if not outcome.accepted:
            log.info("taskledger: %s of %s %s", outcome.op, outcome.task_id, outcome.reason)
