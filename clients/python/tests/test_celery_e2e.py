"""Celery end to end: a real prefork worker (acks_late) on a real Redis, reporting to a real
`taskledger serve`. Afterwards every task's ledger status equals Celery's own final state."""

from __future__ import annotations

import datetime
import importlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from conftest import APPS, LedgerServer, child_env, stop_group, wait_for

celery = pytest.importorskip("celery", reason="celery is not installed in this Python")

from taskledger import Ledger  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
MAPPING = REPO / "fixtures" / "mappings" / "celery-redis.toml"
#: Celery's final state → the ledger status of the task's latest execution.
EXPECTED_STATUS = {"SUCCESS": "completed", "FAILURE": "dlq"}


class Worker:
    def __init__(self, redis_url: str, ledger_url: str, log_path: Path) -> None:
        self.log_path = log_path
        log = open(log_path, "wb")  # noqa: SIM115 - the child keeps it
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "celery_app",
                "worker",
                "--pool=prefork",
                "--concurrency=2",
                # Pool children are recycled every few tasks: a child that exits right after its
                # task must not lose a report (the client buffers nothing; cf. OpenTelemetry's
                # spans lost on recycling, opentelemetry-python-contrib#4916).
                "--max-tasks-per-child=3",
                "-Q",
                "e2e",
                "--loglevel=INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-n",
                f"e2e-{uuid.uuid4().hex[:6]}@%h",
            ],
            cwd=APPS,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_env(TEST_REDIS_URL=redis_url, TASKLEDGER_URL=ledger_url),
        )
        log.close()
        wait_for(
            lambda: self.alive() and b"ready." in log_path.read_bytes(),
            60,
            f"the Celery worker (log: {log_path})",
            0.2,
        )

    def alive(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"the Celery worker exited: {self.log_path.read_text()[-3000:]}")
        return True

    def stop(self) -> None:
        stop_group(self.process)


@pytest.fixture(scope="module")
def celery_env(redis_server, ledger_server, tmp_path_factory):
    os.environ["TEST_REDIS_URL"] = redis_server.url
    os.environ["TASKLEDGER_URL"] = ledger_server.url
    sys.path.insert(0, str(APPS))
    module = importlib.import_module("celery_app")
    worker = Worker(
        redis_server.url, ledger_server.url, tmp_path_factory.mktemp("celery") / "worker.log"
    )
    yield module, worker
    worker.stop()


def ledger_task_id(module, task, *args) -> str:
    return module.instrumentation.compute_task_id(task.name, args, {}, "-", "e2e")


def honours_redelivered(binary: str, tmp_path_factory) -> bool:
    """Does this binary reclaim a `processing` execution on a `redelivered` claim (SPEC §4)?
    Asked of a throwaway ledger, so the one under test holds only the Celery tasks (the
    validation compares all of them with Celery's backend)."""
    probe_server = LedgerServer(binary, tmp_path_factory.mktemp("probe"))
    try:
        probe = Ledger(probe_server.url, retry_total_s=10)
        execution = probe.enqueue("probe:redelivered").execution_id
        probe.claim("probe:redelivered", execution, worker="probe-1")
        return probe.claim(
            "probe:redelivered", execution, worker="probe-2", redelivered=True
        ).accepted
    finally:
        probe_server.stop()


def wait_results(results, timeout_s: float) -> None:
    wait_for(lambda: all(r.ready() for r in results), timeout_s, "the Celery results", 0.1)


def wait_settled(ledger: Ledger, task_ids, timeout_s: float) -> None:
    """Celery stores a task's result before it sends task_success / task_failure (the signals
    the integration reports at), so the ledger may settle a moment after the results are ready."""

    def settled() -> bool:
        return all(
            (ledger.task(task_id) or {}).get("status") not in (None, "queued", "processing")
            for task_id in task_ids
        )

    wait_for(settled, timeout_s, "the ledger's final reports", 0.1)


def event_types(ledger: Ledger, task_id: str) -> list[str]:
    return [event["type"] for event in ledger.history(task_id) or []]


