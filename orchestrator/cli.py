"""The `arx-daemon` command line: commands that read like sentences.

arx-daemon start --program model --tag mar15
arx-daemon status
arx-daemon stop --tag mar15
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Optional

import click

from agents.pricing import DEFAULT_MODEL, EFFORTS, MIN_THINKING_TOKENS
from agents.pricing import facts as model_facts

from .programs import PROGRAMS, TAG_PATTERN, default_state_dir


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
def app() -> None:
    """arx: a daemon that does ML research by itself.

    Start a campaign before bed; in the morning read `status`, `runs`, `plot`, or query
    state/experiments.db with sqlite3.
    """


STATE_HELP = "state directory (default: state/ in the arx checkout, or $ARX_STATE_DIR)"


def fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    raise SystemExit(2)


def make_agent(
    choice: str,
    model: Optional[str],
    seed: int,
    thinking_tokens: int,
    max_rounds: int,
    effort: Optional[str] = None,
    fallback_model: Optional[str] = None,
):
    """auto = Claude when ANTHROPIC_API_KEY is set, else the offline search (announced loudly)."""
    if choice == "auto":
        choice = "claude" if os.environ.get("ANTHROPIC_API_KEY") else "offline"
        if choice == "offline":
            print(
                "*** no ANTHROPIC_API_KEY: using the OFFLINE agent (seeded search over numeric constants, no LLM) ***",
                flush=True,
            )
    if choice == "offline":
        from agents.offline import OfflineAgent

        return OfflineAgent(seed=seed)
    if choice == "optuna":
        from agents.optuna_search import OptunaAgent

        return OptunaAgent(seed=seed)
    if not os.environ.get("ANTHROPIC_API_KEY"):
        from .daemon import UserError

        raise UserError("--agent claude needs ANTHROPIC_API_KEY in the environment")
    from agents.claude import ClaudeAgent

    return ClaudeAgent(
        model=model,
        thinking_tokens=thinking_tokens,
        effort=effort,
        fallback_model=fallback_model,
        max_rounds=max_rounds,
    )


# what each numeric option of `start` must be; click only checks that it is a number
NUMBERS = {
    "thinking_tokens": (
        lambda v: v == 0 or v >= MIN_THINKING_TOKENS,
        f"0 (off) or at least {MIN_THINKING_TOKENS} (the API's least thinking budget)",
    ),
    "max_rounds": (lambda v: v >= 1, "at least 1"),
    "budget": (lambda v: 0 < v < math.inf, "a positive number of seconds"),
    "max_experiments": (lambda v: v >= 0, "0 (baselines only) or more"),
    "max_cost_usd": (lambda v: 0 < v < math.inf, "a positive number of dollars"),
    "slots": (lambda v: v >= 1, "at least 1"),
    "baseline_runs": (lambda v: v >= 1, "at least 1"),
    "min_delta": (lambda v: 0 <= v < math.inf, "0 or a positive number"),
    "stall_s": (lambda v: 0 < v < math.inf, "a positive number of seconds"),
    "memory_mb": (lambda v: 0 < v < math.inf, "a positive number of MB"),
    "seed": (lambda v: v >= 0, "0 or more"),
    "false_keep": (lambda v: 0 < v < 0.5, "in (0, 0.5)"),
    "min_pairs": (lambda v: v >= 1, "at least 1"),
    "max_pairs": (lambda v: v >= 1, "at least 1"),
    "futility_t": (lambda v: 0 <= v < math.inf, "0 (never) or a positive number"),
    "cpu_tolerance": (lambda v: 0 <= v <= 1, "in [0, 1] (1: never measure again for load)"),
    "remeasure_every": (lambda v: v >= 0, "0 (never) or more"),
    "max_unfair": (lambda v: v >= 0, "0 or more"),
    "parallel": (lambda v: v >= 1, "at least 1"),
}


def check_executor(executor: str, ray_address: str, parallel: int, slot_resources: str) -> dict:
    """Refuse, in one line with exit 2, an executor set-up that cannot run; the slot's resources otherwise."""
    import importlib.util

    if parallel > 1 and executor != "ray":
        fail("--parallel above 1 needs --executor ray (on one machine: --executor ray --ray-address local)")
    try:
        slot = json.loads(slot_resources)
    except ValueError:
        slot = None
    if (
        not isinstance(slot, dict)
        or not slot
        or not all(isinstance(k, str) and isinstance(v, (int, float)) and 0 < v < math.inf for k, v in slot.items())
    ):
        fail(f"--slot-resources must be a JSON object of positive numbers, e.g. '{{\"CPU\": 1}}', got {slot_resources}")
    if "CPU" in slot and slot["CPU"] != int(slot["CPU"]):
        fail(f"--slot-resources: CPU must be a whole number of CPUs (a slot is pinned to them), got {slot['CPU']}")
    if executor == "ray":
        if ray_address != "local" and ":" not in ray_address and ray_address != "auto":
            fail(f"--ray-address must be local, auto or HOST:PORT of a Ray head (ray start --head), got {ray_address}")
        if importlib.util.find_spec("ray") is None:
            fail("--executor ray needs Ray installed: uv sync --extra ray (or pip install 'arx[ray]')")
    return slot


