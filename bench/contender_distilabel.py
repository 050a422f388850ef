"""The one-step task on distilabel (`distilabel[openai]`), run by bench/throughput.py with
bench/.venv-distilabel/bin/python:

    bench/.venv-distilabel/bin/python bench/contender_distilabel.py --url http://127.0.0.1:PORT/v1 --n 2000

One chat completion per record, `[{"role": "user", "content": "record {i}"}]`, through
`TextGeneration` on `OpenAILLM`, against the loopback server only. Prints one JSON line of
figures, as throughput.py's own contenders do. distilabel runs each step in a process of its
own, so the CPU figure adds the children's (RUSAGE_CHILDREN) to this process's.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time

CONCURRENCY = 256


def usage() -> tuple[float, float]:
    """(CPU seconds of this process and its waited-for children, peak RSS in MB of either)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime,
            max(me.ru_maxrss, kids.ru_maxrss) / 1024)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--n", type=int, required=True)
    args = parser.parse_args()
    assert args.url.startswith("http://127.0.0.1:"), "the bench only talks to the loopback server"

    tmp = tempfile.TemporaryDirectory(prefix="bench-distilabel-")
    # no key of anyone's, nothing cached across runs, nothing sent to the Hugging Face Hub
    os.environ.update({
        "OPENAI_API_KEY": "dummy", "OPENAI_BASE_URL": args.url,
        "DISTILABEL_CACHE_DIR": tmp.name, "HF_HOME": os.path.join(tmp.name, "hf"),
        "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "HF_DATASETS_OFFLINE": "1",
        "DISTILABEL_LOG_LEVEL": "ERROR", "TQDM_DISABLE": "1",
    })
    from distilabel.models.llms import OpenAILLM
    from distilabel.pipeline import Pipeline
    from distilabel.steps import LoadDataFromDicts
    from distilabel.steps.tasks import TextGeneration

    records = [{"instruction": f"record {i}"} for i in range(args.n)]
    with Pipeline(name="bench-one-step", cache_dir=tmp.name) as pipeline:
        load = LoadDataFromDicts(data=records, batch_size=CONCURRENCY)
        generate = TextGeneration(
            llm=OpenAILLM(model="bench", base_url=args.url, api_key="dummy"),
            input_batch_size=CONCURRENCY,  # the requests of one batch are in flight together
            use_cache=False,
        )
        load >> generate

    cpu0, _ = usage()
    started = time.perf_counter()
    distiset = pipeline.run(use_cache=False)
    elapsed = time.perf_counter() - started
    cpu1, rss = usage()
    rows = distiset["default"]["train"]
    assert len(rows) == args.n, len(rows)
    assert all(rows["generation"]), "some records got no answer"
    tmp.cleanup()
    print(json.dumps({"kind": "distilabel", "n": args.n, "elapsed_s": elapsed, "cpu_s": cpu1 - cpu0,
                      "rss_mb": rss, "requests": args.n}))


if __name__ == "__main__":
    main()
