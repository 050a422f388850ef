"""Throughput and memory of the dispatcher, side by side with raw client loops, in one run.

    python bench/throughput.py                 # N = 2,000 and 20,000; writes bench/RESULTS.md
    python bench/throughput.py --sizes 2000 --repeat 1   # a quicker look
    make bench

Each size runs every contender `--repeat` times (3), interleaved so that a busy moment of the
machine falls on all of them alike; the table shows the median of each figure.

A loopback OpenAI-compatible server (shaping.testing) answers every request after 50 ms, in its
own process; each contender runs in a fresh process of its own, so CPU time and peak RSS are
its alone. Contenders:

  raw-aiohttp    a plain aiohttp loop, a semaphore of 256: the baseline of the "× raw" column
  raw-pyreqwest  the same loop on pyreqwest, the client the HTTP providers use
  one-step       an isf pipeline, one `yield` per record, openai provider, max_concurrency 256
  three-step     two sequential yields and a `yield [a, b]`: 4 requests per record
  three+ann      the same with annotated output and the request cache on
  curator        the one-step task on bespokelabs-curator, in bench/.venv-curator
  distilabel     the one-step task on distilabel[openai], in bench/.venv-distilabel
  memory         100,000 records, one step, on the mock provider (no latency): peak RSS

curator and distilabel run from scripts of their own (bench/contender_*.py) with their own venv's
python; `make bench` creates the venvs (`make test` does not). Without a venv the table shows
that contender as skipped. `--contenders raw-aiohttp,curator,distilabel` runs only those (the
first is the baseline of the "× raw" column).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
from statistics import median
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LATENCY_S = 0.05
CONCURRENCY = 256


def usage() -> tuple[float, float]:
    """(CPU seconds of this process so far, peak RSS in MB)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime, r.ru_maxrss / 1024


# -- contenders, each run in its own process ----------------------------------------------------

async def raw_aiohttp(url: str, n: int) -> None:
    import aiohttp

    semaphore = asyncio.Semaphore(CONCURRENCY)
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def one(i: int) -> None:
            body = {"model": "bench", "messages": [{"role": "user", "content": f"record {i}"}]}
            async with semaphore:
                async with session.post(f"{url}/chat/completions", json=body) as response:
                    data = await response.json()
                    assert data["choices"][0]["message"]["content"]

        await asyncio.gather(*(one(i) for i in range(n)))


async def raw_pyreqwest(url: str, n: int) -> None:
    from pyreqwest.client import ClientBuilder

    semaphore = asyncio.Semaphore(CONCURRENCY)
    async with ClientBuilder().build() as client:
        async def one(i: int) -> None:
            body = {"model": "bench", "messages": [{"role": "user", "content": f"record {i}"}]}
            async with semaphore:
                response = await client.post(f"{url}/chat/completions").body_json(body).build().send()
                data = await response.json()
                assert data["choices"][0]["message"]["content"]

        await asyncio.gather(*(one(i) for i in range(n)))


RAW = {"raw-aiohttp": raw_aiohttp, "raw-pyreqwest": raw_pyreqwest}

# peers, each in a venv of its own (created by `make bench`): kind -> (venv, script)
EXTERNAL = {
    "curator": (REPO / "bench" / ".venv-curator", REPO / "bench" / "contender_curator.py"),
    "distilabel": (REPO / "bench" / ".venv-distilabel", REPO / "bench" / "contender_distilabel.py"),
}


def pipelines():
    from shaping.pipeline import Pipeline, TrainingSample, model_request

    class OneStep(Pipeline):
        name = "one-step"
        annotated = False
        workers = 1024
        m = Pipeline.model_dep("bench")

        def __init__(self, project, n):
            super().__init__(project)
            self.n = n

        def run(self):
            return self.run_task(self.task, records=({"id": str(i)} for i in range(self.n)))

        def task(self, record):
            answer = yield model_request([{"role": "user", "content": f"record {record['id']}"}], model=self.m)
            return TrainingSample(id=record["id"], messages=[
                {"role": "user", "content": f"record {record['id']}"},
                {"role": "assistant", "content": answer.get_text()}])

    class ThreeStep(OneStep):
        name = "three-step"

        def task(self, record):
            q = yield model_request(f"question for {record['id']}", model=self.m)
            a = yield model_request(q.get_text(), model=self.m)
            c1, c2 = yield [model_request(f"check a {a.get_text()}", model=self.m),
                            model_request(f"check b {a.get_text()}", model=self.m)]
            return TrainingSample(id=record["id"], messages=[
                {"role": "user", "content": q.get_text()},
                {"role": "assistant", "content": a.get_text() + c1.get_text()[:10] + c2.get_text()[:10]}])

    return OneStep, ThreeStep


