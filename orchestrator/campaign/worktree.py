"""Git for campaigns (GitPython): one worktree and branch per campaign, never the user's checkout."""

from __future__ import annotations

from pathlib import Path

import git

ARX_AUTHOR = git.Actor("arx", "arx@localhost")
# git as arx, whatever the user's identity or signing settings (commits and merges on campaign branches)
AS_ARX = [
    "git",
    "-c",
    f"user.name={ARX_AUTHOR.name}",
    "-c",
    f"user.email={ARX_AUTHOR.email}",
    "-c",
    "commit.gpgsign=false",
]


class GitError(Exception):
    pass


def open_repo(path: Path) -> git.Repo:
    try:
        return git.Repo(path, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError) as e:
        raise GitError(f"{path} is not inside a git repository") from e


def dirty_paths(repo: git.Repo, paths: list[str]) -> list[str]:
    """Which of `paths` have uncommitted changes (staged, unstaged or untracked)."""
    changed = (
        {d.a_path for d in repo.index.diff(None)} | {d.a_path for d in repo.index.diff("HEAD")}
        if repo.head.is_valid()
        else set()
    )
    changed |= set(repo.untracked_files)
    return sorted(p for p in paths if p in changed)


def ensure_worktree(repo: git.Repo, path: Path, branch: str, base: str) -> git.Repo:
    """The campaign's worktree on `branch`, created from `base` the first time."""
    path = path.resolve()
    if (path / ".git").exists():
        return git.Repo(path)
    repo.git.worktree("prune")
    if branch in repo.heads:
        repo.git.worktree("add", str(path), branch)
    else:
        repo.git.worktree("add", "-b", branch, str(path), base)
    return git.Repo(path)


def head(wt: git.Repo) -> str:
    return wt.head.commit.hexsha


def reset_hard(wt: git.Repo, commit: str) -> None:
    """Back to `commit` exactly: tracked edits reverted, untracked (not ignored) files removed."""
    wt.git.reset("--hard", commit)
    wt.git.clean("-fdq")


def changed_files(wt: git.Repo) -> list[str]:
    """Files the working tree changes against HEAD, new untracked files included."""
    wt.git.add("-A", "--intent-to-add")
    return sorted(set(wt.git.diff("HEAD", "--name-only").split()))


def diff(wt: git.Repo) -> str:
    wt.git.add("-A", "--intent-to-add")
    return wt.git.diff("HEAD")


def commit_all(wt: git.Repo, message: str) -> str:
    """Commit everything as arx, whatever the user's git identity or signing settings."""
    wt.git.add("-A")
    wt.git.execute([*AS_ARX, "commit", "-q", "--no-verify", "-m", message])
    return head(wt)


def commit_detached(wt: git.Repo, message: str, keep_ref: str) -> str:
    """Commit everything as arx on top of HEAD without moving the branch (a candidate in flight is never on it);
    the ref `keep_ref`/<sha> keeps the commit from git's garbage collection."""
    wt.git.add("-A")
    tree = wt.git.write_tree()
    if tree == wt.head.commit.tree.hexsha:
        raise GitError("it changes nothing")
    sha = wt.git.execute([*AS_ARX, "commit-tree", tree, "-p", "HEAD", "-m", message]).strip()
    wt.git.update_ref(f"{keep_ref}/{sha}", sha)
    return sha


def rebase_detached(wt: git.Repo, commit: str, onto: str, message: str, keep_ref: str) -> str:
    """`commit`'s change re-applied on `onto` as a new commit off the branch; GitError if it no longer applies.
    The worktree is left at `onto`."""
    reset_hard(wt, onto)
    try:
        wt.git.execute([*AS_ARX, "cherry-pick", "--no-commit", commit])
        return commit_detached(wt, message, keep_ref)
    except git.GitCommandError as e:
        said = str(e.stderr or e).strip()
        raise GitError(f"it conflicts with {onto[:10]}: {said.splitlines()[-1] if said else e}") from e
    finally:
        reset_hard(wt, onto)


def merge(wt: git.Repo, commit: str, message: str) -> str:
    """Merge `commit` into the worktree's branch as arx (fast-forward when possible); GitError on conflict."""
    try:
        wt.git.execute([*AS_ARX, "merge", "--no-edit", "--no-verify", "-m", message, commit])
    except git.GitCommandError as e:
        wt.git.execute(["git", "merge", "--abort"], with_exceptions=False)
        said = str(e.stderr or e).strip()
        raise GitError(f"merge of {commit[:10]} failed: {said.splitlines()[-1] if said else e}") from e
    return head(wt)