def check_numbers(values: dict) -> None:
    """Refuse, in one line with exit 2, a number that `start` cannot use (None: not given)."""
    for name, (ok, what) in NUMBERS.items():
        value = values.get(name)
        if value is not None and not ok(value):
            fail(f"--{name.replace('_', '-')} must be {what}, got {value:g}")


def policy_options(command):
    """One `start` option per field of the keep rule's `Policy`, with its default and meaning."""
    from dataclasses import fields

    from .policy import Policy

    for f in reversed(fields(Policy)):
        command = click.option(
            f"--{f.name.replace('_', '-')}",
            type=type(f.default),
            default=f.default,
            show_default=True,
            help=f"keep rule: {f.metadata['help']}",
        )(command)
    return command


@app.command()
@click.option(
    "--program",
    required=True,
    help="research program: model (edits trainer/train.py) or data (edits prepare.py, data_sources.py)",
)
@click.option(
    "--tag",
    required=True,
    help="campaign name, e.g. mar15; the branch is autoresearch/<tag> (model) or autoresearch-data/<tag>",
)
@click.option(
    "--agent",
    default="auto",
    show_default=True,
    help="auto (claude if ANTHROPIC_API_KEY is set, else offline), claude, offline (local search over the numeric "
    "constants), or optuna (a TPE study over them, kept in the state folder)",
)
@click.option("--model", default=None, help="Claude model for the claude agent (default: a current Sonnet)")
@click.option(
    "--thinking-tokens",
    default=0,
    show_default=True,
    help="thinking per Claude call, 0: off, else at least 1024: the budget on models that take one, "
    "adaptive thinking (depth set by --effort) on models that require it; either way it adds to max_tokens",
)
@click.option(
    "--effort",
    type=click.Choice(EFFORTS),
    default=None,
    help="Claude's output_config.effort (default: the API's, high); sets the depth of adaptive thinking",
)
@click.option(
    "--fallback-model",
    default=None,
    help="Claude model to ask once more when the main model refuses (stop reason refusal)",
)
@click.option("--max-rounds", default=12, show_default=True, help="tool rounds Claude may use per proposal")
@click.option(
    "--dataset", default="stdlib", show_default=True, help="dataset registry name (stdlib is embedded and offline)"
)
@click.option(
    "--budget", default=300.0, show_default=True, help="training seconds per run (startup and evaluation are extra)"
)
@click.option(
    "--max-experiments",
    type=int,
    default=None,
    help="stop after this many experiments (baselines and re-runs not counted)",
)
@click.option("--max-cost-usd", type=float, default=None, help="stop before an LLM call could take spending past this")
@click.option(
    "--slots",
    default=1,
    show_default=True,
    help="trainers allowed at once across all campaigns of this state directory",
)
@click.option("--stall-s", default=120.0, show_default=True, help="kill a trainer that prints nothing for this long")
@click.option(
    "--memory-mb",
    type=float,
    default=None,
    help="kill a trainer whose process tree RSS+swap passes this (default: 85% of RAM, shared by --parallel runs)",
)
@click.option("--seed", default=0, show_default=True, help="seed for training runs and the offline agent")
@click.option("--base", default=None, help="commit to branch from (default: HEAD)")
@click.option("--foreground", is_flag=True, help="run in this terminal instead of detaching")
@click.option(
    "--unsafe-no-sandbox",
    is_flag=True,
    help="run candidate code unconfined when no sandbox can be set up (never needed where `doctor` shows one)",
)
@click.option(
    "--executor",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="where runs train: local (subprocesses on this machine) or ray (exclusive slots on a Ray cluster; "
    "the held-out documents and the scoring stay here)",
)
@click.option(
    "--ray-address",
    default="local",
    show_default=True,
    help="with --executor ray: HOST:PORT of the head (`ray start --head` prints it), auto (RAY_ADDRESS or a "
    "cluster started on this machine), or local (start a Ray instance here with --parallel slots)",
)
@click.option(
    "--parallel",
    default=1,
    show_default=True,
    help="candidates in flight at once (above 1 needs --executor ray); each is judged against the champion it "
    "was built on and rebased and re-measured if the champion moved",
)
@click.option(
    "--slot-resources",
    default='{"CPU": 1}',
    show_default=True,
    help='what one run holds exclusively on its node, as JSON: {"CPU": 8}, {"GPU": 1}; CPUs are pinned',
)
@click.option("--state-dir", type=click.Path(path_type=Path), default=None, help=STATE_HELP)
@policy_options
def start(
    program,
    tag,
    agent,
    model,
    thinking_tokens,
    effort,
    fallback_model,
    max_rounds,
    dataset,
    budget,
    max_experiments,
    max_cost_usd,
    slots,
    stall_s,
    memory_mb,
    seed,
    base,
    foreground,
    unsafe_no_sandbox,
    executor,
    ray_address,
    parallel,
    slot_resources,
    state_dir,
    **policy,
) -> None:
    """Start a campaign, or resume it if it stopped or died. Detaches unless --foreground."""
    if program not in PROGRAMS:
        fail(f"unknown program {program!r}; choose one of: {', '.join(PROGRAMS)}")
    if not TAG_PATTERN.match(tag):
        fail(f"bad tag {tag!r}: use letters, digits, '.', '_' or '-' (at most 64, starting with a letter or digit)")
    if agent not in ("auto", "claude", "offline", "optuna"):
        fail(f"unknown agent {agent!r}; choose auto, claude, offline or optuna")
    check_numbers(locals() | policy)
    slot = check_executor(executor, ray_address, parallel, slot_resources)
    if executor == "ray" and unsafe_no_sandbox:
        fail("--executor ray cannot run unsandboxed: unconfined candidate code could reach the Ray cluster")
    for name in filter(None, (model, fallback_model)):
        try:
            model_facts(name)
        except KeyError as e:
            fail(e.args[0])
    levels = model_facts(model or DEFAULT_MODEL)["efforts"]
    if effort and effort not in levels:
        fail(
            f"--effort {effort} is not available on {model or DEFAULT_MODEL} (its levels: "
            f"{', '.join(levels) or 'none'})"
        )
    import psutil

    from trainer import blas

    from . import daemon  # the daemon's imports (sqlmodel, git) are heavy; status and runs do without
    from .config import Settings
    from .policy import Policy
    from .worktree import GitError

    settings = Settings(
        state_dir=(state_dir or default_state_dir()).resolve(),
        program=program,
        tag=tag,
        dataset=dataset,
        budget_s=budget,
        max_experiments=max_experiments,
        max_cost_usd=max_cost_usd,
        slots=slots,
        seed=seed,
        stall_s=stall_s,
        memory_mb=memory_mb or 0.85 * psutil.virtual_memory().total / 2**20 / parallel,  # runs in flight share it
        unsafe_no_sandbox=unsafe_no_sandbox,
        policy=Policy(**policy),
        executor=executor,
        ray_address=ray_address,
        parallel=parallel,
        slot_resources=slot,
    )
    if warning := blas.slow_warning():
        print(warning, flush=True)
    try:
        code = (
            daemon.detach(settings, sys.argv[1:])
            if not foreground
            else daemon.run_foreground(
                settings,
                lambda: make_agent(agent, model, seed, thinking_tokens, max_rounds, effort, fallback_model),
                base,
            )
        )
    except (daemon.UserError, GitError) as e:
        fail(str(e))
    raise SystemExit(code)


