"""What the peer contenders (contender_curator.py, contender_distilabel.py) share: their flags,
the loopback-only check, a scratch folder, the one-step records, and timing one run into the
JSON line bench/throughput.py reads. Each contender runs in its own venv with bench/ first on
sys.path, so this module is imported as `peer`."""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from collections.abc import Callable, Sized

#: requests in flight at once, as for the other contenders
CONCURRENCY = 256


def usage() -> tuple[float, float]:
    """(CPU seconds of this process and its waited-for children, peak RSS in MB of either)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime,
            max(me.ru_maxrss, kids.ru_maxrss) / 1024)


def setup(kind: str) -> tuple[argparse.Namespace, tempfile.TemporaryDirectory, list[dict[str, str]]]:
    """(--url and --n, a scratch folder for the peer's caches, the records: one prompt each)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--n", type=int, required=True)
    args = parser.parse_args()
    assert args.url.startswith("http://127.0.0.1:"), "the bench only talks to the loopback server"
    records = [{"instruction": f"record {i}"} for i in range(args.n)]
    return args, tempfile.TemporaryDirectory(prefix=f"bench-{kind}-"), records


def measure(kind: str, n: int, run: Callable[[], Sized], generations: Callable[[Sized], list]) -> None:
    """Time `run()`, check it answered every record, print the figures line."""
    cpu0, _ = usage()
    started = time.perf_counter()
    rows = run()
    elapsed = time.perf_counter() - started
    cpu1, rss = usage()
    assert len(rows) == n, len(rows)
    assert all(generations(rows)), "some records got no answer"
    print(json.dumps({"kind": kind, "n": n, "elapsed_s": elapsed, "cpu_s": cpu1 - cpu0,
                      "rss_mb": rss, "requests": n}))