def isf(kind: str, url: str, n: int, folder: Path) -> dict:
    from shaping import run_pipeline
    from shaping.config import Project

    provider = 'provider = "mock"' if kind == "memory" else f'provider = "openai"\nbase_url = "{url}"'
    (folder / "shaping.toml").write_text(f'[models.bench]\n{provider}\nmodel = "bench"\nmax_concurrency = {CONCURRENCY}\n')
    one, three = pipelines()
    cls = three if kind.startswith("three") else one
    pipeline = cls(Project.load(folder), n)
    result = run_pipeline(pipeline, annotate=kind == "three+ann", use_cache=kind == "three+ann")
    assert result.manifest.counts.samples == n, result.manifest.counts
    return {"requests": result.stats.requests}


def contender(kind: str, url: str, n: int) -> None:
    """Entry point of a contender's process: prints one JSON line of figures."""
    import aiohttp  # noqa: F401 - imports are not what is measured
    import pyreqwest.client  # noqa: F401
    import git  # noqa: F401 - gitpython, imported on first use by the runner
    import shaping.providers.openai  # noqa: F401
    import shaping.runner  # noqa: F401
    # what a run imports on first use (20 ms): the event loop and anyio's asyncio backend
    import anyio._backends._asyncio  # noqa: F401
    import uvloop  # noqa: F401

    with tempfile.TemporaryDirectory() as tmp:
        cpu0, _ = usage()
        started = time.perf_counter()
        if kind in RAW:
            asyncio.run(RAW[kind](url, n))
            extra = {"requests": n}
        else:
            extra = isf(kind, url, n, Path(tmp))
        elapsed = time.perf_counter() - started
        cpu1, rss = usage()
    print(json.dumps({"kind": kind, "n": n, "elapsed_s": elapsed, "cpu_s": cpu1 - cpu0, "rss_mb": rss, **extra}))


# -- the driver ------------------------------------------------------------------------------------

def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Skipped(Exception):
    """A peer contender that cannot run here (no venv) or failed: its row says why."""


