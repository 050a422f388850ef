"""A loopback fake of OpenAI's Batch API and Anthropic's Message Batches (and both online
endpoints), on one port, answering from the request body alone.

    with BatchServer(api_key="sk-...", delay_s=0.2) as server:
        server.fail("errored", lambda api, custom_id, body: ..., times=1)
        # OpenAI models: base_url = server.openai_url; Anthropic models: server.anthropic_url
        server.batches        # every batch created: api, items (custom_id, body), status, ...
        server.online         # every online request (chat/completions, messages)

OpenAI: POST /v1/files (multipart, purpose=batch) -> a file; POST /v1/batches {input_file_id,
endpoint, completion_window, metadata} -> a batch, in progress for `delay_s`, then completed (or
expired, when an item expired), with output_file_id and error_file_id; GET /v1/batches/{id},
GET /v1/batches (newest first, paged: `limit`, `after`, `has_more`; at most `page_size` a page),
POST /v1/batches/{id}/cancel, GET /v1/files/{id}/content (JSONL).
Anthropic: POST /v1/messages/batches {requests: [{custom_id, params}]}, GET
/v1/messages/batches/{id}, its results_url (JSONL), POST /v1/messages/batches/{id}/cancel.

The answer to a request is `answer_text(api, body)` (its model and last user turn, with a digest
of the whole body): the same online and in a batch. Injected per item (`fail`): "errored" (a 500
/ overloaded_error: retryable), "invalid" (a 400 / invalid_request_error), "expired", "missing"
(no line for it in the results), "refused" (OpenAI: the whole batch fails validation, its
`errors` naming that item's line, and runs nothing; Anthropic: as "invalid"); each rule applies
to the first `times` batches a custom_id is in. `hang_creates`: the next that many batch
creations are made, then their answer is held back `hang_s` seconds (a client that times out
first never hears the batch's id). Every response body the fake sends is kept in `sent` (path,
JSON) so that tests can check them against the SDKs' response models.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

try:
    from aiohttp import web
except ImportError as exc:
    raise ImportError("shaping.testing's servers need aiohttp: pip install 'shaping[testing]'") from exc

from shaping.testing.background import BackgroundServer

Match = Callable[[str, str, dict], bool]  # (api, custom_id, body) -> whether a rule applies


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def last_user(body: dict) -> str:
    return next((_text(m.get("content")) for m in reversed(body.get("messages", [])) if m.get("role") == "user"), "")


def answer_text(api: str, body: dict) -> str:
    digest = hashlib.sha256(json.dumps(body.get("messages"), sort_keys=True).encode()).hexdigest()[:8]
    return f"[{body.get('model')} {digest}] re: {last_user(body)}"


def _usage(body: dict, text: str) -> tuple[int, int]:
    prompt = sum(len(_text(m.get("content")).split()) for m in body.get("messages", []))
    prompt += len(str(body.get("system", "")).split())
    return prompt, len(text.split())


def openai_completion(body: dict) -> dict:
    text = answer_text("openai", body)
    prompt, completion = _usage(body, text)
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": body.get("model"),
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": text, "refusal": None}}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}}


def anthropic_message(body: dict) -> dict:
    text = answer_text("anthropic", body)
    prompt, completion = _usage(body, text)
    return {"id": "msg_fake", "type": "message", "role": "assistant", "model": body.get("model"),
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": prompt, "output_tokens": completion}}


def _rfc3339(at: float | None) -> str | None:
    return None if at is None else datetime.fromtimestamp(at, timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass
class FakeBatch:
    id: str
    api: str
    created_at: float
    ends_at: float
    items: list[tuple[str, dict]]
    fates: dict[str, str]  # custom_id -> errored | invalid | expired | missing (absent: answered)
    metadata: dict | None = None
    input_file_id: str | None = None
    cancelled_at: float | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    results_fetched: int = 0

    def ended(self, now: float) -> bool:
        return self.cancelled_at is not None or now >= self.ends_at


@dataclass
class BatchServer(BackgroundServer):
    api_key: str | None = None
    #: how long a batch stays in progress
    delay_s: float = 0.0
    batches: dict[str, FakeBatch] = field(default_factory=dict)
    #: online requests: (path, body)
    online: list[tuple[str, dict]] = field(default_factory=list)
    #: files uploaded: (form fields other than the file, the file's lines parsed)
    uploads: list[tuple[dict, list[dict]]] = field(default_factory=list)
    #: JSON bodies of POST /v1/batches and POST /v1/messages/batches
    creates: list[tuple[str, dict]] = field(default_factory=list)
    #: every JSON (or JSONL line) the fake answered with: (path, value)
    sent: list[tuple[str, Any]] = field(default_factory=list)
    #: called with each batch as it is created, before the answer goes back (a test kills the client)
    on_create: Callable[[FakeBatch], None] | None = None
    #: the next this many batch creations: the batch is made, its answer held back `hang_s`
    hang_creates: int = 0
    hang_s: float = 2.0
    #: the most batches GET /v1/batches lists a page, whatever `limit` asks (OpenAI: 100)
    page_size: int = 100

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[list[Any]] = []  # [kind, match, times]
        self._seen: dict[tuple[int, str], int] = {}  # (rule, custom_id) -> batches it applied to
        self._files: dict[str, bytes] = {}
        self._ids = itertools.count(1)

    @property
    def openai_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def anthropic_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail(self, kind: str, match: Match, times: int = 1) -> None:
        assert kind in ("errored", "invalid", "expired", "missing", "refused"), kind
        with self._lock:
            self._rules.append([kind, match, times])

    def of(self, api: str) -> list[FakeBatch]:
        return [b for b in self.batches.values() if b.api == api]

    # -- serving ----------------------------------------------------------------------------

    async def listen(self):
        app = web.Application(client_max_size=300 * 2**20)
        r = app.router
        r.add_post("/v1/chat/completions", self._openai_online)
        r.add_post("/v1/files", self._upload)
        r.add_get("/v1/files/{id}/content", self._file_content)
        r.add_post("/v1/batches", self._openai_create)
        r.add_get("/v1/batches", self._openai_list)
        r.add_get("/v1/batches/{id}", self._openai_get)
        r.add_post("/v1/batches/{id}/cancel", self._cancel)
        r.add_post("/v1/messages", self._anthropic_online)
        r.add_post("/v1/messages/batches", self._anthropic_create)
        r.add_get("/v1/messages/batches/{id}", self._anthropic_get)
        r.add_get("/v1/messages/batches/{id}/results", self._anthropic_results)
        r.add_post("/v1/messages/batches/{id}/cancel", self._cancel)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return runner.cleanup

    def _json(self, request: web.Request, value: Any, status: int = 200) -> web.Response:
        self.sent.append((request.path, value))
        return web.json_response(value, status=status)

    def _denied(self, request: web.Request, api: str) -> web.Response | None:
        if self.api_key is None:
            return None
        if api == "openai":
            ok = request.headers.get("authorization") == f"Bearer {self.api_key}"
            body = {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}
        else:
            ok = request.headers.get("x-api-key") == self.api_key and "anthropic-version" in request.headers
            body = {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}
        return None if ok else web.json_response(body, status=401)

    def _fates(self, api: str, items: list[tuple[str, dict]]) -> dict[str, str]:
        fates = {}
        with self._lock:
            for custom_id, body in items:
                for number, (kind, match, times) in enumerate(self._rules):
                    used = self._seen.get((number, custom_id), 0)
                    if used < times and match(api, custom_id, body):
                        self._seen[(number, custom_id)] = used + 1
                        fates[custom_id] = kind
                        break
        return fates

    def _new_batch(self, api: str, prefix: str, items: list[tuple[str, dict]], **fields: Any) -> FakeBatch:
        now = time.time()
        batch = FakeBatch(id=f"{prefix}{next(self._ids):04d}fake", api=api, created_at=now, ends_at=now + self.delay_s,
                          items=items, fates=self._fates(api, items), **fields)
        self.batches[batch.id] = batch
        if self.on_create is not None:
            self.on_create(batch)
        return batch

    async def _hang(self) -> None:
        """Hold back a creation's answer (`hang_creates`): the batch exists already."""
        with self._lock:
            hang, self.hang_creates = self.hang_creates > 0, max(0, self.hang_creates - 1)
        if hang:
            await asyncio.sleep(self.hang_s)

    # -- online -----------------------------------------------------------------------------

    async def _openai_online(self, request: web.Request) -> web.Response:
        if (denied := self._denied(request, "openai")) is not None:
            return denied
        body = await request.json()
        self.online.append((request.path, body))
        return self._json(request, openai_completion(body))

    async def _anthropic_online(self, request: web.Request) -> web.Response:
        if (denied := self._denied(request, "anthropic")) is not None:
            return denied
        body = await request.json()
        self.online.append((request.path, body))
        return self._json(request, anthropic_message(body))

    # -- OpenAI -----------------------------------------------------------------------------

    async def _upload(self, request: web.Request) -> web.Response:
        if (denied := self._denied(request, "openai")) is not None:
            return denied
        fields, content, filename = {}, b"", ""
        async for part in await request.multipart():
            if part.name == "file":
                filename = part.filename or ""
                content = await part.read()
            else:
                fields[part.name] = await part.text()
        lines = [json.loads(line) for line in content.splitlines() if line.strip()]
        self.uploads.append((fields, lines))
        file_id = f"file-{next(self._ids):04d}in"
        self._files[file_id] = content
        return self._json(request, {"id": file_id, "object": "file", "bytes": len(content),
                                    "created_at": int(time.time()), "filename": filename,
                                    "purpose": fields.get("purpose", "batch"), "status": "processed"})

    async def _openai_create(self, request: web.Request) -> web.Response:
        if (denied := self._denied(request, "openai")) is not None:
            return denied
        body = await request.json()
        self.creates.append(("openai", body))
        content = self._files.get(body.get("input_file_id"))
        if content is None:
            return web.json_response({"error": {"message": "No such File object", "type": "invalid_request_error"}},
                                     status=404)
        lines = [json.loads(line) for line in content.splitlines() if line.strip()]
        batch = self._new_batch("openai", "batch_", [(line["custom_id"], line["body"]) for line in lines],
                                metadata=body.get("metadata"), input_file_id=body["input_file_id"])
        await self._hang()
        return self._json(request, self._openai_batch(batch))

    def _openai_status(self, batch: FakeBatch, now: float) -> str:
        if batch.cancelled_at is not None:
            return "cancelled"
        if not batch.ended(now):
            return "in_progress"
        if "refused" in batch.fates.values():
            return "failed"
        return "expired" if "expired" in batch.fates.values() else "completed"

    def _openai_batch(self, batch: FakeBatch) -> dict:
        now = time.time()
        status = self._openai_status(batch, now)
        done = status not in ("in_progress",)
        errors = None
        if status == "failed":  # validation: the refused lines named, nothing run
            errors = {"object": "list", "data": [
                {"code": "invalid_request", "line": n, "param": "body.messages",
                 "message": "injected refusal: this line is not a valid request"}
                for n, (cid, _) in enumerate(batch.items, 1) if batch.fates.get(cid) == "refused"]}
        elif done and batch.output_file_id is None:
            self._openai_outputs(batch)
        answered = sum(1 for cid, _ in batch.items if cid not in batch.fates) if done and not errors else 0
        failed = sum(1 for kind in batch.fates.values() if kind != "missing") if done and not errors else 0
        if batch.cancelled_at is not None:
            failed = len(batch.items) - answered
        return {
            "id": batch.id, "object": "batch", "endpoint": "/v1/chat/completions", "errors": errors,
            "input_file_id": batch.input_file_id, "completion_window": "24h", "status": status,
            "output_file_id": batch.output_file_id if done else None,
            "error_file_id": batch.error_file_id if done else None,
            "created_at": int(batch.created_at), "in_progress_at": int(batch.created_at),
            "expires_at": int(batch.created_at) + 86400,
            "completed_at": int(now) if status == "completed" else None,
            "failed_at": int(batch.ends_at) if status == "failed" else None,
            "expired_at": int(now) if status == "expired" else None,
            "cancelled_at": int(batch.cancelled_at) if batch.cancelled_at else None,
            "request_counts": {"total": len(batch.items), "completed": answered, "failed": failed},
            "metadata": batch.metadata,
        }

    def _openai_outputs(self, batch: FakeBatch) -> None:
        out, errors = [], []
        for n, (custom_id, body) in enumerate(batch.items):
            fate = batch.fates.get(custom_id)
            if batch.cancelled_at is not None:
                fate = "cancelled"
            line = {"id": f"batch_req_{batch.id}_{n}", "custom_id": custom_id, "response": None, "error": None}
            if fate is None:
                line["response"] = {"status_code": 200, "request_id": f"req_{n}", "body": openai_completion(body)}
                out.append(line)
            elif fate == "errored":
                line["response"] = {"status_code": 500, "request_id": f"req_{n}", "body": {"error": {
                    "message": "The server had an error while processing your request", "type": "server_error",
                    "param": None, "code": None}}}
                errors.append(line)
            elif fate == "invalid":
                line["response"] = {"status_code": 400, "request_id": f"req_{n}", "body": {"error": {
                    "message": "Invalid 'messages': injected invalid request", "type": "invalid_request_error",
                    "param": "messages", "code": None}}}
                errors.append(line)
            elif fate == "expired":
                line["error"] = {"code": "batch_expired",
                                 "message": "This request could not be executed before the completion window expired."}
                errors.append(line)
            elif fate == "cancelled":
                line["error"] = {"code": "batch_cancelled", "message": "This request was cancelled."}
                errors.append(line)
        batch.output_file_id = f"file-{batch.id}-out"
        self._files[batch.output_file_id] = b"".join(json.dumps(line).encode() + b"\n" for line in out)
        if errors:
            batch.error_file_id = f"file-{batch.id}-err"
            self._files[batch.error_file_id] = b"".join(json.dumps(line).encode() + b"\n" for line in errors)

    async def _openai_get(self, request: web.Request) -> web.Response:
        if (denied := self._denied(request, "openai")) is not None:
            return denied
        batch = self.batches.get(request.match_info["id"])
        if batch is None or batch.api != "openai":
            return web.json_response({"error": {"message": "No batch found", "type": "invalid_request_error"}},
                                     status=404)
        return self._json(request, self._openai_batch(batch))

    async def _openai_list(self, request: web.Request) -> web.Response:
        if (denied := self._denied(request, "openai")) is not None:
            return denied
        batches = list(reversed(self.of("openai")))  # newest first
        after = request.query.get("after")
        if after is not None:
            ids = [b.id for b in batches]
            batches = batches[ids.index(after) + 1:] if after in ids else []
        limit = min(int(request.query.get("limit", 20)), 100, self.page_size)
        data = [self._openai_batch(b) for b in batches[:limit]]
        return self._json(request, {"object": "list", "data": data, "has_more": len(batches) > limit,
                                    "first_id": data[0]["id"] if data else None,
                                    "last_id": data[-1]["id"] if data else None})

    async def _file_content(self, request: web.Request) -> web.Response:
        if (denied := self._denied(request, "openai")) is not None:
            return denied
        file_id = request.match_info["id"]
        content = self._files.get(file_id)
        if content is None:
            return web.json_response({"error": {"message": "No such File object", "type": "invalid_request_error"}},
                                     status=404)
        for batch in self.batches.values():
            if file_id in (batch.output_file_id, batch.error_file_id):
                batch.results_fetched += 1
        for line in content.splitlines():
            self.sent.append((request.path, json.loads(line)))
        return web.Response(body=content, content_type="application/octet-stream")

    async def _cancel(self, request: web.Request) -> web.Response:
        api = "anthropic" if request.path.startswith("/v1/messages") else "openai"
        if (denied := self._denied(request, api)) is not None:
            return denied
        batch = self.batches.get(request.match_info["id"])
        if batch is None or batch.api != api:
            return web.json_response({"error": {"message": "not found", "type": "not_found_error"}}, status=404)
        if not batch.ended(time.time()):
            batch.cancelled_at = time.time()
        return self._json(request, self._openai_batch(batch) if api == "openai" else self._anthropic_batch(batch))

    # -- Anthropic --------------------------------------------------------------------------

    async def _anthropic_create(self, request: web.Request) -> web.Response:
        if (denied := self._denied(request, "anthropic")) is not None:
            return denied
        body = await request.json()
        self.creates.append(("anthropic", body))
        batch = self._new_batch("anthropic", "msgbatch_", [(r["custom_id"], r["params"]) for r in body["requests"]])
        await self._hang()
        return self._json(request, self._anthropic_batch(batch))

    def _anthropic_batch(self, batch: FakeBatch) -> dict:
        now = time.time()
        ended = batch.ended(now)
        n = len(batch.items)
        if not ended:
            counts = {"processing": n, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        else:
            fates = [self._anthropic_fate(batch, cid) for cid, _ in batch.items]
            counts = {"processing": 0, "succeeded": fates.count(None),
                      "errored": fates.count("errored") + fates.count("invalid"),
                      "canceled": fates.count("cancelled"), "expired": fates.count("expired")}
            counts["succeeded"] += fates.count("missing")  # counted, yet absent from the results
        return {
            "id": batch.id, "type": "message_batch", "processing_status": "ended" if ended else "in_progress",
            "request_counts": counts, "created_at": _rfc3339(batch.created_at),
            "expires_at": _rfc3339(batch.created_at + 86400),
            "ended_at": _rfc3339(min(now, batch.ends_at) if batch.cancelled_at is None else batch.cancelled_at)
            if ended else None,
            "cancel_initiated_at": _rfc3339(batch.cancelled_at), "archived_at": None,
            "results_url": f"{self.anthropic_url}/v1/messages/batches/{batch.id}/results" if ended else None,
        }

    @staticmethod
    def _anthropic_fate(batch: FakeBatch, custom_id: str) -> str | None:
        if batch.cancelled_at is not None:
            return "cancelled"
        fate = batch.fates.get(custom_id)
        return "invalid" if fate == "refused" else fate

    async def _anthropic_get(self, request: web.Request) -> web.Response:
        if (denied := self._denied(request, "anthropic")) is not None:
            return denied
        batch = self.batches.get(request.match_info["id"])
        if batch is None or batch.api != "anthropic":
            return web.json_response({"type": "error", "error": {"type": "not_found_error", "message": "not found"}},
                                     status=404)
        return self._json(request, self._anthropic_batch(batch))

    async def _anthropic_results(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._denied(request, "anthropic")) is not None:
            return denied
        batch = self.batches.get(request.match_info["id"])
        if batch is None or not batch.ended(time.time()):
            return web.json_response({"type": "error", "error": {"type": "not_found_error",
                                                                 "message": "results not available"}}, status=404)
        batch.results_fetched += 1
        lines = []
        for custom_id, body in batch.items:
            fate = self._anthropic_fate(batch, custom_id)
            if fate == "missing":
                continue
            if fate is None:
                result = {"type": "succeeded", "message": anthropic_message(body)}
            elif fate in ("errored", "invalid"):
                kind, message = (("overloaded_error", "Overloaded") if fate == "errored"
                                 else ("invalid_request_error", "messages: injected invalid request"))
                result = {"type": "errored", "error": {"type": "error", "error": {"type": kind, "message": message}}}
            elif fate == "expired":
                result = {"type": "expired"}
            else:
                result = {"type": "canceled"}
            line = {"custom_id": custom_id, "result": result}
            self.sent.append((request.path, line))
            lines.append(json.dumps(line).encode())
        return web.Response(body=b"\n".join(lines) + b"\n", content_type="application/binary")


def main() -> None:
    """`python -m shaping.testing.batch [port] [delay_s]`: serve until interrupted, printing both base URLs."""
    import sys

    server = BatchServer(delay_s=float(sys.argv[2]) if len(sys.argv) > 2 else 0.0)
    server.port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    server.start()
    print(server.openai_url, server.anthropic_url, flush=True)
    server.wait_until_interrupted()


if __name__ == "__main__":
    main()
