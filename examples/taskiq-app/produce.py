"""Kick a few partner logs. Each kick reports `enqueue` first (awaited), then sends."""

import asyncio

from app import broker, process_partner_log

LOGS = ["02220710", "02220711", "02220712", "02220713bad"]


async def main() -> None:
    await broker.startup()
    try:
        tasks = [
            await process_partner_log.kiq(partner_code="SATLOC", aircraft_id="695d", log_id=log)
            for log in LOGS
        ]
        for log, task in zip(LOGS, tasks):
            result = await task.wait_result(timeout=60)
            state = "error" if result.is_err else "ok"
            print(f"partner_tasks:SATLOC:695d:{log}  taskiq {state}  id {task.task_id}")
    finally:
        await broker.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
