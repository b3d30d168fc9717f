"""Celery in eager mode (`task_always_eager`): nothing is published, so no publish signal fires;
the enqueue is reported at task_prerun, before the claim. Two instrumented apps in one process:
each task is reported by its own app's instrumentation only, once."""

from __future__ import annotations

import uuid

import pytest

celery = pytest.importorskip("celery", reason="celery is not installed in this Python")

from taskledger import Ledger  # noqa: E402
from taskledger.celery import instrument  # noqa: E402


def eager_app(name: str, ledger: Ledger):
    app = celery.Celery(name, broker="memory://", backend="cache+memory://")
    app.conf.update(task_always_eager=True, task_store_eager_result=True)
    instrumentation = instrument(app, ledger, queue=name)

    @app.task(name=f"{name}.double")
    def double(x: int) -> int:
        return 2 * x

    @app.task(name=f"{name}.broken")
    def broken(x: int) -> None:
        raise ValueError(f"invalid input {x}")

    return app, instrumentation, double, broken


def test_eager_tasks_are_enqueued_claimed_and_finished_once(ledger_server):
    ledger = Ledger(ledger_server.url, retry_total_s=10)
    run = uuid.uuid4().hex[:6]
    _app_a, inst_a, double_a, broken_a = eager_app(f"eager_a_{run}", ledger)
    _app_b, inst_b, double_b, _ = eager_app(f"eager_b_{run}", ledger)
    try:
        assert double_a.delay(21).get() == 42
        assert double_b.delay(4).get() == 8
        broken_a.delay(7)  # eager: the failure is stored in the result, not raised here
        for queue, name, arg, expected in [
            (f"eager_a_{run}", f"eager_a_{run}.double", 21, "completed"),
            (f"eager_b_{run}", f"eager_b_{run}.double", 4, "completed"),
        ]:
            task_id = f"{queue}:{name}:{arg}"
            types = [e["type"] for e in ledger.history(task_id)]
            assert types == ["ExecutionEnqueued", "ExecutionClaimed", "ExecutionSucceeded"], (
                task_id,
                ledger.history(task_id),
            )
            assert ledger.task(task_id)["status"] == expected
        broken_id = f"eager_a_{run}:eager_a_{run}.broken:7"
        types = [e["type"] for e in ledger.history(broken_id)]
        assert types == ["ExecutionEnqueued", "ExecutionClaimed", "ExecutionFailed"], types
        assert ledger.task(broken_id)["lastError"]["message"] == "ValueError: invalid input 7"
    finally:
        inst_a.disconnect()
        inst_b.disconnect()
