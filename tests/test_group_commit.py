"""Group commit of the request cache: an answer is committed before its task sees it, alone at a
low rate and with the others at a high one, so that a run killed with kill -9 never pays twice
for an answer it had received."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import anyio
import pytest

from shaping.dispatch.cache import CacheWriteError, GroupCommitter, RequestCache, answer_row
from shaping.requests import LLMMessage, ModelResponse
from tests.conftest import write_project
from shaping.testing import Fault, LoopbackServer


def row(i: int) -> tuple:
    return answer_row(f"key{i}", "p", "m", f"r{i}", 0, [LLMMessage(role="user", content=f"question {i}")],
                      {"temperature": 0}, ModelResponse(text=f"answer {i}", model="m"))


class Commits:
    """Counts the transactions a cache commits, from the statements SQLite runs."""

    def __init__(self, cache: RequestCache) -> None:
        self.count = 0
        cache._db.set_trace_callback(self.saw)

    def saw(self, statement: str) -> None:
        if statement.strip().upper() == "COMMIT":
            self.count += 1


def committed(cache: RequestCache, keys: list[str]) -> set[str]:
    """The keys a reader in another connection finds: what is committed, not what is pending."""
    db = sqlite3.connect(cache.path)
    try:
        marks = ",".join("?" * len(keys))
        return {k for (k,) in db.execute(f"SELECT key FROM answers WHERE key IN ({marks})", keys)}
    finally:
        db.close()


async def store(cache: RequestCache, i: int) -> None:
    key, pipeline, model, record_id, step = row(i)[:5]
    await cache.store(key, pipeline, model, record_id, step, [LLMMessage(role="user", content=f"question {i}")],
                      {"temperature": 0}, ModelResponse(text=f"answer {i}", model="m"))


def test_answers_that_arrive_together_share_one_commit(tmp_path):
    cache = RequestCache(tmp_path)
    commits = Commits(cache)
    unseen: list[str] = []

    async def answer(i: int, go: anyio.Event) -> None:
        await go.wait()
        await store(cache, i)
        if committed(cache, [f"key{i}"]) != {f"key{i}"}:  # committed before the sender goes on
            unseen.append(f"key{i}")

    async def main() -> None:
        go = anyio.Event()
        async with anyio.create_task_group() as tg:
            for i in range(500):
                tg.start_soon(answer, i, go)
            await anyio.wait_all_tasks_blocked()
            go.set()  # 500 answers in one turn of the event loop

    anyio.run(main)
    assert unseen == []
    assert commits.count <= 2, commits.count  # one transaction for all (two if the turn splits)
    assert len(committed(cache, [f"key{i}" for i in range(500)])) == 500
    cache.close()


def test_an_answer_alone_is_committed_alone_and_at_once(tmp_path):
    cache = RequestCache(tmp_path)
    commits = Commits(cache)
    took = []

    async def main() -> None:
        for i in range(5):  # one at a time: each waits for nothing but its own commit
            started = time.monotonic()
            await store(cache, i)
            took.append(time.monotonic() - started)
            assert committed(cache, [f"key{i}"]) == {f"key{i}"}
            assert commits.count == i + 1

    anyio.run(main)
    assert max(took) < 0.2, took  # no timer: the old batches waited up to 0.25 s
    cache.close()


def test_lookups_see_an_answer_before_its_commit(tmp_path):
    cache = RequestCache(tmp_path)
    seen = []

    async def look() -> None:  # runs while the sender waits for the rest of the turn to join
        found = cache.get("key1")
        seen.append((found is not None and found.cached and found.text, committed(cache, ["key1"])))

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(store, cache, 1)
            tg.start_soon(look)

    anyio.run(main)
    assert seen == [("answer 1", set())]
    assert cache.get("key1").text == "answer 1" and committed(cache, ["key1"]) == {"key1"}
    cache.close()


def test_answers_that_arrive_during_a_commit_share_the_next():
    """With a commit that takes time (as the Ray cache actor's does), whatever arrives while it
    runs is committed next, in one batch; lookups see rows not yet committed."""
    batches: list[list[str]] = []
    began = release = None

    async def commit(rows: list[tuple]) -> None:
        batches.append([r[0] for r in rows])
        began.set()
        await release.wait()

    group = GroupCommitter(commit)
    returned: list[str] = []

    async def answer(i: int) -> None:
        await group.store(f"key{i}", row(i))
        returned.append(f"key{i}")

    async def main() -> None:
        nonlocal began, release
        began, release = anyio.Event(), anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(answer, 0)
            await began.wait()
            for i in range(1, 200):
                tg.start_soon(answer, i)
            await anyio.wait_all_tasks_blocked()
            assert returned == [] and len(batches) == 1
            assert group.get("key0") is not None and group.get("key150") is not None
            assert len(group.rows()) == 200
            release.set()
    anyio.run(main)
    assert batches == [["key0"], [f"key{i}" for i in range(1, 200)]]
    assert sorted(returned) == sorted(f"key{i}" for i in range(200))
    assert group.rows() == [] and group.commits == 2


def test_a_failed_commit_fails_every_sender_of_its_batch():
    async def commit(rows: list[tuple]) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    group = GroupCommitter(commit)
    failures = []

    async def answer(i: int) -> None:
        try:
            await group.store(f"key{i}", row(i))
        except CacheWriteError as exc:
            failures.append(str(exc))

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for i in range(3):
                tg.start_soon(answer, i)

    anyio.run(main)
    assert failures == ["the request cache could not store an answer: OperationalError: disk I/O error"] * 3


def test_a_cancelled_sender_still_commits_its_batch(tmp_path):
    cache = RequestCache(tmp_path)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for i in range(10):
                tg.start_soon(store, cache, i)
            await anyio.lowlevel.checkpoint()  # they have stored their rows and wait
            tg.cancel_scope.cancel()

    anyio.run(main)
    assert len(committed(cache, [f"key{i}" for i in range(10)])) == 10
    cache.close()


# -- kill -9 through a real run -------------------------------------------------------------------

PIPELINE = '''
from shaping.pipeline import Pipeline, TrainingSample, model_request


class Chain(Pipeline):
    name = "chain"
    annotated = False
    workers = 4
    api = Pipeline.model_dep("api")

    def run(self):
        return self.run_task(self.task, records=[{"id": f"r{i}"} for i in range(12)])

    def task(self, record):
        a = yield model_request(f"{record['id']} step0 start", model=self.api)
        b = yield model_request(f"{record['id']} step1 after <{a.get_text()}>", model=self.api)
        c = yield model_request(f"{record['id']} step2 after <{b.get_text()}>", model=self.api)
        return TrainingSample(id=record["id"], messages=[
            {"role": "user", "content": a.get_text()}, {"role": "assistant", "content": c.get_text()}])


if __name__ == "__main__":
    Chain().execute()
'''

TRIGGER = ("r6", 2)  # kill when r6's third request arrives: its second answer has reached the client


def parse(prompt: str) -> tuple[str, int]:
    record, step = prompt.split()[:2]
    return record, int(step.removeprefix("step"))


def body(received) -> str:
    return json.dumps(received.body, sort_keys=True)


def test_kill_9_never_repeats_an_answered_request(tmp_path):
    write_project(tmp_path, '[models.api]\nprovider = "openai"\nmodel = "m"\nbase_url = "{url}"\n'
                            'retry_backoff_s = 0.01\n')
    (tmp_path / "pipelines" / "chain.py").write_text(PIPELINE)
    cache_file = tmp_path / "training" / ".cache" / "requests.sqlite"
    answered: list[tuple[object, bool]] = []  # (request, answered before the kill)
    missing: list[str] = []  # requests that arrived before the answer they follow was committed
    started = threading.Event()
    pid: list[int] = []
    killed = threading.Event()

    def on_arrival(received) -> bool:
        """Runs in the server as each request arrives, before it is answered."""
        record, step = parse(received.last_user)
        if step > 0 and not killed.is_set():
            db = sqlite3.connect(f"file:{cache_file}?mode=ro", uri=True)
            try:
                found = db.execute("SELECT 1 FROM answers WHERE record_id = ? AND step = ?", (record, step - 1)).fetchone()
            finally:
                db.close()
            if found is None:
                missing.append(received.last_user)
        if (record, step) == TRIGGER and not killed.is_set():
            started.wait(10)
            os.kill(pid[0], signal.SIGKILL)
            killed.set()
        return True

    def reply(received) -> str:
        answered.append((received, not killed.is_set()))
        return f"echo: {received.last_user}"

    with LoopbackServer("openai", reply=reply) as server:
        toml = tmp_path / "shaping.toml"
        toml.write_text(toml.read_text().replace("{url}", server.base_url))
        server.fail_when(on_arrival, Fault(latency_s=0.01))  # a few requests in flight at once
        first = subprocess.Popen([sys.executable, "pipelines/chain.py", "-q"], cwd=tmp_path,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        pid.append(first.pid)
        started.set()
        _, stderr = first.communicate(timeout=120)
        assert first.returncode == -signal.SIGKILL, (first.returncode, stderr)
        assert killed.is_set()
        first_received = list(server.received)

        server.reset()
        server.reply = lambda received: f"echo: {received.last_user}"
        second = subprocess.run([sys.executable, "pipelines/chain.py", "-q"], cwd=tmp_path,
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stderr
        second_bodies = {body(r) for r in server.received}

    assert missing == [], "a record's next request arrived before its previous answer was committed"
    # an answer reached the client when the same record's next request arrived (it quotes the answer)
    arrived = {parse(r.last_user) for r in first_received}
    reached = [r for r, before in answered if before and (parse(r.last_user)[0], parse(r.last_user)[1] + 1) in arrived]
    proven = {id(r) for r in reached}
    assert ("r6", 1) in {parse(r.last_user) for r in reached}
    assert len(reached) >= 12
    again = [r.last_user for r in reached if body(r) in second_bodies]
    assert again == [], f"answered requests sent again after kill -9: {again}"
    # what was sent again can only be what had no answer, or one still on its way at the kill
    # (at most one per worker: the run sends 4 records' requests at a time)
    in_transit = [r.last_user for r, before in answered if before and id(r) not in proven and body(r) in second_bodies]
    assert len(in_transit) <= 4, in_transit
    lines = (tmp_path / "training" / "data" / "chain.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [f"r{i}" for i in range(12)]
