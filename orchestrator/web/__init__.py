"""`arx-daemon serve`: a read-only web dashboard over the ledger.

`data` reads the ledger (read-only SQLite, columns read defensively so newer schemas still show),
`app` serves pages and a server-sent-event stream that tells open pages when the ledger or a
running trainer's log changed, `screenshot` takes a picture of a page; `python -m bench dashboard`
times the pages on a ledger of 10,000 runs.
"""
