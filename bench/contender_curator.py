"""The one-step task on bespokelabs-curator, run by bench/throughput.py with
bench/.venv-curator/bin/python:

    bench/.venv-curator/bin/python bench/contender_curator.py --url http://127.0.0.1:PORT/v1 --n 2000

One chat completion per record, `[{"role": "user", "content": "record {i}"}]`, through
`curator.LLM` on its openai backend (online, aiohttp), against the loopback server only, at most
256 requests in flight. Prints one JSON line of figures, as throughput.py's own contenders do.

curator caches every run's requests and responses on disk, keyed by the dataset and prompt: here
its cache is a fresh temporary folder per run and CURATOR_DISABLE_CACHE is set, so nothing is
answered from an earlier run. Its PostHog telemetry is off (TELEMETRY_ENABLED=false), litellm
reads its bundled model-cost map instead of fetching one, and tiktoken's cl100k_base (curator
counts tokens for its rate limiter) comes from the copy litellm ships, not from the network.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from peer import CONCURRENCY, measure, setup


def main() -> None:
    args, tmp, records = setup("curator")
    litellm_dir = Path(importlib.util.find_spec("litellm").origin).parent
    os.environ.update({
        "OPENAI_API_KEY": "dummy", "OPENAI_BASE_URL": args.url,
        "CURATOR_CACHE_DIR": os.path.join(tmp.name, "curator"), "CURATOR_DISABLE_CACHE": "true",
        "TELEMETRY_ENABLED": "false", "CURATOR_VIEWER": "0", "CURATOR_DISABLE_RICH_DISPLAY": "1",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False",
        "TIKTOKEN_CACHE_DIR": str(litellm_dir / "litellm_core_utils" / "tokenizers"),
        "HF_HOME": os.path.join(tmp.name, "hf"), "HF_DATASETS_CACHE": os.path.join(tmp.name, "hf-datasets"),
        "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "HF_DATASETS_OFFLINE": "1",
        "TQDM_DISABLE": "1",
    })
    from bespokelabs import curator

    class OneStep(curator.LLM):
        def prompt(self, row):
            return [{"role": "user", "content": row["instruction"]}]

        def parse(self, row, response):
            return {"instruction": row["instruction"], "generation": response}

    llm = OneStep(
        model_name="shaping-bench", backend="openai",  # a name litellm has no price or size for
        backend_params={
            "base_url": args.url, "api_key": "dummy",
            "max_concurrent_requests": CONCURRENCY,
            # the loopback server sends no rate-limit headers: no limit but the concurrency
            "max_requests_per_minute": 100_000_000, "max_tokens_per_minute": 100_000_000_000,
        },
    )
    def run():
        result = llm(records, working_dir=os.path.join(tmp.name, "run"))
        return getattr(result, "dataset", result)

    measure("curator", args.n, run, lambda dataset: dataset["generation"])
    tmp.cleanup()

if __name__ == "__main__":
    main()
