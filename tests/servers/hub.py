"""A stand-in for the few Hugging Face Hub endpoints an upload through `huggingface_hub` calls,
on loopback: create a repository, validate a card's YAML, ask how to upload each file (always
"regular": the content travels inside the commit, so no LFS or Xet storage is needed), commit;
and, without a token, the registry huggingface_hub reads to name the agent in its user agent.

Point `huggingface_hub` at it with `HF_ENDPOINT=hub.url`; what it received is kept in
`repos` (repo id -> {"type", "visibility", "files": {path: bytes}, "commits": [...]}) and
`requests` (method, path, Authorization header)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

import yaml
from aiohttp import web

from shaping.testing.background import BackgroundServer


@dataclass
class HubStandIn(BackgroundServer):
    repos: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def listen(self):
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/api/agent-harnesses", self._harnesses)
        app.router.add_post("/api/repos/create", self._create)
        app.router.add_post("/api/validate-yaml", self._validate_yaml)
        app.router.add_post("/api/{type}s/{org}/{name}/preupload/{revision}", self._preupload)
        app.router.add_post("/api/{type}s/{org}/{name}/commit/{revision}", self._commit)
        app.router.add_get("/api/{type}s/{org}/{name}/tree/{revision}", self._tree)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return runner.cleanup

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path, request.headers.get("Authorization")))
        public = request.path == "/api/agent-harnesses"
        if not public and not (request.headers.get("Authorization") or "").startswith("Bearer "):
            return web.json_response({"error": "Invalid credentials in Authorization header"}, status=401)
        return await handler(request)

    async def _harnesses(self, request: web.Request) -> web.Response:
        return web.json_response({"standardEnvVars": [], "harnesses": {}})

    async def _create(self, request: web.Request) -> web.Response:
        body = await request.json()
        repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
        url = f"{self.url}/datasets/{repo_id}"
        if repo_id in self.repos:  # as the Hub answers: the client reads the URL from it (exist_ok)
            return web.json_response({"error": "You already created this dataset repo", "url": url}, status=409)
        self.repos[repo_id] = {"type": body.get("type"), "visibility": body.get("visibility"), "files": {},
                               "commits": []}
        return web.json_response({"url": url, "name": repo_id})

    async def _validate_yaml(self, request: web.Request) -> web.Response:
        body = await request.json()
        content = body["content"]
        try:
            _, front, _ = content.split("---\n", 2)
            data = yaml.safe_load(front)
            assert isinstance(data, dict)
        except Exception as exc:  # noqa: BLE001
            return web.json_response({"errors": [{"message": f"invalid YAML front matter: {exc}"}]}, status=400)
        return web.json_response({"errors": [], "warnings": []})

    def _repo(self, request: web.Request) -> dict[str, Any] | None:
        return self.repos.get(f"{request.match_info['org']}/{request.match_info['name']}")

    async def _preupload(self, request: web.Request) -> web.Response:
        if self._repo(request) is None:
            return web.json_response({"error": "Repository not found"}, status=404)
        files = (await request.json())["files"]
        return web.json_response({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                                             "oid": None} for f in files]})

    async def _tree(self, request: web.Request) -> web.Response:
        """The repository's files (one page: the stand-in's repositories are small)."""
        repo = self._repo(request)
        if repo is None:
            return web.json_response({"error": "Repository not found"}, status=404)
        return web.json_response([{"type": "file", "path": path, "oid": f"{i:040x}", "size": len(data)}
                                  for i, (path, data) in enumerate(sorted(repo["files"].items()))])

    async def _commit(self, request: web.Request) -> web.Response:
        repo = self._repo(request)
        if repo is None:
            return web.json_response({"error": "Repository not found"}, status=404)
        lines = [json.loads(line) for line in (await request.read()).splitlines() if line.strip()]
        header = next(line["value"] for line in lines if line["key"] == "header")
        for line in lines:
            if line["key"] == "file":
                value = line["value"]
                assert value["encoding"] == "base64"
                repo["files"][value["path"]] = base64.b64decode(value["content"])
            elif line["key"] == "deletedFile":
                if repo["files"].pop(line["value"]["path"], None) is None:
                    return web.json_response({"error": f"no file {line['value']['path']}"}, status=404)
            elif line["key"] != "header":
                return web.json_response({"error": f"the stand-in takes regular files only: {line['key']}"},
                                         status=400)
        repo["commits"].append(header)
        oid = f"{len(repo['commits']):040x}"
        repo_id = f"{request.match_info['org']}/{request.match_info['name']}"
        return web.json_response({"commitUrl": f"{self.url}/datasets/{repo_id}/commit/{oid}", "commitOid": oid,
                                  "pullRequestUrl": None, "success": True})
