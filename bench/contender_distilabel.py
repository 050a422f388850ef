"""The one-step task on distilabel (`distilabel[openai]`), run by bench/throughput.py with
bench/.venv-distilabel/bin/python:

    bench/.venv-distilabel/bin/python bench/contender_distilabel.py --url http://127.0.0.1:PORT/v1 --n 2000

One chat completion per record, `[{"role": "user", "content": "record {i}"}]`, through
`TextGeneration` on `OpenAILLM`, against the loopback server only. Prints one JSON line of
figures, as throughput.py's own contenders do. distilabel runs each step in a process of its
own, so the CPU figure adds the children's (RUSAGE_CHILDREN) to this process's.
"""

from __future__ import annotations

import os

from peer import CONCURRENCY, measure, setup


def main() -> None:
    args, tmp, records = setup("distilabel")
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

    with Pipeline(name="bench-one-step", cache_dir=tmp.name) as pipeline:
        load = LoadDataFromDicts(data=records, batch_size=CONCURRENCY)
        generate = TextGeneration(
            llm=OpenAILLM(model="bench", base_url=args.url, api_key="dummy"),
            input_batch_size=CONCURRENCY,  # the requests of one batch are in flight together
            use_cache=False,
        )
        load >> generate

    measure("distilabel", args.n, lambda: pipeline.run(use_cache=False)["default"]["train"],
            lambda rows: rows["generation"])
    tmp.cleanup()


if __name__ == "__main__":
    main()