@app.command()
@click.option("--tag", default=None, help="only this tag (default: every running campaign)")
@click.option("--program", default=None, help="only this program")
@click.option("--state-dir", type=click.Path(path_type=Path), default=None, help=STATE_HELP)
def stop(tag, program, state_dir) -> None:
    """Stop running campaigns gracefully: the run in flight is aborted and recorded as interrupted."""
    from . import daemon

    messages = daemon.stop((state_dir or default_state_dir()).resolve(), tag, program)
    for m in messages:
        click.echo(m)
    if not messages:
        click.echo("no running campaign matched")


# ---------------------------------------------------------------------------------------------
# Reading the ledger
# ---------------------------------------------------------------------------------------------
def state_paths(state_dir: Optional[Path]) -> tuple[Path, Path]:
    state = (state_dir or default_state_dir()).resolve()
    return state, state / "experiments.db"


def console():
    from rich.console import Console

    return Console(soft_wrap=True)


def duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def bpb(value: Optional[float]) -> str:
    return f"{value:.4f}" if value is not None else "-"


def table(headers: list[str], rows: list[list[str]], title: str | None = None) -> None:
    """A rich table on a terminal, tab-separated plain text when piped."""
    out = console()
    if not out.is_terminal:
        print("\t".join(headers))
        for row in rows:
            print("\t".join(row))
        return
    from rich.table import Table

    t = Table(*headers, title=title, header_style="bold")
    for row in rows:
        t.add_row(*row)
    out.print(t)


