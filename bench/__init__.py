"""The benchmarks behind docs/results.md: each prints JSON. Not part of the installed daemon (pyproject.toml ships
orchestrator/ and agents/ only); run from a checkout with `python -m bench ...` (see bench/__main__.py)."""
