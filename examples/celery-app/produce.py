"""Publish a few partner logs. Each publish reports `enqueue` first (awaited), then sends."""

from app import process_partner_log

LOGS = ["02220710", "02220711", "02220712", "02220713bad"]

if __name__ == "__main__":
    results = [
        process_partner_log.apply_async(
            kwargs={"partner_code": "SATLOC", "aircraft_id": "695d", "log_id": log_id}
        )
        for log_id in LOGS
    ]
    for log_id, result in zip(LOGS, results):
        try:
            result.get(timeout=60, propagate=False)
        finally:
            print(f"partner_tasks:SATLOC:695d:{log_id}  celery {result.state}  id {result.id}")
