"""Model and data campaigns on one tag learn from each other (DESIGN.md §2): a keep on one is merged into the
other's branch, and the merge becomes that campaign's champion, re-baselined before its next judgment."""

from __future__ import annotations

from ..ledger import ledger
from ..ledger.ledger import Run
from ..ledger.statuses import Kind
from ..programs import LOCKED, PROGRAMS, Program
from . import worktree
from .record import CampaignRecord


def merge(rec: CampaignRecord, wt, repo, program: Program, refused: set[str]) -> Run | None:
    """Bring the sibling program's (same tag) latest kept commit into this branch; returns the new champion's
    (not yet measured) rebaseline row, or None when there was nothing to merge. Merges that conflict or touch
    anything but the two programs' editable files are refused once and remembered in `refused`."""
    other = next(p for p in PROGRAMS if p != program.name)
    tag = rec.campaign.tag
    sib = ledger.find_campaign(rec.db, other, tag)
    if sib is None or sib.best_run_id is None:
        return None
    with ledger.session(rec.db) as s:
        sib_champ = s.get(Run, sib.best_run_id)
    theirs, head = sib_champ.commit, rec.kept_head()
    if not theirs or theirs in refused or repo.is_ancestor(theirs, head):
        return None
    worktree.reset_hard(wt, head)
    try:
        merged = worktree.merge(wt, theirs, f"merge {other}/{tag} #{sib_champ.seq}: {sib_champ.description}")
    except worktree.GitError as e:
        refused.add(theirs)
        rec.event("merge", f"could not merge {other}/{tag} {theirs[:10]}: {e}")
        return None
    touched = wt.git.diff(head, merged, "--name-only").split()
    outside = [f for f in touched if f not in (*PROGRAMS[other].editable, *program.editable) or f in LOCKED]
    if outside:
        worktree.reset_hard(wt, head)
        refused.add(theirs)
        rec.event("merge", f"refused {other}/{tag} {theirs[:10]}: it changes {', '.join(outside)}")
        return None
    desc = f"merged {other}/{tag} #{sib_champ.seq} ({theirs[:10]}): {sib_champ.description}"
    champ = rec.champion()
    rec.update(sibling_commit=theirs)
    run = rec.new_run(Kind.REBASELINE, desc, commit=merged, rerun_of=champ.id if champ else None)
    rec.update(best_run_id=run.id)
    rec.event("merge", f"{desc}; re-baselining before the next judgment", run)
    return run
