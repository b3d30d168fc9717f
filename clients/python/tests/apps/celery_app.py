"""The Celery app the end-to-end tests run: real prefork workers, Redis broker and result backend,
acks_late with redelivery when a worker dies. Configured by TEST_REDIS_URL and TASKLEDGER_URL."""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

from taskledger import Ledger
from taskledger.celery import instrument

REDIS_URL = os.environ["TEST_REDIS_URL"]
QUEUE = "e2e"

app = Celery("celery_app", broker=f"{REDIS_URL}/0", backend=f"{REDIS_URL}/1")
app.conf.update(
    task_acks_late=True,
    # A worker lost mid-task (os._exit) gives its message back to the queue (redelivered), as
    # acks_late promises, instead of recording a WorkerLostError failure.
    task_reject_on_worker_lost=True,
    result_extended=True,
    task_track_started=True,
    worker_prefetch_multiplier=1,
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
# The ledger may be down for a few seconds in the restart test: the budget covers it.
instrumentation = instrument(app, Ledger(retry_total_s=60.0, timeout=5.0))
counters = redis.Redis.from_url(f"{REDIS_URL}/2")


@app.task
def ok(key: str) -> str:
    return key


@app.task(bind=True, max_retries=3)
def flaky(self, key: str, fails: int) -> int:
    attempt = counters.incr(f"attempts:{key}")
    if attempt <= fails:
        try:
            raise ConnectionError(f"network timeout, attempt {attempt}")
        except ConnectionError as exc:
            raise self.retry(exc=exc, countdown=0.05) from exc
    return attempt


@app.task(bind=True, max_retries=2)
def doomed(self, key: str) -> None:
    attempt = counters.incr(f"attempts:{key}")
    try:
        raise ValueError(f"invalid partner payload, attempt {attempt}")
    except ValueError as exc:
        raise self.retry(exc=exc, countdown=0.05) from exc


@app.task
def crash(key: str) -> str:
    # The first delivery kills its pool process mid-task; the redelivery completes.
    if counters.set(f"crashed:{key}", 1, nx=True):
        os._exit(1)
    return "survived"


@app.task
def slow(key: str, seconds: float) -> str:
    time.sleep(seconds)
    return key


@app.task(reject_on_worker_lost=False)
def crash_lost(key: str) -> str:
    # Dies on every delivery; without reject_on_worker_lost Celery fails it (WorkerLostError).
    os._exit(1)
