"""The `arx-daemon` command line: commands that read like sentences.

arx-daemon start --program model --tag mar15
arx-daemon status
arx-daemon stop --tag mar15

Bad input gets one line that says what is wrong and how to fix it, and exit status 2, from every
command: a usage error, an unknown campaign or run (with what exists), a damaged ledger (with the
way back). Commands that only read load nothing heavy, so they answer at once.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
from pathlib import Path
from typing import Optional

import click

from agents.thinking import EFFORTS, MIN_THINKING_TOKENS

from . import formatting as fmt
from .programs import PROGRAMS, ROOT, TAG_PATTERN, StatePaths, default_state_dir, held_locks
from .report import ARX_COLUMNS
from .tables import Column


class Commands(click.Group):
    """click's group, answering a usage error (unknown option, missing value, bad choice) in one line, exit 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as e:  # a group named alone: its help, as click prints it
            click.echo(e.format_message())
            raise SystemExit(0) from None
        except click.UsageError as e:
            fail(f"{e.format_message()} (see {self.named(sys.argv[1:] if args is None else args)} --help)")
        except click.ClickException as e:
            fail(e.format_message())
        except click.Abort:
            click.echo("aborted", err=True)
            raise SystemExit(1) from None
        if standalone_mode:
            raise SystemExit(code if isinstance(code, int) else 0)
        return code

    def named(self, args: list[str]) -> str:
        """The command `args` name (`arx-daemon service install`), however the program was started."""
        names, group = ["arx-daemon"], self
        for arg in args:
            command = group.commands.get(arg) if isinstance(group, click.Group) else None
            if command is None:
                break
            names.append(arg)
            group = command
        return " ".join(names)


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
def app() -> None:
    """arx: a daemon that does ML research by itself.

    Start a campaign before bed; in the morning read `status`, `runs`, `plot`, or query
    state/experiments.db with sqlite3.
    """


STATE_HELP = "state directory (default: state/ in the arx checkout, or $ARX_STATE_DIR)"


def fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    raise SystemExit(2)


def state_paths(state_dir: Optional[Path]) -> tuple[Path, Path]:
    state = (state_dir or default_state_dir()).resolve()
    return state, state / "experiments.db"