def status_lines(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    headers = [
        "campaign",
        "state",
        "agent",
        "now",
        "runs",
        "best val_bpb",
        "vs baseline",
        "test_bpb",
        "sigma",
        "spent",
        "last keep",
    ]
    out = []
    for c in rows:
        state = c["state"] + (f" ({c['reason']})" if c["reason"] and c["state"] != "running" else "")
        if c["state"] == "running" and c["reason"]:
            state += f": {c['reason']}"
        f = c["in_flight"]
        if f:
            now = f"#{f['seq']} {f['phase']}"
            if f["elapsed_s"] is not None:
                now += f" {f['elapsed_s']:.0f}/{f['budget_s']:g}s"
            if f["loss"] is not None:
                now += f" loss {f['loss']:.3f} {f['tok_per_sec']:,.0f} tok/s"
        else:
            now = "-"
        runs = " ".join(f"{k} {v}" for k, v in sorted(c["runs"].items()))
        improvement = f"{-c['improvement']:+.4f}" if c["improvement"] is not None else "-"
        agent = (
            c["agent"]
            + (f" ({c['model']})" if c["model"] else "")
            + (f", sandbox {c['sandbox']}" if c["sandbox"] else "")
        )
        out.append(
            [
                f"{c['program']}/{c['tag']}",
                state,
                agent,
                now,
                runs or "-",
                bpb(c["best_val_bpb"]),
                improvement,
                bpb(c["best_test_bpb"]),
                bpb(c["noise_sigma"]),
                f"${c['cost_usd']:.2f}",
                duration(c["since_last_keep_s"]),
            ]
        )
    return headers, out


@app.command()
@click.option("--tag", default=None, help="only campaigns with this tag")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output (stable keys)")
@click.option("--watch", is_flag=True, help="refresh every 2 seconds until Ctrl-C")
@click.option("--state-dir", type=click.Path(path_type=Path), default=None, help=STATE_HELP)
def status(tag, as_json, watch, state_dir) -> None:
    """What every campaign is doing: state, run in flight, best result, noise, cost."""
    import json

    from . import report

    state, db = state_paths(state_dir)
    try:
        rows = report.status(db, state, tag)
    except FileNotFoundError as e:
        fail(str(e))
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        click.echo("no campaigns yet; start one: arx-daemon start --program model --tag NAME")
        return
    if not watch:
        headers, lines = status_lines(rows)
        table(headers, lines, title="arx campaigns")
        return
    import time

    from rich.live import Live
    from rich.table import Table

    def render():
        headers, lines = status_lines(report.status(db, state, tag))
        t = Table(
            *headers,
            title=f"arx campaigns  (refreshed {time.strftime('%H:%M:%S')}, Ctrl-C to quit)",
            header_style="bold",
        )
        for line in lines:
            t.add_row(*line)
        return t

    with Live(render(), console=console(), refresh_per_second=1) as live:
        try:
            while True:
                time.sleep(2)
                live.update(render())
        except KeyboardInterrupt:
            pass


@app.command()
@click.option("--tag", default=None, help="only this tag")
@click.option("--program", default=None, help="only this program")
@click.option("--status", "status_filter", default=None, help="only runs with this status (keep, discard, crash, ...)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--state-dir", type=click.Path(path_type=Path), default=None, help=STATE_HELP)
def runs(tag, program, status_filter, as_json, state_dir) -> None:
    """The ledger as a table, one row per run."""
    import json

    from . import report

    _, db = state_paths(state_dir)
    try:
        rows = report.runs(db, tag, program, status_filter)
    except FileNotFoundError as e:
        fail(str(e))
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return
    lines = [
        [
            f"{r['program']}/{r['tag']}",
            str(r["seq"]),
            r["kind"],
            r["status"],
            bpb(r["val_bpb"]),
            bpb(r["test_bpb"]),
            f"{r['tok_per_sec'] or 0:,.0f}",
            (r["description"] or "")[:60],
            (r["decision_reason"] or "")[:70],
        ]
        for r in rows
    ]
    table(["campaign", "seq", "kind", "status", "val_bpb", "test_bpb", "tok/s", "description", "decision"], lines)


@app.command()
@click.argument("run")
@click.option(
    "--full", is_flag=True, help="print the agent's conversation unabridged (system prompt and long blocks included)"
)
@click.option("--state-dir", type=click.Path(path_type=Path), default=None, help=STATE_HELP)
def show(run, full, state_dir) -> None:
    """One run in full: metrics, decision, diff, log tail, LLM calls, the agent's conversation."""
    from . import report, runner

    _, db = state_paths(state_dir)
    try:
        r = report.find_run(db, run)
    except (FileNotFoundError, ValueError) as e:
        fail(str(e))
    out = console()
    out.print(
        f"[bold]{r['program']}/{r['tag']} run #{r['seq']}[/bold] (id {r['id']}, {r['kind']}): "
        f"[bold]{r['status']}[/bold]",
        highlight=False,
    )
    out.print(f"description: {r['description']}", highlight=False, markup=False)
    if r["hypothesis"]:
        out.print(f"hypothesis:  {r['hypothesis']}", highlight=False, markup=False)
    out.print(f"decision:    {r['decision_reason'] or '-'}", highlight=False, markup=False)
    out.print(
        f"val_bpb {bpb(r['val_bpb'])}  test_bpb {bpb(r['test_bpb'])}  training {r['train_wall_s'] or '-'}s by "
        f"the daemon's clock  eval {r['eval_seconds'] or '-'}s  total {r['total_seconds'] or '-'}s",
        highlight=False,
    )
    out.print(
        f"the trainer claims: {r['training_seconds'] or '-'}s of training, {r['tok_per_sec'] or 0:,.0f} tok/s, "
        f"{r['steps'] or '-'} steps, {r['num_params'] or '-'} params, peak {r['peak_memory_mb'] or '-'} MB",
        highlight=False,
    )
    if r.get("scoring"):
        out.print(f"scorer: {r['scoring']}", highlight=False, markup=False)
    out.print(
        f"commit {r['commit'] or '-'}  parent {r['parent_commit'] or '-'}  started {r['started_at']}  ended "
        f"{r['ended_at'] or '-'}",
        highlight=False,
    )
    if r["diff"]:
        from rich.syntax import Syntax

        out.print(Syntax(r["diff"], "diff", theme="ansi_dark", word_wrap=True) if out.is_terminal else r["diff"])
    tail = r["error"] or (runner.tail(Path(r["run_dir"]) / "train.log", 15) if r["run_dir"] else "")
    if tail:
        out.print("[bold]log tail[/bold]")
        out.print(tail, highlight=False, markup=False)
    for c in r["llm_calls"]:
        out.print(
            f"llm {c['model']} {c['status']}: in {c['input_tokens']} (cache read {c['cache_read_tokens']}, write "
            f"{c['cache_write_tokens']}) out {c['output_tokens']}  ${c['cost_usd']:.4f}  {c['latency_s']:.1f}s "
            f"{c['error'] or ''}",
            highlight=False,
            markup=False,
        )
    if r.get("conversation"):
        import json

        from agents import conversation

        path = Path(r["conversation"])
        out.print(f"[bold]conversation[/bold] ({path})", highlight=False)
        try:
            out.print(conversation.render(json.loads(path.read_text()), full), highlight=False, markup=False)
        except (OSError, ValueError) as e:
            out.print(f"(unreadable: {e})", highlight=False, markup=False)


@app.command()
@click.option(
    "--tsv", is_flag=True, default=True, help="the 6-column results.tsv of the original autoresearch (the only format)"
)
@click.argument("path", type=click.Path(path_type=Path), required=False)
@click.option("--tag", default=None, help="only this tag")
@click.option("--program", default=None, help="only this program")
@click.option("--state-dir", type=click.Path(path_type=Path), default=None, help=STATE_HELP)
def export(tsv, path, tag, program, state_dir) -> None:
    """Write results.tsv (commit, val_bpb, memory_gb, avg_tok_sec, status, description)."""
    from . import report

    _, db = state_paths(state_dir)
    try:
        text = report.results_tsv(db, tag, program)
    except FileNotFoundError as e:
        fail(str(e))
    if path:
        path.write_text(text)
        click.echo(f"wrote {len(text.splitlines()) - 1} runs to {path}")
    else:
        sys.stdout.write(text)


@app.command()
@click.option("--tag", default=None, help="only this tag")
@click.option("--program", default=None, help="only this program")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=Path("progress.png"),
    show_default=True,
    help="PNG to write",
)
@click.option("--state-dir", type=click.Path(path_type=Path), default=None, help=STATE_HELP)
def plot(tag, program, output, state_dir) -> None:
    """Plot val_bpb of every run, the kept ones and the running best, test_bpb beside."""
    from . import report

    _, db = state_paths(state_dir)
    try:
        n = report.plot(db, output, tag, program)
    except (FileNotFoundError, ValueError) as e:
        fail(str(e))
    click.echo(f"plotted {n} runs to {output}")


