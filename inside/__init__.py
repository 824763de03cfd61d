"""Our code that runs inside the jail beside candidate code. LOCKED: neither program may edit it.

The trainer and the model process import it from the worktree (a proposal that touches it is refused), the daemon
from its own checkout. It imports neither orchestrator/ nor agents/, and nothing of trainer/.
"""
