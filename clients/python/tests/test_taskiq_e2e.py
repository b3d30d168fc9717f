"""TaskiQ end to end: a real `taskiq worker` (Redis streams via taskiq-redis, SmartRetry) reporting
to a real `taskledger serve`; afterwards every task's ledger status equals TaskiQ's own result."""

from __future__ import annotations

import asyncio
import importlib
import os
import subprocess
import sys
import uuid

import pytest
from conftest import APPS, child_env, stop_group, wait_for

pytest.importorskip("taskiq", reason="taskiq is not installed in this Python")
pytest.importorskip("taskiq_redis", reason="taskiq-redis is not installed in this Python")

from taskledger import Ledger


@pytest.fixture(scope="module")
def taskiq_env(redis_server, ledger_server, tmp_path_factory):
    os.environ["TEST_REDIS_URL"] = redis_server.url
    os.environ["TASKLEDGER_URL"] = ledger_server.url
    sys.path.insert(0, str(APPS))
    module = importlib.import_module("taskiq_app")
    log_path = tmp_path_factory.mktemp("taskiq") / "worker.log"
    log = open(log_path, "wb")  # noqa: SIM115 - the child keeps it
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "taskiq",
            "worker",
            "taskiq_app:broker",
            "--workers",
            "1",
            "--log-level",
            "INFO",
            "--shutdown-timeout",
            "3",
            "--wait-tasks-timeout",
            "3",
        ],
        cwd=APPS,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=child_env(TEST_REDIS_URL=redis_server.url, TASKLEDGER_URL=ledger_server.url),
    )
    log.close()

    def ready() -> bool:
        if worker.poll() is not None:
            raise AssertionError(f"taskiq worker exited: {log_path.read_text()[-3000:]}")
        return b"Listening started" in log_path.read_bytes() or b"Started" in log_path.read_bytes()

    wait_for(ready, 60, f"the taskiq worker (log {log_path})", 0.2)
    yield module, worker, log_path
    stop_group(worker, grace_s=4.0)  # its process manager lingers after stopping the pool


def test_taskiq_workload_statuses_match(taskiq_env, ledger_server):
    module, worker, log_path = taskiq_env
    ledger = Ledger(ledger_server.url, retry_total_s=10)
    run = uuid.uuid4().hex[:8]
    mw = module.ledger_middleware

    async def scenario():
        await module.broker.startup()
        try:
            jobs = []
            for i in range(4):
                jobs.append(("ok", module.ok, (f"{run}-ok{i}",)))
            for i in range(2):
                jobs.append(("flaky", module.flaky, (f"{run}-flaky{i}", 2)))
            jobs.append(("doomed", module.doomed, (f"{run}-doomed",)))
            jobs.append(("plain", module.plain_failure, (f"{run}-plain",)))
            sent = []
            for kind, task, args in jobs:
                handle = await task.kiq(*args)
                task_id = mw.compute_task_id(task.task_name, args, {}, handle.task_id)
                # Enqueue reported and acknowledged before the message was sent.
                status = await asyncio.to_thread(ledger.task, task_id)
                assert status["executionId"] == str(uuid.UUID(handle.task_id))
                sent.append((kind, task_id, handle))
            results = [await h.wait_result(timeout=60) for _, _, h in sent]
            return sent, results
        finally:
            await module.broker.shutdown()

    sent, results = asyncio.run(scenario())
    for (kind, task_id, _handle), result in zip(sent, results):
        status = ledger.task(task_id)
        expected = "dlq" if result.is_err else "completed"
        assert status["status"] == expected, (kind, task_id, result, status)
        attempts = [a["outcome"] for a in ledger.chain(task_id)["executions"][0]["attempts"]]
        history = [e["type"] for e in ledger.history(task_id)]
        assert "ReportRejected" not in history, (task_id, history)
        if kind == "ok":
            assert not result.is_err and attempts == ["completed"]
        elif kind == "flaky":
            assert not result.is_err and result.return_value == 3
            assert attempts == ["failed", "failed", "completed"], attempts
        elif kind == "doomed":
            # max_retries=3 attempts (TaskiQ counts the first): the third failure is final.
            assert result.is_err and attempts == ["failed", "failed", "dlq"], attempts
            assert status["lastError"]["message"].startswith("ValueError: invalid partner")
        else:
            assert result.is_err and attempts == ["dlq"], attempts
    assert worker.poll() is None, log_path.read_text()[-3000:]


