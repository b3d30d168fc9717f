"""A Celery app reporting to taskledger: the partner pipeline of seeds/003 on Celery + Redis.

    celery -A app worker --pool=prefork --concurrency=2 --loglevel=INFO     # the worker
    python produce.py                                                       # the producer
"""

from __future__ import annotations

import os
import random

from celery import Celery

from taskledger import Ledger
from taskledger.celery import instrument

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")

app = Celery("app", broker=f"{REDIS_URL}/0", backend=f"{REDIS_URL}/1")
app.conf.update(
    task_acks_late=True,  # a worker lost mid-task leaves the message to be redelivered ...
    task_reject_on_worker_lost=True,  # ... and Celery gives it back instead of failing it
    result_extended=True,  # the result backend keeps name/args/queue: `export_celery` + validate
    task_track_started=True,
    worker_prefetch_multiplier=1,
    task_default_queue="partner_tasks",
)


def partner_task_id(name: str, args, kwargs) -> str:
    """seeds/000's business identity: {queue}:{partnerCode}:{aircraftId}:{logId}."""
    return f"partner_tasks:{kwargs['partner_code']}:{kwargs['aircraft_id']}:{kwargs['log_id']}"


# TASKLEDGER_URL / TASKLEDGER_TOKEN configure the client; one line instruments every task.
instrument(app, Ledger(), task_id=partner_task_id)


@app.task(bind=True, max_retries=3)
def process_partner_log(self, *, partner_code: str, aircraft_id: str, log_id: str) -> dict:
    # The partner API times out now and then: retried on the same execution.
    if random.random() < 0.3:
        try:
            raise ConnectionError("ETIMEDOUT calling partner api: network timeout")
        except ConnectionError as exc:
            raise self.retry(exc=exc, countdown=1) from exc
    if log_id.endswith("bad"):
        raise ValueError(f"invalid log format: {log_id}")
    return {"rows": 42, "log_id": log_id}
