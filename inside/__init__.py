"""Our code that runs inside the jail beside candidate code. LOCKED: neither program may edit it.

evaluate.py  the model server of evaluation (`python -m inside.evaluate`): rows in, logits out, never a score
loader.py    the trusted data loader: a checked prepared folder in, training batches out
blas.py      which OpenBLAS a CPU process preloads, and its thread settings (the daemon imports it too)
device.py    which MLX backend this process runs on

The trainer and the model process import it from the worktree (a proposal that touches it is refused), the daemon
from its own checkout. It imports neither orchestrator/ nor agents/, and nothing of trainer/ (the model server loads
the worktree's train.py by path, as candidate code).
"""