def reads_ledger(command):
    """Answer every way reading the ledger can fail in one line with exit 2: no ledger yet, an unknown campaign or
    run (naming what exists), a damaged or busy ledger (naming the way back)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        import sqlite3

        from . import report
        from .ledger import backup

        try:
            return command(*args, **kwargs)
        except (report.NoLedger, report.Unknown) as e:
            fail(e.args[0])
        except sqlite3.Error as e:
            _, db = state_paths(kwargs.get("state_dir"))
            fail(backup.explain(db, e) or f"reading the ledger {db} failed: {e}")

    return wrapper


def make_agent(choice: str, seed: int, claude=None):
    """auto = Claude when ANTHROPIC_API_KEY is set, else the Optuna search (announced loudly: it left a champion
    3.5x further ahead than the local search on the same 30 experiments, docs/results.md); `claude` is the
    Claude agent `start` built (and checked) already."""
    if claude is not None:
        return claude
    if choice == "auto":
        print(
            "*** no ANTHROPIC_API_KEY: using the OFFLINE agent (Optuna: a seeded TPE search over numeric constants, "
            "no LLM) ***",
            flush=True,
        )
    if choice in ("auto", "optuna"):
        from agents.optuna_search import OptunaAgent

        return OptunaAgent(seed=seed)
    from agents.offline import OfflineAgent

    return OfflineAgent(seed=seed)


def claude_agent(model, thinking_tokens, effort, fallback_model, max_rounds, state_dir: Path):
    """The Claude agent, its model read from the Models API (kept in the state folder); says in start's first
    line what the thinking flags mean on that model, and refuses a model or flags it cannot use in one line."""
    if not os.environ.get("ANTHROPIC_API_KEY"):
        fail("--agent claude needs ANTHROPIC_API_KEY in the environment")
    from agents.claude import ClaudeAgent
    from agents.models import ModelError

    try:
        agent = ClaudeAgent(
            model=model,
            thinking_tokens=thinking_tokens,
            effort=effort,
            fallback_model=fallback_model,
            max_rounds=max_rounds,
            state_dir=state_dir,
        )
    except (ModelError, ValueError) as e:
        fail(str(e))
    except KeyError as e:  # no price for the model
        fail(e.args[0])
    print(agent.describe(), flush=True)
    for warning in agent.warnings():
        print(warning, flush=True)
    return agent


# what each numeric option of `start` must be (by its parameter name); click only checks that it is a number
NUMBERS = {
    "thinking_tokens": (
        lambda v: v == 0 or v >= MIN_THINKING_TOKENS,
        f"0 (off) or at least {MIN_THINKING_TOKENS} (the API's least thinking budget)",
    ),
    "max_rounds": (lambda v: v >= 1, "at least 1"),
    "budget_s": (lambda v: 0 < v < math.inf, "a positive number of seconds"),
    "max_experiments": (lambda v: v >= 0, "0 (baselines only) or more"),
    "max_cost_usd": (lambda v: 0 < v < math.inf, "a positive number of dollars"),
    "slots": (lambda v: v >= 1, "at least 1"),
    "startup_grace_s": (lambda v: 0 <= v < math.inf, "0 or a positive number of seconds"),
    "stall_s": (lambda v: 0 < v < math.inf, "a positive number of seconds"),
    "memory_mb": (lambda v: 0 < v < math.inf, "a positive number of MB"),
    "eval_timeout_s": (lambda v: 0 < v < math.inf, "a positive number of seconds"),
    "backoff_s": (lambda v: 0 < v < math.inf, "a positive number of seconds"),
    "seed": (lambda v: v >= 0, "0 or more"),
    "baseline_runs": (lambda v: v >= 1, "at least 1"),
    "min_delta": (lambda v: 0 <= v < math.inf, "0 or a positive number"),
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


def check_numbers(values: dict, command: click.Command) -> None:
    """Refuse, in one line with exit 2, a number that `start` cannot use (None: not given)."""
    flags = {p.name: p.opts[0] for p in command.params}
    for name, (ok, what) in NUMBERS.items():
        value = values.get(name)
        if value is not None and not ok(value):
            fail(f"{flags[name]} must be {what}, got {value:g}")


def policy_options(command):
    """One `start` option per field of the keep rule's `Policy`, with its default and meaning."""
    from dataclasses import fields

    from .campaign.policy import Policy

    for f in reversed(fields(Policy)):
        command = click.option(
            f"--{f.name.replace('_', '-')}",
            type=type(f.default),
            default=f.default,
            show_default=True,
            help=f"keep rule: {f.metadata['help']}",
        )(command)
    return command


def settings_fields() -> list:
    """The fields of `Settings` that `start` takes as options (in their order, the state directory last)."""
    from dataclasses import fields

    from .config import Settings

    found = [f for f in fields(Settings) if f.metadata.get("option", True)]
    return sorted(found, key=lambda f: f.name == "state_dir")


def settings_options(command):
    """One `start` option per field of `Settings` (orchestrator/config.py), with its default and meaning; the
    parameter is named after the field, the flag too unless the field says otherwise (`--budget` for budget_s)."""
    import types
    import typing
    from dataclasses import MISSING

    from .config import Settings

    hints = typing.get_type_hints(Settings)
    for f in reversed(settings_fields()):
        kind, optional = hints[f.name], False
        if typing.get_origin(kind) in (typing.Union, types.UnionType):
            kind, optional = next(a for a in typing.get_args(kind) if a is not type(None)), True
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        flag = f"--{(f.metadata.get('flag') or f.name).replace('_', '-')}"
        extra: dict = {"help": f.metadata["help"]}
        if kind is bool:
            extra |= {"is_flag": True, "default": default}
        elif kind is Path:  # the state directory: resolved at run time ($ARX_STATE_DIR, or state/ in the checkout)
            extra |= {"type": click.Path(path_type=Path), "default": None}
        elif default is MISSING:
            extra |= {"required": True, "type": kind}
        elif kind is dict:  # taken as JSON
            extra |= {"default": json.dumps(default), "show_default": True}
        elif f.metadata.get("choices"):
            extra |= {"type": click.Choice(f.metadata["choices"]), "default": default, "show_default": True}
        else:
            extra |= {"type": kind, "default": default, "show_default": default is not None and not optional}
        command = click.option(flag, f.name, **extra)(command)
    return command