def run_one(kind: str, url: str, n: int) -> dict:
    if kind in EXTERNAL:
        return run_external(kind, url, n)
    out = subprocess.run([sys.executable, __file__, "--contender", kind, "--url", url, "--n", str(n)],
                         capture_output=True, text=True, cwd=REPO)
    if out.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_external(kind: str, url: str, n: int) -> dict:
    venv, script = EXTERNAL[kind]
    python = venv / "bin" / "python"
    if not python.exists():
        raise Skipped(f"no {venv.relative_to(REPO)} (`make bench` creates it)")
    # the loopback server only; dummy keys; no telemetry (each script also turns off its library's)
    env = {**os.environ, "OPENAI_API_KEY": "dummy", "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1",
           "DO_NOT_TRACK": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([str(python), str(script), "--url", url, "--n", str(n)],
                         capture_output=True, text=True, cwd=REPO, env=env)
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines or not lines[-1].startswith("{"):
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"{kind} failed (exit {out.returncode}):\n{out.stderr[-4000:]}", file=sys.stderr)
        raise Skipped(f"failed: {tail[:160]}")
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="2000,20000")
    parser.add_argument("--memory-records", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per contender; medians are shown")
    parser.add_argument("--contender")
    parser.add_argument("--url")
    parser.add_argument("--n", type=int)
    parser.add_argument("--no-write", action="store_true", help="do not write bench/RESULTS.md")
    parser.add_argument("--contenders", default=",".join(CONTENDERS),
                        help="comma-separated, the first is the baseline (default: all of them)")
    args = parser.parse_args()
    if args.contender:
        return contender(args.contender, args.url, args.n)
    kinds = [k for k in args.contenders.split(",") if k]
    unknown = [k for k in kinds if k not in CONTENDERS]
    if unknown:
        parser.error(f"unknown contenders {unknown}; known: {', '.join(CONTENDERS)}")

    server = subprocess.Popen([sys.executable, "-c", "from shaping.testing.loopback import main; main()",
                               "openai", "0", str(LATENCY_S)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    url = server.stdout.readline().strip()
    rows = []
    try:
        for n in [int(s) for s in args.sizes.split(",")]:
            runs: dict[str, list[dict]] = {kind: [] for kind in kinds}
            skipped: dict[str, str] = {}
            for _ in range(args.repeat):
                for kind in kinds:
                    if kind in skipped:
                        continue
                    server_cpu = proc_cpu(server.pid)
                    try:
                        figures = run_one(kind, url, n)
                    except Skipped as why:
                        skipped[kind] = str(why)
                        continue
                    figures["server_cpu_s"] = proc_cpu(server.pid) - server_cpu
                    runs[kind].append(figures)
            baseline = None
            for kind in kinds:
                if kind in skipped:
                    rows.append({"kind": kind, "n": n, "skipped": skipped[kind]})
                    print(row_text(rows[-1]), flush=True)
                    continue
                figures = median_of(runs[kind])
                baseline = baseline or figures["req_per_s"]
                figures["ratio"] = figures["req_per_s"] / baseline
                rows.append(figures)
                print(row_text(figures), flush=True)
    finally:
        server.terminate()
        server.wait()
    if args.memory_records:
        figures = median_of([run_one("memory", "", args.memory_records) for _ in range(args.repeat)])
        figures["ratio"] = None
        figures["server_cpu_s"] = None
        rows.append(figures)
        print(row_text(figures), flush=True)
    if not args.no_write:
        write_results(rows)


CONTENDERS = ("raw-aiohttp", "raw-pyreqwest", "one-step", "three-step", "three+ann", "curator", "distilabel")


def median_of(runs: list[dict]) -> dict:
    """One row from repeated runs: the median of each rate and cost, the highest peak RSS."""
    first = runs[0]
    return {
        "kind": first["kind"], "n": first["n"], "requests": first["requests"], "runs": len(runs),
        "req_per_s": median([r["requests"] / r["elapsed_s"] for r in runs]),
        "cpu_us": median([r["cpu_s"] / r["requests"] * 1e6 for r in runs]),
        "rss_mb": max(r["rss_mb"] for r in runs),
        "server_cpu_s": median([r["server_cpu_s"] for r in runs]) if first.get("server_cpu_s") is not None else None,
    }


HEADER = ("| contender | records | records/s | requests/s | × raw aiohttp | CPU µs/request | peak RSS MB | server CPU s |\n"
          "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")


def row_text(f: dict) -> str:
    if "skipped" in f:
        return f"| {f['kind']} | {f['n']:,} | skipped: {f['skipped'].replace('|', '/')} | | | | | |"
    ratio = f"{f['ratio']:.2f}" if f.get("ratio") is not None else "-"
    server = f"{f['server_cpu_s']:.1f}" if f.get("server_cpu_s") is not None else "-"
    records_per_s = f["req_per_s"] * f["n"] / f["requests"]
    return (f"| {f['kind']} | {f['n']:,} | {records_per_s:,.0f} | {f['req_per_s']:,.0f} | {ratio} | "
            f"{f['cpu_us']:,.0f} | {f['rss_mb']:,.0f} | {server} |")


def write_results(rows: list[dict]) -> None:
    machine = f"{platform.machine()}, {os.cpu_count()} CPU(s), Python {platform.python_version()}"
    runs = next((r["runs"] for r in rows if "runs" in r), 0)
    text = (f"# Benchmark results\n\n{date.today().isoformat()} on {machine}.\n"
            f"Server: loopback OpenAI-compatible (shaping.testing), {LATENCY_S * 1000:.0f} ms per request, own process.\n"
            f"Each figure is the median of {runs} interleaved runs (the highest, for peak RSS); the "
            f"server shares the machine's {os.cpu_count()} CPU(s) with the contender.\n"
            f"curator and distilabel run the one-step task in venvs of their own (bench/contender_*.py); "
            f"distilabel's CPU includes its step processes.\n"
            f"Produced by `make bench` (bench/throughput.py).\n\n{HEADER}\n"
            + "\n".join(row_text(r) for r in rows) + "\n")
    (REPO / "bench" / "RESULTS.md").write_text(text)
    print(f"\nwrote {REPO / 'bench' / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
