"""taskledger: the worker-side client of the taskledger tracking ledger."""