def manual_spec(dataset: str, worktree: Path, run_dir: Path):
    """A Spec for running one phase by hand on a checkout (prepare, evaluate), sandboxed as a campaign would."""
    from . import experiment, sandbox
    from .corpus import DownloadError, UnknownDataset, materialize

    try:
        found = materialize(dataset)
    except (UnknownDataset, DownloadError) as e:
        fail(str(e))
    unsafe = sandbox.backend().name == "none"
    return experiment.Spec(
        program="model",
        worktree=worktree.resolve(),
        run_dir=run_dir.resolve(),
        corpus=found,
        budget_s=0,
        seed=0,
        state_dir=default_state_dir().resolve(),
        train_deadline_s=0,
        unsafe_no_sandbox=unsafe,
    )


@app.command()
@click.option("--dataset", default="stdlib", show_default=True, help="dataset registry name")
@click.option(
    "--worktree",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    default=Path("."),
    show_default=True,
    help="checkout whose trainer/prepare.py and data_sources.py prepare the data",
)
def prepare(dataset, worktree) -> None:
    """Download (if needed), split off the held-out documents, and prepare the tokenizer and token cache.

    Prints the prepared folder: pass it to a hand-run trainer as ARX_PREPARED_DIR."""
    from . import experiment

    spec = manual_spec(dataset, worktree, default_state_dir() / "runs" / "manual-prepare")
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    try:
        folder = experiment.prepare(spec, lambda: False, lambda phase, pid: None)
    except experiment.Failed as e:
        fail(f"{e.reason}\n{e.log_tail}")
    print(folder)


