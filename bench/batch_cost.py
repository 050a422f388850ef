"""What batch mode saves: the same two-step pipeline run online and in batch mode, side by side.

    python bench/batch_cost.py              # 2,000 records
    python bench/batch_cost.py --records 200
    make bench

A loopback fake of OpenAI's Batch API and Anthropic's Message Batches (shaping/testing/batch.py)
answers both runs the same way (from the request body); each batch ends 0.2 s after it is
submitted. Step one asks an OpenAI model for a question, step two an Anthropic model for the
answer, each priced at its list price (gpt-4o-mini, claude-sonnet-4-5 as of shaping.prices'
table). The line printed: each run's cost from its manifest, the ratio (0.50x: batch prices are
half the online ones), the rounds and batches of the batch run, its online calls (0), whether
the two outputs are byte for byte the same, and the wall time of each.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

KEY = "sk-bench-batch-0000000000"

PIPELINE = '''
from shaping.pipeline import Pipeline, TrainingSample, model_request


class Twostep(Pipeline):
    name = "twostep"
    annotated = False
    q = Pipeline.model_dep("q")
    a = Pipeline.model_dep("a")

    def run(self):
        return self.run_task(self.task, records=[{{"id": f"r{{i}}"}} for i in range({records})])

    def task(self, record):
        question = yield model_request(f"{{record['id']}}: write one question about tides", model=self.q)
        answer = yield model_request(question.get_text(), model=self.a)
        return TrainingSample(id=record["id"], messages=[
            {{"role": "user", "content": question.get_text()}},
            {{"role": "assistant", "content": answer.get_text()}}])
'''


def toml(server, batch: bool) -> str:
    from shaping.prices import BUILT_IN

    q_in, q_out = BUILT_IN["gpt-4o-mini"][:2]
    a_in, a_out = BUILT_IN["claude-sonnet-4-5"][:2]
    flag = "batch = true\nbatch_poll_s = 0.1\n" if batch else ""
    return (f'[models.q]\nprovider = "openai"\nmodel = "gpt-4o-mini"\nbase_url = "{server.openai_url}"\n'
            f'api_key_env = "BENCH_BATCH_KEY"\nprice_per_million_input = {q_in}\nprice_per_million_output = {q_out}\n'
            f'{flag}[models.a]\nprovider = "anthropic"\nmodel = "claude-sonnet-4-5"\nbase_url = "{server.anthropic_url}"\n'
            f'api_key_env = "BENCH_BATCH_KEY"\nprice_per_million_input = {a_in}\nprice_per_million_output = {a_out}\n'
            f'{flag}')


def run(root: Path, server, records: int, batch: bool) -> tuple[dict, float]:
    import json

    (root / "pipelines").mkdir(parents=True)
    (root / "shaping.toml").write_text(toml(server, batch))
    (root / "pipelines" / "twostep.py").write_text(PIPELINE.format(records=records))
    started = time.perf_counter()
    done = subprocess.run([str(Path(sys.executable).with_name("isf")), "pipeline", "run", "twostep", "-q"], cwd=root,
                          capture_output=True, text=True, env={**os.environ, "BENCH_BATCH_KEY": KEY})
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"batch_cost: the {'batch' if batch else 'online'} run failed: {done.stderr.strip()}")
    return json.loads((root / "training" / "data" / "twostep.manifest.json").read_text()), elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2000)
    args = parser.parse_args()
    from shaping.testing.batch import BatchServer

    with tempfile.TemporaryDirectory() as tmp, BatchServer(api_key=KEY, delay_s=0.2) as server:
        online, online_s = run(Path(tmp) / "online", server, args.records, batch=False)
        online_calls = len(server.online)
        server.online.clear()
        batch, batch_s = run(Path(tmp) / "batch", server, args.records, batch=True)
        same = ((Path(tmp) / "online/training/data/twostep.jsonl").read_bytes()
                == (Path(tmp) / "batch/training/data/twostep.jsonl").read_bytes())

    def cost(manifest: dict) -> float:
        return sum(u["cost_usd"] or 0.0 for u in manifest["usage"].values())

    rounds = max((b["round"] or 0 for b in batch["batches"]), default=0)
    print(f"batch_cost: {args.records:,} records x 2 steps (gpt-4o-mini, then claude-sonnet-4-5, list prices): "
          f"online ${cost(online):.4f} ({online_calls:,} calls, {online_s:.1f}s), "
          f"batch ${cost(batch):.4f} ({len(batch['batches'])} batches in {rounds} rounds, "
          f"{len(server.online)} online calls, {batch_s:.1f}s): {cost(batch) / cost(online):.2f}x the online cost; "
          f"outputs {'identical' if same else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
