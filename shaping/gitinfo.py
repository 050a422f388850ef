"""The git commit a run came from, via gitpython; works outside a repository too."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict


class GitState(BaseModel):
    """The commit, whether the tree had changes, or why neither is known. Recorded in the
    manifest as it is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    commit: str | None
    dirty: bool | None
    note: str | None = None


def git_state(path: Path) -> GitState:
    try:
        import git
    except ImportError as exc:  # gitpython is installed, but its git binary may be missing
        return GitState(commit=None, dirty=None, note=f"gitpython unavailable: {exc}")
    try:
        repo = git.Repo(path, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return GitState(commit=None, dirty=None, note="not a git repository")
    try:
        with repo:
            commit = repo.head.commit.hexsha
            dirty = repo.is_dirty(untracked_files=True)
    except ValueError:  # a repository with no commits yet
        return GitState(commit=None, dirty=None, note="git repository has no commits")
    except git.GitError as exc:
        return GitState(commit=None, dirty=None, note=f"git failed: {exc}")
    return GitState(commit=commit, dirty=dirty)