@app.command()
@click.option(
    "--run-dir",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    required=True,
    help="a training run's folder",
)
@click.option("--dataset", default="stdlib", show_default=True, help="dataset the run trained on")
@click.option(
    "--prepared",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    required=True,
    help="its ARX_PREPARED_DIR (the tokenizer)",
)
@click.option(
    "--worktree",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    default=Path("."),
    show_default=True,
    help="checkout whose trainer/train.py defines build_model",
)
def evaluate(run_dir, dataset, prepared, worktree) -> None:
    """Score a hand-run training with the trusted scorer (val_bpb, test_bpb as JSON)."""
    from . import experiment, scorer

    spec = manual_spec(dataset, worktree, run_dir)
    try:
        scores = scorer.evaluate(
            spec.run_dir,
            prepared.resolve(),
            spec.corpus,
            lambda: experiment.SandboxedModel(spec, lambda: False, lambda p, q: None),
        )
    except (scorer.Invalid, experiment.ModelDied) as e:
        fail(f"invalid: {e}")
    print(json.dumps({"val_bpb": scores.val_bpb, "test_bpb": scores.test_bpb} | scores.detail))


@app.command()
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="address to listen on; anything but loopback needs --token"
)
@click.option("--port", default=8765, show_default=True, help="TCP port")
@click.option(
    "--token",
    default=None,
    envvar="ARX_DASHBOARD_TOKEN",
    help="secret every request must carry (or $ARX_DASHBOARD_TOKEN)",
)
@click.option("--state-dir", type=click.Path(path_type=Path), default=None, help=STATE_HELP)
def serve(host, port, token, state_dir) -> None:
    """A live dashboard in the browser: campaigns, progress charts, runs, diffs. Read-only."""
    from .dashboard import app as dashboard

    if not dashboard.is_loopback(host) and not token:
        fail(f"--host {host} is reachable from other machines: set --token (every request must then carry it)")
    if not 0 <= port <= 65535:
        fail(f"--port must be 0-65535, got {port}")
    state, _ = state_paths(state_dir)
    try:
        sock = dashboard.bind(host, port)
    except OSError as e:
        fail(f"cannot listen on {host}:{port}: {e.strerror or e}")
    dashboard.serve(state, sock, token)


