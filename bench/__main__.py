"""python -m bench WHAT [options]: one benchmark, printed as JSON.

status | overhead | eval   the daemon (bench/daemon.py)
--parallel                 experiments per hour on 1 and 2 Ray slots (bench/daemon.py)
policy                     the keep rule on simulated seeds, new rule and old (bench/verdicts.py)
--aa                       the keep rule on real campaigns: A/A, planted gains, worse changes (bench/verdicts.py)
--yield                    research yield of a real offline campaign, validated on fresh seeds
                           (bench/research_yield.py)
dashboard                  the dashboard's pages on a ledger of 10,000 runs (bench/dashboard.py)
trainer                    the trainer: MLX vs PyTorch eager and torch.compile, --matmul, --blas N
                           (bench/trainer.py; `python -m bench trainer --help`)
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str]) -> int:
    what = argv[0] if argv else ""
    if what in ("policy", "--aa") or "--aa" in argv:
        from bench import verdicts

        return verdicts.main(argv)
    if "--yield" in argv:
        from bench import research_yield

        return research_yield.main(argv)
    if what == "trainer":
        from bench import trainer
        from inside import blas

        blas.reexec_with_openblas()
        return trainer.main(argv[1:])
    if what == "dashboard":
        from bench import dashboard

        return dashboard.main(argv[1:], standalone_mode=False) or 0
    from bench import daemon

    if "--parallel" in argv:
        parser = argparse.ArgumentParser(prog="python -m bench --parallel", description=daemon.bench_parallel.__doc__)
        parser.add_argument("--parallel", action="store_true", required=True)
        parser.add_argument("--experiments", type=int, default=4, help="experiments per campaign")
        parser.add_argument("--budget", type=float, default=5.0, help="training seconds per run")
        args = parser.parse_args(argv)
        print(json.dumps(daemon.bench_parallel(args.experiments, args.budget), indent=2))
        return 0
    benches = {"status": daemon.bench_status, "overhead": daemon.bench_overhead, "eval": daemon.bench_eval}
    if what not in benches:
        print(__doc__, file=sys.stderr)
        return 2
    print(json.dumps({what: benches[what]()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
