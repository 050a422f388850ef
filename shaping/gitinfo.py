"""The git commit a run came from, via gitpython; works outside a repository too."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class GitState:
    commit: str | None
    dirty: bool | None
    note: str | None = None


def git_state(path: Path) -> GitState:
    try:
        import git
    except ImportError as exc:  # gitpython is installed, but its git binary may be missing
        return GitState(None, None, f"gitpython unavailable: {exc}")
    try:
        repo = git.Repo(path, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return GitState(None, None, "not a git repository")
    try:
        with repo:
            commit = repo.head.commit.hexsha
            dirty = repo.is_dirty(untracked_files=True)
    except ValueError:  # a repository with no commits yet
        return GitState(None, None, "git repository has no commits")
    except git.GitError as exc:
        return GitState(None, None, f"git failed: {exc}")
    return GitState(commit, dirty)
