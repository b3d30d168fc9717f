"""The TaskiQ app the end-to-end tests run: a real `taskiq worker` on Redis streams
(taskiq-redis), SmartRetryMiddleware for retries, LedgerMiddleware after it. Configured by
TEST_REDIS_URL and TASKLEDGER_URL."""

from __future__ import annotations

import os

import redis.asyncio as aioredis
from taskiq.middlewares import SmartRetryMiddleware
from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

from taskledger import Ledger
from taskledger.taskiq import LedgerMiddleware

REDIS_URL = os.environ["TEST_REDIS_URL"]

ledger_middleware = LedgerMiddleware(Ledger(retry_total_s=60.0, timeout=5.0))
broker = (
    RedisStreamBroker(f"{REDIS_URL}/3", queue_name="tiq")
    .with_result_backend(RedisAsyncResultBackend(f"{REDIS_URL}/4"))
    .with_middlewares(
        SmartRetryMiddleware(default_retry_count=3, default_delay=0.05), ledger_middleware
    )
)
counters = aioredis.from_url(f"{REDIS_URL}/5")


@broker.task
async def ok(key: str) -> str:
    return key


@broker.task(retry_on_error=True, max_retries=4)
async def flaky(key: str, fails: int) -> int:
    attempt = await counters.incr(f"attempts:{key}")
    if attempt <= fails:
        raise ConnectionError(f"network timeout, attempt {attempt}")
    return attempt


@broker.task(retry_on_error=True, max_retries=3)
async def doomed(key: str) -> None:
    attempt = await counters.incr(f"attempts:{key}")
    raise ValueError(f"invalid partner payload, attempt {attempt}")


@broker.task
def plain_failure(key: str) -> None:
    # A sync task (thread pool) that does not retry: its first failure is final.
    raise RuntimeError(f"parse error in {key}")
