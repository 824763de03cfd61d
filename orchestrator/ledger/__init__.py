"""The ledger: one SQLite file per state directory, written before the next transition starts.

`ledger` holds the schema (frozen migrations, v1 as explicit DDL, now v6) and the one writer; `statuses` the values
its run rows take (statuses and kinds as enums); `backup` keeps it recoverable. The read-only views for people are
`orchestrator/report.py` and `orchestrator/figures.py`, above the campaign's facts.
"""