@app.command()
def doctor() -> None:
    """Check this machine: platform, MLX and its BLAS speed, git, disk, datasets, API key."""
    from . import doctor as checks

    problems = 0
    for c in checks.checks():
        mark = "ok " if c.ok else "FIX"
        click.echo(f"[{mark}] {c.name:9} {c.detail}")
        if c.fix:
            click.echo(f"      -> {c.fix}")
        problems += not c.ok
    raise SystemExit(1 if problems else 0)


@app.group("service")
def service_app() -> None:
    """Run a campaign as a user service that survives reboots."""


@service_app.command("install", context_settings={"ignore_unknown_options": True})
@click.option("--program", required=True, help="model or data")
@click.option("--tag", required=True, help="campaign tag")
@click.argument("extra", nargs=-1)
def service_install(program, tag, extra) -> None:
    """Write a systemd user unit (Linux) or launchd agent (macOS) for one campaign.

    Any further options are `start`'s (e.g. --budget 600) and are checked now, not at boot.
    """
    from . import service

    if program not in PROGRAMS:
        fail(f"unknown program {program!r}; choose one of: {', '.join(PROGRAMS)}")
    if not TAG_PATTERN.match(tag):
        fail(f"bad tag {tag!r}")
    try:
        parsed = start.make_context("start", ["--program", program, "--tag", tag, *extra])
    except click.UsageError as e:
        fail(f"{e.format_message()} (options after --tag are start's)")
    check_numbers(parsed.params)
    path, how = service.install(program, tag, list(extra or []), Path.home())
    click.echo(f"wrote {path}")
    click.echo(f"enable it with: {how}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