def test_taskiq_refused_claim_skips_the_task(taskiq_env, ledger_server):
    """A message whose execution the ledger already completed (a duplicate delivery): the claim
    is refused and the gate skips the task, so it does not run twice."""
    module, _worker, _log_path = taskiq_env
    ledger = Ledger(ledger_server.url, retry_total_s=10)
    key = f"{uuid.uuid4().hex[:8]}-dup"

    async def scenario():
        await module.broker.startup()
        try:
            first = await module.flaky.kiq(key, 0)
            assert (await first.wait_result(timeout=30)).return_value == 1
            # Deliver the very same message again (same task_id), as a redelivery would.
            again = await module.flaky.kicker().with_task_id(first.task_id).kiq(key, 0)
            return first, again
        finally:
            await module.broker.shutdown()

    first, _again = asyncio.run(scenario())
    task_id = module.ledger_middleware.compute_task_id(
        module.flaky.task_name, (key, 0), {}, first.task_id
    )

    def refused_claim() -> bool:
        return any(
            e["type"] == "ReportRejected"
            and e["data"]["op"] == "claim"
            and e["data"]["reason"] == "notClaimable"
            for e in ledger.history(task_id)
        )

    wait_for(refused_claim, 30, "the refused claim", 0.1)
    # The second send's enqueue is the same report (same derived reportId): a duplicate, so the
    # stream holds one enqueue only.
    assert [e["type"] for e in ledger.history(task_id)].count("ExecutionEnqueued") == 1
    # The task body never ran a second time: its counter is still 1.
    counter = asyncio.run(_get_counter(module, key))
    assert counter == 1, counter
    assert ledger.task(task_id)["status"] == "completed"


async def _get_counter(module, key: str) -> int:
    import redis.asyncio as aioredis

    client = aioredis.from_url(f"{module.REDIS_URL}/5")
    try:
        return int(await client.get(f"attempts:{key}"))
    finally:
        await client.aclose()


def test_taskiq_ledger_restart_mid_run(taskiq_env, ledger_server):
    """SIGKILL the ledger while tasks are kicked and run, restart it within 5 s on the same data
    directory: every report arrives once (each stream is exactly its lifecycle), none is lost,
    the worker keeps running."""
    module, worker, log_path = taskiq_env
    ledger = Ledger(ledger_server.url, retry_total_s=30)
    mw = module.ledger_middleware
    run = uuid.uuid4().hex[:8]

    async def scenario():
        await module.broker.startup()
        try:
            sent = []
            for i in range(20):
                if i == 5:
                    await asyncio.to_thread(ledger_server.kill)
                    restart = asyncio.get_running_loop().call_later(1.5, ledger_server.start)
                fails = 1 if i % 5 == 0 else 0
                args = (f"{run}-r{i}", fails)
                handle = await module.flaky.kiq(*args)
                sent.append(
                    (
                        mw.compute_task_id(module.flaky.task_name, args, {}, handle.task_id),
                        handle,
                        fails,
                    )
                )
                await asyncio.sleep(0.05)
            restart.cancel()
            results = [await h.wait_result(timeout=90) for _, h, _ in sent]
            return sent, results
        finally:
            await module.broker.shutdown()

    sent, results = asyncio.run(scenario())
    assert mw.ledger.retries > 0, "the restart was never noticed"
    for (task_id, _handle, fails), result in zip(sent, results):
        assert not result.is_err, (task_id, result)
        expected = (
            ["ExecutionEnqueued"]
            + ["ExecutionClaimed", "ExecutionFailed"] * fails
            + ["ExecutionClaimed", "ExecutionSucceeded"]
        )
        assert [e["type"] for e in ledger.history(task_id)] == expected, ledger.history(task_id)
        assert ledger.task(task_id)["status"] == "completed"
    assert worker.poll() is None, log_path.read_text()[-3000:]
    assert "not recorded" not in log_path.read_text()