def test_workload_statuses_match_celery(celery_env, ledger_server):
    module, worker = celery_env
    ledger = Ledger(ledger_server.url, retry_total_s=10)
    run = uuid.uuid4().hex[:8]
    jobs = []  # (task id in the ledger, AsyncResult, kind)
    for i in range(6):
        jobs.append((module.ok, (f"{run}-ok{i}",), "ok"))
    for i in range(3):
        jobs.append((module.flaky, (f"{run}-flaky{i}", 2), "flaky"))
    for i in range(2):
        jobs.append((module.doomed, (f"{run}-doomed{i}",), "doomed"))
    sent = []
    for task, args, kind in jobs:
        result = task.delay(*args)
        # The enqueue was reported, and acknowledged, before the message was published.
        task_id = ledger_task_id(module, task, *args)
        assert ledger.task(task_id)["executionId"] == result.id
        sent.append((task_id, result, kind))
    wait_results([r for _, r, _ in sent], 60)
    wait_settled(ledger, [task_id for task_id, _, _ in sent], 30)
    for task_id, result, kind in sent:
        expected = EXPECTED_STATUS[result.state]
        status = ledger.task(task_id)
        assert status["status"] == expected, (kind, task_id, result.state, status)
        assert status["executionId"] == result.id
        assert "ReportRejected" not in json.dumps(event_types(ledger, task_id))
        chain = ledger.chain(task_id)["executions"]
        assert len(chain) == 1
        attempts = chain[0]["attempts"]
        if kind == "ok":
            assert result.state == "SUCCESS" and len(attempts) == 1
        elif kind == "flaky":
            # Two retried failures on the same execution, then the success.
            assert result.state == "SUCCESS"
            assert [a["outcome"] for a in attempts] == ["failed", "failed", "completed"]
            assert status["retryCount"] == 2 and result.result == 3
            # Each retried failure was reported at the retry's publish, with the exception
            # being handled (not a generic message), and once (same reportId at task_retry).
            for attempt in attempts[:2]:
                assert attempt["error"]["message"].startswith("ConnectionError: network timeout")
        else:
            # max_retries=2: three attempts, the last one final, as Celery says.
            assert result.state == "FAILURE"
            assert [a["outcome"] for a in attempts] == ["failed", "failed", "dlq"], attempts
            assert status["lastError"]["message"].startswith("ValueError: invalid partner")
    assert worker.alive()


def test_worker_killed_mid_task_is_redelivered(celery_env, ledger_server, tmp_path_factory):
    """acks_late + a pool process killed mid-task (os._exit): the broker redelivers the message
    with delivery_info['redelivered'], the claim says `redelivered`, and the ledger's reclaim
    rule (SPEC §4) lets the redelivery run. Until the ledger honours `redelivered`, the claim
    is refused (notClaimable) and the gate skips the task: then this test is xfailed."""
    module, worker = celery_env
    ledger = Ledger(ledger_server.url, retry_total_s=10)
    key = f"{uuid.uuid4().hex[:8]}-crash"
    result = module.crash.delay(key)
    task_id = ledger_task_id(module, module.crash, key)
    # The claim of the redelivery is the third report (enqueue, claim, claim).
    wait_for(lambda: len(ledger.history(task_id) or []) >= 3, 60, "the redelivered claim", 0.1)
    history = ledger.history(task_id)
    claims = [e for e in history if e["data"].get("executionId") == result.id][1:]
    if not honours_redelivered(ledger_server.binary, tmp_path_factory):
        assert "notClaimable" in json.dumps(claims), history
        pytest.xfail(
            "this ledger refuses a redelivered claim of a processing execution "
            "(reclaim rule of issue 17 not in the binary yet): the redelivery was "
            "skipped by the claim gate"
        )
    wait_results([result], 60)
    wait_settled(ledger, [task_id], 30)
    assert result.state == "SUCCESS" and result.result == "survived"
    status = ledger.task(task_id)
    assert status["status"] == "completed", status
    attempts = ledger.chain(task_id)["executions"][0]["attempts"]
    assert [a["outcome"] for a in attempts] == ["abandoned", "completed"], attempts
    assert worker.alive()


