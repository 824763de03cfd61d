"""Starting, detaching, finding and stopping campaign daemons.

A running campaign holds an exclusive file lock (`state/locks/<program>-<tag>.lock`) for its whole
life, so "is it running?" is answered by the kernel, not by a pid that may have been reused:
a daemon killed with -9 drops its lock at once and a new `start` resumes the campaign.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .campaign import worktree
from .campaign.campaign import CampaignLoop, install_signal_handlers
from .config import Settings
from .ledger import backup, ledger
from .ledger.ledger import Campaign
from .measure import executor, slots
from .measure.executor import Unavailable
from .programs import PROGRAMS, ROOT, StatePaths, held_locks, running_message

DETACH_CONFIRM_S = 15.0
STOP_WAIT_S = 60.0


class UserError(Exception):
    """Bad input or state: one clear line for the user, exit code 2."""


def is_running(paths: StatePaths) -> int | None:
    """The pid of the daemon running this campaign, or None."""
    return slots.holder(paths.lock)


def check_dataset(dataset: str) -> None:
    """Materialize the dataset's training material and held-out split (downloads happen here, on the
    trusted side, before any sandboxed phase runs)."""
    from .scoring.corpus import DownloadError, UnknownDataset, materialize

    try:
        materialize(dataset)
    except (UnknownDataset, DownloadError) as e:
        raise UserError(str(e)) from e


def choose_sandbox(agent_name: str, unsafe: bool) -> str:
    """The sandbox candidate code will run in; a Claude campaign without one needs --unsafe-no-sandbox."""
    from .measure import sandbox

    found = sandbox.backend()
    if found.name != "none":
        return found.name
    if agent_name == "claude" and not unsafe:
        raise UserError(
            f"no sandbox is available ({found.detail}); candidate code from Claude would run with your files and "
            "secrets. "
            "Fix the sandbox (see `arx-daemon doctor`) or pass --unsafe-no-sandbox"
        )
    print(f"*** WARNING: no sandbox ({found.detail}): candidate code runs unconfined ***", flush=True)
    return "none"


def open_campaign(settings: Settings, agent_name: str, llm_model: str | None, base: str | None) -> Campaign:
    """The campaign row for (program, tag): resumed if it exists, else created with its worktree."""
    paths = StatePaths(settings.state_dir, settings.program, settings.tag)
    program = PROGRAMS[settings.program]
    existing = ledger.find_campaign(paths.db, settings.program, settings.tag)
    if existing:
        if existing.budget_s != settings.budget_s or existing.dataset != settings.dataset:
            print(
                f"note: resuming {paths.name} with its original budget {existing.budget_s:g}s and dataset "
                f"{existing.dataset} (flags ignored)",
                flush=True,
            )
        settings.budget_s, settings.dataset = existing.budget_s, existing.dataset
        existing.agent, existing.llm_model = agent_name, llm_model
        ledger.save(paths.db, existing)
        return existing
    repo = worktree.open_repo(settings.repo)
    dirty = worktree.dirty_paths(repo, [*program.editable, *program.readable])
    if dirty:
        raise UserError(
            f"uncommitted changes in {', '.join(dirty)}; commit or stash them first (campaigns branch from a commit)"
        )
    branch = program.branch(settings.tag)
    if branch in repo.heads:
        raise UserError(
            f"branch {branch} exists but no campaign in {paths.db} owns it; delete the branch or pick another --tag"
        )
    try:
        base_commit = repo.commit(base or "HEAD").hexsha
    except Exception as e:
        raise UserError(f"cannot resolve --base {base!r}: {e}") from e
    campaign = Campaign(
        tag=settings.tag,
        program=settings.program,
        branch=branch,
        worktree=str(paths.worktree.resolve()),
        base_commit=base_commit,
        agent=agent_name,
        llm_model=llm_model,
        dataset=settings.dataset,
        budget_s=settings.budget_s,
        settings=json.dumps(settings.limits_dict()),
    )
    ledger.save(paths.db, campaign)
    worktree.ensure_worktree(repo, paths.worktree, branch, base_commit)
    return campaign


def executor_for(settings: Settings) -> executor.Executor:
    """The executor a campaign's settings ask for; Ray is imported only here, and only for `ray`."""
    if settings.executor == "ray":
        from .measure.ray_executor import RayExecutor

        return RayExecutor(settings.ray_address, settings.slot_resources, settings.parallel)
    return executor.LocalExecutor()


