"""One run of a pipeline at a time: a lock file beside its outputs, held through `filelock`.

`filelock` takes an operating-system lock (flock on Unix, a locked byte range on Windows), so
the lock is released when the process ends, however it ends (kill -9 included), and a stale
lock file never blocks the next run. Who holds the lock (pid, start time) is written to a
small file beside it (`NAME.lock.holder`), so that a refused run can say so.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

from filelock import FileLock, Timeout

from shaping.errors import ShapingError


class RunLock:
    def __init__(self, path: Path, name: str) -> None:
        self.path = Path(path)
        self.name = name
        self.holder_path = self.path.with_name(self.path.name + ".holder")
        self._lock: FileLock | None = None

    def __enter__(self) -> "RunLock":
        lock = FileLock(str(self.path))
        try:
            lock.acquire(timeout=0)
        except Timeout as exc:
            raise ShapingError(
                f"pipeline '{self.name}' is already running ({self._holder()}); wait for it to finish "
                f"(lock: {self.path})"
            ) from exc
        self._lock = lock
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        try:
            self.holder_path.write_text(f"pid {os.getpid()}, started {started}")
        except OSError:
            pass  # only a courtesy for the message above
        return self

    def __exit__(self, *exc: object) -> None:
        if self._lock is not None:
            try:
                self.holder_path.unlink(missing_ok=True)
            except OSError:
                pass
            self._lock.release()
            self._lock = None

    def _holder(self) -> str:
        try:
            text = self.holder_path.read_text(errors="replace")[:200].strip()
        except OSError:
            text = ""
        return " ".join(text.split()) or "another process"