def fast_refusals(program: str, tag: str, state_dir: Optional[Path]) -> Path:
    """What `start` can refuse at once, before it loads the daemon or creates anything: a campaign already running,
    a checkout that is not a git repository, a damaged ledger. Returns the state directory."""
    from . import doctor
    from .ledger import backup
    from .measure import slots
    from .programs import running_message

    state = (state_dir or default_state_dir()).resolve()
    paths = StatePaths(state, program, tag)
    pid = slots.holder(paths.lock)
    if pid is not None:
        fail(running_message(paths, pid))
    repo = doctor.repository(ROOT)
    if not repo.ok:
        fail(f"{repo.detail}; {repo.fix}")
    if paths.db.exists() and (problem := backup.soundness(paths.db)):
        fail(backup.damaged(paths.db, problem))
    return state


def noise_warning(state: Path, program: str, tag: str, dataset: str, budget_s: float, policy) -> str | None:
    """The noise warning for a campaign about to start: from its own noise when it resumes, else from the latest
    campaign here with the same program, dataset and budget (None if neither measured any)."""
    from . import figures, report

    db = state / "experiments.db"
    if not db.exists():
        return None
    con = report.connect(db)
    try:
        found = report.campaigns(con)
        same = [c for c in found if c["program"] == program and c["tag"] == tag]
        like = [
            c
            for c in found
            if c["program"] == program and c["dataset"] == dataset and c["budget_s"] == budget_s and c["noise_dof"]
        ]
        chosen = same[0] if same and same[0]["noise_dof"] else (like[-1] if like else None)
        if chosen is None:
            return None
        head = report.summary(con, state, chosen)
        gains = report.similar_gains(con).get((program, dataset), [])
    finally:
        con.close()
    name = f"{program}/{tag}" if chosen in same else f"{program}/{tag} (like {report.name(chosen)}, same budget)"
    return figures.noise_warning(name, policy, figures.noise_of(chosen), head["best_val_bpb"], lambda: gains)


