"""How long `isf --version` and `isf --help` take, wall clock (median of 7 runs each).

    python bench/startup.py

Goal (issue 19): both under 0.25 s on the 2-CPU development machine. The package root and the
command groups import their modules on first use (shaping/_lazy.py, cli.app.LazyGroup).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

ISF = str(Path(sys.executable).with_name("isf"))


def wall(args: list[str], runs: int = 7) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([ISF, *args], capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    print("| command | median wall s |")
    print("| --- | ---: |")
    for args in (["--version"], ["--help"], ["pipeline", "--help"]):
        print(f"| isf {' '.join(args)} | {wall(args):.3f} |")


if __name__ == "__main__":
    main()
