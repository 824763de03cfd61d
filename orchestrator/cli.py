"""The `arx-daemon` command line: commands that read like sentences.

    arx-daemon start --program model --tag mar15
    arx-daemon status
    arx-daemon stop --tag mar15
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from . import daemon
from .campaign import Settings
from .policy import Policy
from .programs import PROGRAMS, TAG_PATTERN
from .worktree import GitError

app = typer.Typer(help="arx: a daemon that does ML research by itself.", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

STATE_HELP = "state directory (default: state/ in the arx checkout, or $ARX_STATE_DIR)"


def fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def make_agent(choice: str, model: Optional[str], seed: int, thinking_tokens: int, max_rounds: int):
    """auto = Claude when ANTHROPIC_API_KEY is set, else the offline search (announced loudly)."""
    if choice == "auto":
        choice = "claude" if os.environ.get("ANTHROPIC_API_KEY") else "offline"
        if choice == "offline":
            print("*** no ANTHROPIC_API_KEY: using the OFFLINE agent (seeded search over numeric constants, no LLM) ***", flush=True)
    if choice == "offline":
        from agents.offline import OfflineAgent

        return OfflineAgent(seed=seed)
    if not os.environ.get("ANTHROPIC_API_KEY"):
        raise daemon.UserError("--agent claude needs ANTHROPIC_API_KEY in the environment")
    from agents.claude import ClaudeAgent

    return ClaudeAgent(model=model, thinking_tokens=thinking_tokens, max_rounds=max_rounds)


@app.command()
def start(
    program: str = typer.Option(..., help="research program: model (edits trainer/train.py) or data (edits prepare.py, data_sources.py)"),
    tag: str = typer.Option(..., help="campaign name, e.g. mar15; the branch is autoresearch/<tag> (model) or autoresearch-data/<tag>"),
    agent: str = typer.Option("auto", help="auto (claude if ANTHROPIC_API_KEY is set, else offline), claude, or offline"),
    model: Optional[str] = typer.Option(None, help="Claude model for the claude agent (default: a current Sonnet)"),
    thinking_tokens: int = typer.Option(0, help="extended-thinking budget per Claude call (0: off)"),
    max_rounds: int = typer.Option(12, help="tool rounds Claude may use per proposal"),
    dataset: str = typer.Option("stdlib", help="dataset registry name (stdlib is embedded and offline)"),
    budget: float = typer.Option(300.0, help="training seconds per run (startup and evaluation are extra)"),
    max_experiments: Optional[int] = typer.Option(None, help="stop after this many experiments (baselines and re-runs not counted)"),
    max_cost_usd: Optional[float] = typer.Option(None, help="stop before an LLM call would take spending past this"),
    slots: int = typer.Option(1, help="trainers allowed at once across all campaigns of this state directory"),
    baseline_runs: int = typer.Option(2, help="times the unchanged code is measured first, to estimate noise"),
    min_delta: float = typer.Option(0.001, help="smallest val_bpb gain that can count as an improvement"),
    stall_s: float = typer.Option(120.0, help="kill a trainer that prints nothing for this long"),
    memory_mb: Optional[float] = typer.Option(None, help="kill a trainer whose process tree RSS passes this (default: 85% of RAM)"),
    seed: int = typer.Option(0, help="seed for training runs and the offline agent"),
    base: Optional[str] = typer.Option(None, help="commit to branch from (default: HEAD)"),
    foreground: bool = typer.Option(False, help="run in this terminal instead of detaching"),
    state_dir: Optional[Path] = typer.Option(None, help=STATE_HELP),
) -> None:
    """Start a campaign, or resume it if it stopped or died. Detaches unless --foreground."""
    if program not in PROGRAMS:
        fail(f"unknown program {program!r}; choose one of: {', '.join(PROGRAMS)}")
    if not TAG_PATTERN.match(tag):
        fail(f"bad tag {tag!r}: use letters, digits, '.', '_' or '-' (at most 64, starting with a letter or digit)")
    if agent not in ("auto", "claude", "offline"):
        fail(f"unknown agent {agent!r}; choose auto, claude or offline")
    if not budget > 0:
        fail(f"--budget must be a positive number of seconds, got {budget:g}")
    if slots < 1 or baseline_runs < 1 or (max_experiments is not None and max_experiments < 0):
        fail("--slots and --baseline-runs must be at least 1, --max-experiments at least 0")
    import psutil

    settings = Settings(
        state_dir=(state_dir or daemon.default_state_dir()).resolve(),
        program=program,
        tag=tag,
        dataset=dataset,
        budget_s=budget,
        max_experiments=max_experiments,
        max_cost_usd=max_cost_usd,
        slots=slots,
        seed=seed,
        stall_s=stall_s,
        memory_mb=memory_mb or 0.85 * psutil.virtual_memory().total / 2**20,
        policy=Policy(baseline_runs=baseline_runs, min_delta=min_delta),
    )
    try:
        if not foreground:
            raise typer.Exit(daemon.detach(settings, sys.argv[1:]))
        code = daemon.run_foreground(settings, lambda: make_agent(agent, model, seed, thinking_tokens, max_rounds), base)
    except (daemon.UserError, GitError) as e:
        fail(str(e))
    raise typer.Exit(code)


@app.command()
def stop(
    tag: Optional[str] = typer.Option(None, help="only this tag (default: every running campaign)"),
    program: Optional[str] = typer.Option(None, help="only this program"),
    state_dir: Optional[Path] = typer.Option(None, help=STATE_HELP),
) -> None:
    """Stop running campaigns gracefully: the run in flight is aborted and recorded as interrupted."""
    messages = daemon.stop((state_dir or daemon.default_state_dir()).resolve(), tag, program)
    for m in messages:
        typer.echo(m)
    if not messages:
        typer.echo("no running campaign matched")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