@app.command()
@settings_options
@click.option(
    "--agent",
    default="auto",
    show_default=True,
    help="auto (claude if ANTHROPIC_API_KEY is set, else optuna), claude, offline (local search over the numeric "
    "constants, one at a time), or optuna (a TPE study over them, kept in the state folder)",
)
@click.option(
    "--model",
    default=None,
    help="Claude model for the claude agent (default: the current Sonnet); read from the Models API at start",
)
@click.option(
    "--thinking-tokens",
    default=0,
    show_default=True,
    help="thinking per Claude call. 0: the least the model allows (off; between_tools on Sonnet 5.5; adaptive at "
    "the lowest effort where it cannot be turned off); else at least 1024: adaptive thinking where the model takes "
    "it, else a budget of that many tokens; either way it adds to max_tokens. start's first line says which",
)
@click.option(
    "--effort",
    type=click.Choice(EFFORTS),
    default=None,
    help="Claude's output_config.effort (default: the model's own, high or medium); sets the depth of adaptive "
    "thinking",
)
@click.option(
    "--fallback-model",
    default=None,
    help="Claude model to ask once more when the main model refuses (stop reason refusal)",
)
@click.option("--max-rounds", default=12, show_default=True, help="tool rounds Claude may use per proposal")
@click.option("--base", default=None, help="commit to branch from (default: HEAD)")
@click.option("--foreground", is_flag=True, help="run in this terminal instead of detaching")
@policy_options
def start(agent, model, thinking_tokens, effort, fallback_model, max_rounds, base, foreground, **options) -> None:
    """Start a campaign, or resume it if it stopped or died. Detaches unless --foreground."""
    from .campaign.policy import Policy

    policy = {k: options.pop(k) for k in Policy.help()}
    program, tag, seed = options["program"], options["tag"], options["seed"]
    if program not in PROGRAMS:
        fail(f"unknown program {program!r}; choose one of: {', '.join(PROGRAMS)}")
    if not TAG_PATTERN.match(tag):
        fail(f"bad tag {tag!r}: use letters, digits, '.', '_' or '-' (at most 64, starting with a letter or digit)")
    if agent not in ("auto", "claude", "offline", "optuna"):
        fail(f"unknown agent {agent!r}; choose auto, claude, offline or optuna")
    check_numbers(locals() | options | policy, start)
    executor, parallel, unsafe_no_sandbox = options["executor"], options["parallel"], options["unsafe_no_sandbox"]
    options["slot_resources"] = check_executor(executor, options["ray_address"], parallel, options["slot_resources"])
    if executor == "ray" and unsafe_no_sandbox:
        fail("--executor ray cannot run unsandboxed: unconfined candidate code could reach the Ray cluster")
    options["state_dir"] = fast_refusals(program, tag, options["state_dir"])
    claude = None
    if agent == "claude" or (agent == "auto" and os.environ.get("ANTHROPIC_API_KEY")):
        claude = claude_agent(model, thinking_tokens, effort, fallback_model, max_rounds, options["state_dir"])
    if warning := noise_warning(
        options["state_dir"], program, tag, options["dataset"], options["budget_s"], Policy(**policy)
    ):
        print(warning, flush=True)
    import psutil

    from inside import blas

    from . import daemon  # the daemon's imports (sqlmodel, git) are heavy; status and runs do without
    from .campaign.worktree import GitError
    from .config import Settings

    if options["memory_mb"] is None:  # runs in flight share it
        options["memory_mb"] = 0.85 * psutil.virtual_memory().total / 2**20 / parallel
    settings = Settings(**options, policy=Policy(**policy))
    if warning := blas.slow_warning():
        print(warning, flush=True)
    try:
        code = (
            daemon.detach(settings, sys.argv[1:])
            if not foreground
            else daemon.run_foreground(
                settings,
                lambda: make_agent(agent, seed, claude),
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
@reads_ledger
def stop(tag, program, state_dir) -> None:
    """Stop running campaigns gracefully: the run in flight is aborted and recorded as interrupted."""
    from . import report, tables

    state, db = state_paths(state_dir)
    held = held_locks(state, tag, program)  # a running daemon holds its lock, even before it reaches the ledger
    if not db.exists() and not held:
        tables.say(f"nothing to stop: no ledger at {db}")
        return
    found = []
    if db.exists():  # read even when a lock is held: a damaged ledger is one clear line, not a traceback
        con = report.connect(db)
        try:
            found = report.campaigns(con) if held else report.campaigns(con, tag, program)
        finally:
            con.close()
    if not held and not any(c["status"] == "running" for c in found):
        tables.say(f"nothing to stop: no campaign {'of those ' if tag or program else ''}is running")
        return
    from . import daemon  # loaded only when there is a daemon to signal (or a dead one to mark)

    for m in daemon.stop(state, tag, program):
        tables.say(m)


# ---------------------------------------------------------------------------------------------
# Reading the ledger
# ---------------------------------------------------------------------------------------------
STATUS_COLUMNS = [
    Column("campaign", 0),
    Column("state", 1, wrap=True, min_width=7),
    Column("best", 0, right=True),
    Column("vs base", 1, right=True),
    Column("now", 2, wrap=True, min_width=12),
    Column("kept/runs", 3, right=True),
    Column("drift", 4, right=True),
    Column("sigma", 5, right=True),
    Column("band", 6, right=True),
    Column("test_bpb", 7, right=True),
    Column("cost", 7, right=True),
    Column("last keep", 8, right=True),
    Column("agent", 9, wrap=True, min_width=10),
]


def now_text(c: dict) -> str:
    """What a campaign is doing: its runs training or being scored, a proposal under way, candidates waiting."""
    parts = []
    for f in c["in_flight"]:
        text = f"#{f['seq']} {f['phase']}"
        if f["elapsed_s"] is not None:
            text += f" {f['elapsed_s']:.0f}/{f['budget_s']:g}s"
        if f["loss"] is not None:
            text += f" loss {f['loss']:.3f} {f['tok_per_sec']:,.0f} tok/s"
        parts.append(text)
    parts += [f"#{r['seq']} proposing" for r in c["proposing"]]
    if c["waiting"]:
        parts.append(f"{', '.join('#' + str(r['seq']) for r in c['waiting'])} waiting for a verdict")
    return "; ".join(parts) or "-"


def status_rows(rows: list[dict]) -> list[list[str]]:
    out = []
    for c in rows:
        state = c["state"] + (f" ({c['reason']})" if c["reason"] else "")
        agent = (
            c["agent"]
            + (f" ({c['model']})" if c["model"] else "")
            + (f", sandbox {c['sandbox']}" if c["sandbox"] else "")
        )
        out.append(
            [
                f"{c['program']}/{c['tag']}",
                state,
                fmt.bpb(c["best_val_bpb"]),
                fmt.signed(-c["improvement"]) if c["improvement"] is not None else fmt.DASH,
                now_text(c),
                f"{c['kept']}/{c['total_runs']}",
                fmt.signed(c["drift"]),
                fmt.bpb(c["noise_sigma"]),
                fmt.bpb(c["band"]),
                fmt.bpb(c["best_test_bpb"]),
                fmt.dollars(c["cost_usd"]),
                fmt.duration(c["since_last_keep_s"]) + (" ago" if c["since_last_keep_s"] is not None else ""),
                agent,
            ]
        )
    return out


@app.command()
@click.option("--tag", default=None, help="only campaigns with this tag")
@click.option("--program", default=None, help="only this program")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output (stable keys)")
@click.option("--tsv", "as_tsv", is_flag=True, help="tab-separated text, as when piped")
@click.option("--watch", is_flag=True, help="refresh every 2 seconds until Ctrl-C")
@click.option("--state-dir", type=click.Path(path_type=Path), default=None, help=STATE_HELP)
@reads_ledger
def status(tag, program, as_json, as_tsv, watch, state_dir) -> None:
    """What every campaign is doing: state, runs in flight, the champion and its gain, noise, cost.

    best: the champion's mean val_bpb over its seeds; vs base: the kept changes' paired gains (it moves only at a
    keep); drift: how far the champion's mean moved since it was kept (re-measures); band: the gain a change must
    show at the fewest pairs on this noise (docs/guide.md, "What the numbers mean").
    """
    from . import report, tables

    state, db = state_paths(state_dir)
    rows = report.status(db, state, tag, program)
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return
    out = tables.console()
    if not rows:
        tables.say("no campaigns yet; start one: arx-daemon start --program model --tag NAME")
        return
    if not watch or as_tsv or not out.is_terminal:
        tables.show(STATUS_COLUMNS, status_rows(rows), as_tsv)
        for c in rows:
            if c["warning"] and (as_tsv or not out.is_terminal):
                click.echo(c["warning"], err=True)  # a script reads the rows on stdout, a person sees this
            elif c["warning"]:
                out.print(c["warning"], markup=False)
        return
    import time

    from rich.console import Group
    from rich.live import Live
    from rich.text import Text

    def render():
        found = report.status(db, state, tag, program)
        title = f"arx campaigns (refreshed {time.strftime('%H:%M:%S')}, Ctrl-C to quit)"
        table = tables.rich_table(STATUS_COLUMNS, status_rows(found), out.width, title)
        return Group(table, *(Text(c["warning"]) for c in found if c["warning"]))

    with Live(render(), console=out, refresh_per_second=1) as live:
        try:
            while True:
                time.sleep(2)
                live.update(render())
        except KeyboardInterrupt:
            pass


RUN_COLUMNS = [
    Column("campaign", 6),
    Column("#", 0, right=True),
    Column("kind", 4),
    Column("status", 0),
    Column("val_bpb", 1, right=True),
    Column("judged", 3, right=True),
    Column("test_bpb", 5, right=True),
    Column("tok/s", 7, right=True),
    Column("description", 0, wrap=True, min_width=16),
    Column("decision", 2, wrap=True, min_width=16),
]


@app.command()
@click.option("--tag", default=None, help="only this tag")
@click.option("--program", default=None, help="only this program")
@click.option("--status", "status_filter", default=None, help="only runs with this status (keep, discard, crash, ...)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--tsv", "as_tsv", is_flag=True, help="tab-separated text, as when piped")
@click.option("--state-dir", type=click.Path(path_type=Path), default=None, help=STATE_HELP)
@reads_ledger
def runs(tag, program, status_filter, as_json, as_tsv, state_dir) -> None:
    """The ledger as a table, one row per run; `judged` is a verdict's value: its mean over N pairs."""
    from . import report, tables

    _, db = state_paths(state_dir)
    rows = report.runs(db, tag, program, status_filter)
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return
    several = len({(r["program"], r["tag"]) for r in rows}) > 1
    columns = RUN_COLUMNS if several else RUN_COLUMNS[1:]
    lines = [
        ([f"{r['program']}/{r['tag']}"] if several else [])
        + [
            str(r["seq"]),
            r["kind"],
            r["status"],
            fmt.bpb(r["val_bpb"]),
            f"{fmt.bpb(r['judged_val_bpb'])}/{r['pairs']}" if r["pairs"] else fmt.DASH,
            fmt.bpb(r["test_bpb"]),
            fmt.number(r["tok_per_sec"]),
            r["description"] or "",
            " ".join(filter(None, ("[set aside]" if r["contended"] else "", r["decision_reason"] or r["note"]))),
        ]
        for r in rows
    ]
    if not lines and not as_tsv and tables.console().is_terminal:
        tables.say("no runs" + (f" with status {status_filter}" if status_filter else "") + " yet")
        return
    tables.show(columns, lines, as_tsv)


@app.command()
@click.argument("run")
@click.option(
    "--full", is_flag=True, help="print the agent's conversation unabridged (system prompt and long blocks included)"
)
@click.option("--state-dir", type=click.Path(path_type=Path), default=None, help=STATE_HELP)
@reads_ledger
def show(run, full, state_dir) -> None:
    """One run in full: metrics, decision and the runs it was judged on, diff, log tail, LLM calls, conversation."""
    from . import report, tables
    from .measure import runner

    _, db = state_paths(state_dir)
    r = report.find_run(db, run)
    out = tables.console()

    def say(text: str, **kw) -> None:
        out.print(text, markup=False, **kw)

    head = f"[bold]{r['program']}/{r['tag']} run #{r['seq']}[/bold] (id {r['id']}, {r['kind']})"
    out.print(f"{head}: [bold]{r['status']}[/bold]")
    say(f"description: {r['description'] or '-'}")
    if r["hypothesis"]:
        say(f"hypothesis:  {r['hypothesis']}")
    say(f"decision:    {r['decision_reason'] or '-'}")
    if r["note"]:
        say(f"note:        {r['note']}")
    judged = r["judged"]
    if judged and judged.get("verdict_of"):
        v = judged["verdict_of"]
        say(f"measured for the verdict on #{v['seq']} ({v['status']}): arx-daemon show {r['tag']}/{v['seq']}")
    if judged and judged.get("pairs"):
        say(
            f"judged on {len(judged['pairs'])} pair{'s' if len(judged['pairs']) != 1 else ''}: this candidate's mean "
            f"{fmt.bpb(judged['value'])}, mean paired gain {fmt.signed(judged['gain'])} (champion minus candidate)"
        )
        pairs = [
            [
                str(p["seed"]),
                f"#{p['champion_seq']}",
                fmt.bpb(p["champion"]),
                f"#{p['candidate_seq']}",
                fmt.bpb(p["candidate"]),
                fmt.signed(p["gain"]),
            ]
            for p in judged["pairs"]
        ]
        columns = [
            Column("seed", 0, right=True),
            Column("champion's run", 0),
            Column("val_bpb", 0, right=True),
            Column("candidate's run", 0),
            Column("val_bpb", 0, right=True),
            Column("gain", 0, right=True),
        ]
        out.print(tables.rich_table(columns, pairs, out.width))
        for a in judged["set_aside"]:
            say(f"set aside (never used): #{a['seq']}: it {a['why']}")
        if judged.get("rule"):
            say(f"the test: {judged['rule']}")
    say(
        f"this run's own measurement: val_bpb {fmt.bpb(r['val_bpb'])}  test_bpb {fmt.bpb(r['test_bpb'])}"
        + (f"  (seed {r['seed']})" if r.get("seed") is not None else "")
        + ("  set aside: got less of the machine than its partner" if r.get("contended") else "")
    )
    say(
        f"time: training {fmt.duration(r.get('train_wall_s'))} by the daemon's clock, scoring "
        f"{fmt.duration(r['eval_seconds'])}, agent {fmt.duration(r['agent_seconds'])}, total "
        f"{fmt.duration(r['total_seconds'])}"
    )
    say(
        f"the trainer claims: {fmt.duration(r['training_seconds'])} of training, {fmt.number(r['tok_per_sec'])} tok/s, "
        f"{fmt.number(r['steps'])} steps, {fmt.number(r['num_params'])} params, peak "
        f"{fmt.number(r['peak_memory_mb'])} MB"
    )
    if r.get("scoring"):
        say(f"scorer: {r['scoring']}")
    say(f"commit {(r['commit'] or '-')[:12]}  parent {(r['parent_commit'] or '-')[:12]}")
    say(f"started {fmt.timestamp(r['started_at'])}  ended {fmt.timestamp(r['ended_at'])}")
    if r["diff"]:
        from rich.syntax import Syntax

        if out.is_terminal:
            out.print(Syntax(r["diff"], "diff", theme="ansi_dark", word_wrap=True))
        else:
            say(r["diff"], soft_wrap=True)
    tail = r["error"] or (runner.tail(Path(r["run_dir"]) / "train.log", 15) if r["run_dir"] else "")
    if tail:
        out.print("[bold]log tail[/bold]")
        say(tail)
    for c in r["llm_calls"]:
        say(
            f"llm {c['model']} {c['status']}: in {c['input_tokens']} (cache read {c['cache_read_tokens']}, write "
            f"{c['cache_write_tokens']}) out {c['output_tokens']}  ${c['cost_usd']:.4f}  {c['latency_s']:.1f}s "
            f"{c['error'] or ''}".rstrip()
        )
    if r.get("conversation"):
        from agents import conversation

        path = Path(r["conversation"])
        say(f"conversation ({path})")
        try:
            say(conversation.render(json.loads(path.read_text()), full))
        except (OSError, ValueError) as e:
            say(f"(unreadable: {e})")


@app.command()
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False), required=False)
@click.option("--tsv", "as_tsv", is_flag=True, help="autoresearch's results.tsv (the default)")
@click.option("--json", "as_json", is_flag=True, help="the same rows as JSON, every column")
@click.option("--arx-columns", is_flag=True, help=f"add arx's columns: {', '.join(ARX_COLUMNS)}")
@click.option("--tag", default=None, help="the campaign's tag (needed when the ledger holds several)")
@click.option("--program", default=None, help="the campaign's program")
@click.option("--state-dir", type=click.Path(path_type=Path), default=None, help=STATE_HELP)
@reads_ledger
def export(path, as_tsv, as_json, arx_columns, tag, program, state_dir) -> None:
    """Write results.tsv as autoresearch does (commit, val_bpb, memory_gb, status, description): the baseline, then
    one row per judged candidate with the value it was judged on (its mean over its pairs)."""
    from . import report, tables

    if as_tsv and as_json:
        fail("choose one of --tsv and --json")
    _, db = state_paths(state_dir)
    found = report.results(db, tag, program)
    text = json.dumps(found, indent=2) + "\n" if as_json else report.results_tsv(found, arx_columns)
    if path is None:
        sys.stdout.write(text)
        return
    try:
        path.write_text(text)
    except OSError as e:
        fail(f"cannot write {path}: {e.strerror or e}")
    candidates = sum(1 for r in found if r["kind"] != "baseline")
    base = "the baseline and " if len(found) > candidates else ""
    tables.say(
        f"wrote {len(found)} rows to {path}: {base}{candidates} judged candidate{'s' if candidates != 1 else ''}"
    )