def test_ledger_restart_mid_run(celery_env, ledger_server):
    """SIGKILL the ledger mid-run and restart it within 5 s on the same data directory: the
    producer's and the workers' clients retry across the gap; no report is lost, none doubled
    (each task's stream is exactly its lifecycle, no rejection), and the worker never crashes."""
    module, worker = celery_env
    ledger = Ledger(ledger_server.url, retry_total_s=30)
    run = uuid.uuid4().hex[:8]
    sent: list[tuple[str, object, int]] = []
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            for i in range(24):
                fails = 1 if i % 4 == 0 else 0
                if fails:
                    args = (f"{run}-f{i}", fails)
                    result = module.flaky.delay(*args)
                    sent.append((ledger_task_id(module, module.flaky, *args), result, fails))
                else:
                    args = (f"{run}-s{i}", 0.05)
                    result = module.slow.delay(*args)
                    sent.append((ledger_task_id(module, module.slow, *args), result, 0))
                time.sleep(0.05)
        except BaseException as error:  # reported by the test thread
            errors.append(error)

    producer = threading.Thread(target=produce)
    producer.start()
    wait_for(lambda: len(sent) >= 6, 30, "the first publishes", 0.02)
    ledger_server.kill()
    time.sleep(1.5)  # the gap: publishes and reports in flight retry meanwhile
    ledger_server.start()
    producer.join(120)
    # The producer published through the gap: its enqueues had to wait for the restart.
    assert module.instrumentation.ledger.retries > 0, "the restart was never noticed"
    assert not errors, errors
    assert len(sent) == 24
    wait_results([r for _, r, _ in sent], 90)
    wait_settled(ledger, [task_id for task_id, _, _ in sent], 30)
    for task_id, result, fails in sent:
        assert result.state == "SUCCESS", (task_id, result.state, result.result)
        status = ledger.task(task_id)
        assert status is not None, f"{task_id}: lost"
        assert status["status"] == "completed", status
        expected = (
            ["ExecutionEnqueued"]
            + ["ExecutionClaimed", "ExecutionFailed"] * fails
            + ["ExecutionClaimed", "ExecutionSucceeded"]
        )
        assert event_types(ledger, task_id) == expected, (task_id, ledger.history(task_id))
    assert worker.alive()
    # Every report got through: the clients never gave up on the ledger.
    log = worker.log_path.read_text()
    assert "not recorded" not in log, log[-4000:]


def test_validate_against_celery_result_backend(celery_env, ledger_server, redis_server, tmp_path):
    """Export Celery's result backend (result_extended) and validate the ledger against it with
    the shipped mapping: consistency 1.0 on status. Needs fixtures/mappings/celery-redis.toml
    (issue 17's mapping work); skipped, saying so, while it is not there."""
    module, _worker = celery_env
    run = uuid.uuid4().hex[:8]
    own = [
        module.ok.delay(f"{run}-v"),
        module.flaky.delay(f"{run}-vf", 1),
        module.doomed.delay(f"{run}-vd"),
    ]
    wait_results(own, 60)
    ledger = Ledger(ledger_server.url, retry_total_s=10)
    wait_settled(
        ledger,
        [
            ledger_task_id(module, module.ok, f"{run}-v"),
            ledger_task_id(module, module.flaky, f"{run}-vf", 1),
            ledger_task_id(module, module.doomed, f"{run}-vd"),
        ],
        30,
    )
    export = tmp_path / "celery-export.jsonl"
    with open(export, "wb") as out:
        subprocess.run(
            [sys.executable, "-m", "taskledger.export_celery", "--redis", f"{redis_server.url}/1"],
            check=True,
            stdout=out,
            env=child_env(),
        )
    # The export's instant. Not the default as-of (the latest date_done): Celery stores a task's
    # FAILURE/SUCCESS before it fires task_failure/task_success, so the last task's ledger report
    # is a few ms after its date_done and would fall outside an as-of of date_done.
    exported_at = datetime.datetime.now(datetime.timezone.utc).isoformat()
    lines = export.read_text().splitlines()
    docs = [json.loads(line) for line in lines]
    assert {r.id for r in own} <= {d["task_id"] for d in docs}, lines[:3]
    assert all(d["status"] in ("SUCCESS", "FAILURE", "STARTED") for d in docs), docs[:3]
    assert all("task_id" in d and "name" in d for d in docs)
    if not MAPPING.exists():
        pytest.skip(
            f"{MAPPING} does not exist yet (the mapping of issue 17's validation part): "
            f"exported {len(docs)} documents, validate step skipped"
        )
    ledger_server.stop()  # validate opens the data directory itself
    try:
        report = tmp_path / "report.json"
        completed = subprocess.run(
            [
                ledger_server.binary,
                "--data-dir",
                str(ledger_server.data_dir),
                "validate",
                "--legacy",
                str(export),
                "--mapping",
                str(MAPPING),
                "--fields",
                "status",
                "--as-of",
                exported_at,
                "--report",
                str(report),
            ],
            capture_output=True,
            text=True,
        )
        print(completed.stdout)
        assert completed.returncode == 0, completed.stdout + completed.stderr
        summary = json.loads(report.read_text())
        assert summary["consistency"] == 1.0, summary
        assert summary["compared"] == len(docs), summary
    finally:
        ledger_server.start()


