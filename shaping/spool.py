"""Results written to disk as they complete, in input order, so a run's memory stays flat.

A `Spool` is a temporary file of JSON lines beside the output it will become; renaming it into
place is the last step of a successful run. `SampleSpool` is what `run_task` returns: a
sequence of samples that reads them back from its file when iterated or indexed.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import overload

from shaping.samples import AnnotatedTrainingSample, TrainingSample

_serial = itertools.count()


def remove_leftovers(folder: Path, stem: str) -> list[Path]:
    """Delete spools a killed run of `stem` left behind (call it holding that pipeline's lock)."""
    pattern = re.compile(rf"^\.{re.escape(stem)}(\.errors|\.rejected)?\.\d+\.\d+\.spool$")
    removed = [p for p in folder.glob(f".{stem}*.spool") if pattern.match(p.name)]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


class Spool:
    #: lines (or bytes) kept before they go to the file and the digest together (one call each,
    #: not one a line); the bytes bound keeps memory flat with large lines (images, long turns)
    PENDING = 256
    PENDING_BYTES = 1 << 20

    def __init__(self, folder: Path, stem: str) -> None:
        self.path = folder / f".{stem}.{os.getpid()}.{next(_serial)}.spool"
        self._file = open(self.path, "wb")
        self._digest = hashlib.sha256()
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self.sha256: str | None = None

    def write(self, line: bytes) -> None:
        if self._file.closed:
            raise ValueError(f"{self.path.name}: written to after it was finished")
        self._pending.append(line)
        self._pending_bytes += len(line)
        if len(self._pending) >= self.PENDING or self._pending_bytes >= self.PENDING_BYTES:
            self._drain()

    def _drain(self) -> None:
        if self._pending:
            data = b"\n".join(self._pending) + b"\n"
            self._pending, self._pending_bytes = [], 0
            self._file.write(data)
            self._digest.update(data)

    def flush(self) -> None:
        if not self._file.closed:
            self._drain()
            self._file.flush()

    def finish(self) -> str:
        """Flush to disk and close for writing; returns the file's sha256."""
        if not self._file.closed:
            self.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self.sha256 = self._digest.hexdigest()
        return self.sha256

    def discard(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)


class SampleSpool(Spool, Sequence[TrainingSample]):
    """The samples of one `run_task`, in input order; len() is free, reading parses lines."""

    def __init__(self, folder: Path, stem: str, annotated: bool) -> None:
        super().__init__(folder, stem)
        self._model = AnnotatedTrainingSample if annotated else TrainingSample
        self._offsets: list[int] = []
        self._end = 0

    def write(self, line: bytes) -> None:
        self._offsets.append(self._end)
        self._end += len(line) + 1
        super().write(line)

    def __len__(self) -> int:
        return len(self._offsets)

    @overload
    def __getitem__(self, index: int) -> TrainingSample: ...
    @overload
    def __getitem__(self, index: slice) -> list[TrainingSample]: ...

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        offset = self._offsets[index]
        self.flush()
        with open(self.path, "rb") as f:
            f.seek(offset)
            return self._read(f.readline())

    def __iter__(self) -> Iterator[TrainingSample]:
        self.flush()
        with open(self.path, "rb") as f:
            for line in f:
                yield self._read(line)

    def _read(self, line: bytes) -> TrainingSample:
        if self._model is AnnotatedTrainingSample:
            return AnnotatedTrainingSample.from_line(line)
        return TrainingSample.model_validate_json(line)

    def __repr__(self) -> str:
        return f"<SampleSpool {len(self)} samples>"