@app.command()
@click.option("--tag", default=None, help="only this tag")
@click.option("--program", default=None, help="only this program")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("progress.png"),
    show_default=True,
    help="PNG to write",
)
@click.option("--state-dir", type=click.Path(path_type=Path), default=None, help=STATE_HELP)
@reads_ledger
def plot(tag, program, output, state_dir) -> None:
    """Plot every measured run by run number, the kept experiments, and the running best (it steps at keeps)."""
    from . import report, tables

    _, db = state_paths(state_dir)
    try:
        n = report.plot(db, output, tag, program)
    except OSError as e:
        fail(f"cannot write {output}: {e.strerror or e}")
    tables.say(f"plotted {n} runs to {output}")


def manual_spec(dataset: str, worktree: Path, run_dir: Path):
    """A Spec for running one phase by hand on a checkout (prepare, evaluate), sandboxed as a campaign would."""
    from .measure import experiment, sandbox
    from .scoring.corpus import DownloadError, UnknownDataset, materialize

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
    from .measure import experiment

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
    from .measure import experiment
    from .scoring import scorer

    spec = manual_spec(dataset, worktree, run_dir)
    try:
        scores = scorer.evaluate(
            spec.run_dir,
            prepared.resolve(),
            spec.corpus,
            lambda vocab: experiment.SandboxedModel(spec, lambda: False, lambda p, q: None, vocab),
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
    from .web import app as dashboard

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
@click.option("--state-dir", type=click.Path(path_type=Path), default=None, help=STATE_HELP)
def doctor(state_dir) -> None:
    """Check this machine: platform, MLX and its BLAS speed, git, disk, datasets, sandbox, the ledger, API key."""
    from rich.table import Table

    from . import doctor as checks
    from . import tables

    state, _ = state_paths(state_dir)
    found = checks.checks(state)
    out = tables.console()
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")
    for c in found:
        detail = c.detail + (f"\n-> {c.fix}" if c.fix else "")
        grid.add_row("[ok ]" if c.ok else "[FIX]", c.name, detail)
    if out.is_terminal:
        out.print(grid, markup=False)
    else:  # piped: one check a line (and its fix on the next), whole
        for c in found:
            print(f"{'[ok ]' if c.ok else '[FIX]'} {c.name:9} {c.detail}")
            if c.fix:
                print(f"      -> {c.fix}")
    raise SystemExit(0 if all(c.ok for c in found) else 1)


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
    from . import service, tables

    if program not in PROGRAMS:
        fail(f"unknown program {program!r}; choose one of: {', '.join(PROGRAMS)}")
    if not TAG_PATTERN.match(tag):
        fail(f"bad tag {tag!r}")
    try:
        parsed = start.make_context("start", ["--program", program, "--tag", tag, *extra])
    except click.UsageError as e:
        fail(f"{e.format_message()} (options after --tag are start's)")
    check_numbers(parsed.params, start)
    path, how = service.install(program, tag, list(extra or []), Path.home())
    tables.say(f"wrote {path}")
    tables.say(f"enable it with: {how}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