def test_revoked_before_it_runs(celery_env, ledger_server):
    """A task revoked while it waits for its countdown: Celery records REVOKED; the integration
    reports a failure saying so and archives the execution."""
    module, worker = celery_env
    ledger = Ledger(ledger_server.url, retry_total_s=10)
    key = f"{uuid.uuid4().hex[:8]}-revoked"
    result = module.ok.apply_async((key,), countdown=2)
    task_id = ledger_task_id(module, module.ok, key)
    assert ledger.task(task_id)["status"] == "queued"
    result.revoke()
    wait_for(lambda: result.state == "REVOKED", 30, "Celery's REVOKED", 0.1)
    wait_for(lambda: ledger.task(task_id)["status"] == "archived", 30, "the ledger's archive", 0.1)
    chain = ledger.chain(task_id)["executions"][0]
    assert chain["archivedReason"] == "celery: revoked" and chain["archivedBy"] == "celery"
    assert ledger.task(task_id)["lastError"]["message"] == "revoked: Celery revoked the task"
    assert worker.alive()


def test_worker_lost_without_redelivery_is_a_failure(celery_env, ledger_server):
    """A task with reject_on_worker_lost=False whose pool process dies: Celery records
    WorkerLostError as the task's FAILURE (in the worker's main process, where task_failure is
    sent), and so does the ledger (`failed`: its policy would retry, Celery will not)."""
    module, worker = celery_env
    ledger = Ledger(ledger_server.url, retry_total_s=10)
    key = f"{uuid.uuid4().hex[:8]}-lost"
    result = module.crash_lost.delay(key)
    wait_results([result], 60)
    assert result.state == "FAILURE"
    task_id = ledger_task_id(module, module.crash_lost, key)
    wait_settled(ledger, [task_id], 30)
    status = ledger.task(task_id)
    assert status["status"] == "failed", status
    assert "WorkerLostError" in status["lastError"]["message"], status
    assert worker.alive()


def test_refused_claim_skips_the_task(celery_env, ledger_server):
    """The same message delivered again after its execution completed (an at-least-once
    duplicate): its enqueue is the same report (a duplicate), its claim is refused
    (notClaimable), and the claim gate skips the task: the body does not run a second time."""
    module, worker = celery_env
    ledger = Ledger(ledger_server.url, retry_total_s=10)
    key = f"{uuid.uuid4().hex[:8]}-twice"
    first = module.flaky.delay(key, 0)
    wait_results([first], 30)
    assert first.result == 1
    module.flaky.apply_async((key, 0), task_id=first.id)  # the very same message again
    task_id = ledger_task_id(module, module.flaky, key, 0)

    def refused() -> bool:
        return any(
            e["type"] == "ReportRejected"
            and e["data"]["op"] == "claim"
            and e["data"]["reason"] == "notClaimable"
            for e in ledger.history(task_id)
        )

    wait_for(refused, 30, "the refused claim", 0.1)
    time.sleep(0.5)  # had the body run, it would have counted by now
    assert int(module.counters.get(f"attempts:{key}")) == 1
    types = [e["type"] for e in ledger.history(task_id)]
    assert types.count("ExecutionEnqueued") == 1 and types.count("ExecutionSucceeded") == 1, types
    assert ledger.task(task_id)["status"] == "completed"
    assert worker.alive()
