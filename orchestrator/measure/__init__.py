"""Measuring a candidate: the only trusted code that starts candidate processes.

`executor.Executor.measure(spec) -> Measurement`, locally (`executor.LocalExecutor`) or on a Ray node
(`ray_executor`); `experiment` runs the phases (prepare, compile, train, score) each in a sandbox (`sandbox`,
`sandbox_setup`) under the watchdog (`runner`), trainers sharing the machine through `slots`, CPU trainers their
compiled kernels through `kernels`; every read of a file a candidate wrote goes through orchestrator/capped.py.
"""
