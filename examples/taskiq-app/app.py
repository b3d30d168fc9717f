"""A TaskiQ app reporting to taskledger, on Redis streams (taskiq-redis) with SmartRetry.

    taskiq worker app:broker --workers 1     # the worker
    python produce.py                        # the producer
"""

from __future__ import annotations

import os
import random

from taskiq.middlewares import SmartRetryMiddleware
from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

from taskledger import Ledger
from taskledger.taskiq import LedgerMiddleware

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")

broker = (
    RedisStreamBroker(f"{REDIS_URL}/0", queue_name="partner_tasks")
    .with_result_backend(RedisAsyncResultBackend(f"{REDIS_URL}/1"))
    # LedgerMiddleware after the retry middleware: TaskiQ calls on_error in reverse order, so the
    # failure is reported before SmartRetry sends the retry.
    .with_middlewares(
        SmartRetryMiddleware(default_retry_count=3, default_delay=1),
        LedgerMiddleware(
            Ledger(),
            task_id=lambda name, args, kwargs: (
                f"partner_tasks:{kwargs['partner_code']}:{kwargs['aircraft_id']}:{kwargs['log_id']}"
            ),
        ),
    )
)


@broker.task(retry_on_error=True, max_retries=3)
async def process_partner_log(*, partner_code: str, aircraft_id: str, log_id: str):
    if random.random() < 0.3:
        raise ConnectionError("ETIMEDOUT calling partner api: network timeout")
    if log_id.endswith("bad"):
        raise ValueError(f"invalid log format: {log_id}")
    return {"rows": 42, "log_id": log_id}