def run_foreground(settings: Settings, make_agent, base: str | None) -> int:
    """Hold the campaign lock and run the loop in this process until it stops."""
    paths = StatePaths(settings.state_dir, settings.program, settings.tag)
    lock = slots.try_lock(paths.lock)
    if lock is None:
        raise UserError(already_running(paths))
    try:
        backup.take(paths.db)  # the way back if the ledger is ever damaged (`status` names it)
        check_dataset(settings.dataset)
        agent = make_agent()
        jail = choose_sandbox(agent.name, settings.unsafe_no_sandbox)
        settings.unsafe_no_sandbox = jail == "none"
        if settings.executor == "ray" and settings.unsafe_no_sandbox:
            raise UserError(
                "--executor ray needs a sandbox (see `arx-daemon doctor`): unconfined candidate code could reach "
                "the Ray cluster and forge other runs' results"
            )
        campaign = open_campaign(settings, agent.name, agent.model, base)
        campaign.sandbox = jail
        ledger.save(paths.db, campaign)
        try:
            runner = executor_for(settings)
        except Unavailable as e:
            raise UserError(str(e)) from None
        loop = CampaignLoop(settings, campaign, agent, runner)
        install_signal_handlers(loop)
        print(
            f"campaign {paths.name}: branch {campaign.branch}, worktree {campaign.worktree}, agent {agent.name}, "
            f"sandbox {jail}, budget {settings.budget_s:g}s, pid {os.getpid()}",
            flush=True,
        )
        reason = loop.run()
        print(f"campaign {paths.name} ended: {reason}", flush=True)
        return 0
    finally:
        lock.close()


def already_running(paths: StatePaths) -> str:
    pid = is_running(paths)
    return running_message(paths, pid)


def detach(settings: Settings, argv: list[str]) -> int:
    """Re-run this command with --foreground in a new session, logging to state/logs/."""
    paths = StatePaths(settings.state_dir, settings.program, settings.tag)
    if is_running(paths):
        raise UserError(already_running(paths))
    paths.log.parent.mkdir(parents=True, exist_ok=True)
    with open(paths.log, "ab") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", *argv, "--foreground"],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.time() + DETACH_CONFIRM_S
    while time.time() < deadline:
        if is_running(paths) == child.pid:
            print(f"started {paths.name} in the background (pid {child.pid})")
            print(f"  follow it:  tail -f {paths.log}")
            print("  check it:   arx-daemon status")
            print(f"  stop it:    arx-daemon stop --program {settings.program} --tag {settings.tag}")
            return 0
        if child.poll() is not None:
            print(f"error: the daemon exited at once (code {child.returncode}); its log says:", file=sys.stderr)
            print(open(paths.log, errors="replace").read()[-2000:], file=sys.stderr)
            return 1
        time.sleep(0.1)
    print(f"started pid {child.pid}, still starting up; follow it with: tail -f {paths.log}")
    return 0


def stop(state_dir: Path, tag: str | None, program: str | None, wait_s: float = STOP_WAIT_S) -> list[str]:
    """Ask every matching running campaign to stop and wait for each to let go of its lock."""
    from sqlmodel import select

    db = StatePaths(state_dir, "x", "x").db
    campaigns: dict[tuple[str, str], Campaign | None] = {}
    if db.exists():
        with ledger.session(db) as s:
            query = select(Campaign)
            if tag:
                query = query.where(Campaign.tag == tag)
            if program:
                query = query.where(Campaign.program == program)
            campaigns = {(c.program, c.tag): c for c in s.exec(query)}
    for paths in held_locks(state_dir, tag, program):
        campaigns.setdefault((paths.program, paths.tag), None)
    messages = []
    for (prog, name), c in campaigns.items():
        paths = StatePaths(state_dir, prog, name)
        pid = is_running(paths)
        if pid is None:
            if c is not None and c.status == "running":
                c.status, c.stop_reason = "stopped", "found dead by stop"
                ledger.save(db, c)
                messages.append(f"{paths.name} was not running (its daemon had died); marked stopped")
            continue
        os.kill(pid, signal.SIGTERM)
        end = time.time() + wait_s
        while time.time() < end and is_running(paths):
            time.sleep(0.2)
        messages.append(
            f"{paths.name} stopped (pid {pid})"
            if not is_running(paths)
            else f"{paths.name} (pid {pid}) is still stopping"
        )
    return messages
