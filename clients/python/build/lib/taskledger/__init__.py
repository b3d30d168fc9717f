"""taskledger: the worker-side client of the taskledger tracking ledger (SPEC section 10).

    from taskledger import Ledger
    ledger = Ledger()                       # TASKLEDGER_URL, TASKLEDGER_TOKEN
    out = ledger.claim(task_id, execution_id)
    if out.accepted:                        # the idempotency gate of seeds/000
        ...

Queue integrations: `taskledger.celery.instrument(app)`, `taskledger.taskiq.LedgerMiddleware()`.
"""

from taskledger.client import (
    REPORT_ID_NAMESPACE,
    Ledger,
    LedgerError,
    LedgerRefused,
    LedgerUnavailable,
    Outcome,
    report_id_for,
)

__all__ = [
    "REPORT_ID_NAMESPACE",
    "Ledger",
    "LedgerError",
    "LedgerRefused",
    "LedgerUnavailable",
    "Outcome",
    "report_id_for",
]
__version__ = "0.1.0"
