"""A fake Hugging Face Hub on 127.0.0.1, real HTTP (starlette under uvicorn), for the real
``huggingface_hub`` client pointed at it (``HfApi(endpoint=...)``).

It speaks what ``create_repo`` and ``create_commit`` use: whoami, repo create and info,
validate-yaml, preupload (regular or LFS per file, and the oid of what is already there),
the git-LFS batch API (no upload action for an object it already holds), the upload URL
(signed, as S3's are: no bearer token), verify, and the commit (ndjson). It keeps every
commit and counts every LFS upload, so a test can see duplicates. Every API call needs
``Authorization: Bearer <token>``. It offers plain LFS only: a client with hf_xet installed
must be told not to use Xet (``HF_HUB_DISABLE_XET``), as the Hub's CAS protocol is not faked.

Faults: ``fail_commits = n`` answers the next n commits with a 500 after the LFS uploads
went through (the failure a retry must recover from without sending them again).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

REGULAR_MAX = 10 * 1024 * 1024  # the Hub stores bigger files in LFS whatever they hold


@dataclass
class HubFile:
    content: bytes
    lfs: bool

    @property
    def oid(self) -> str:
        """What preupload reports: sha256 for LFS, the git blob sha1 for regular files."""
        if self.lfs:
            return hashlib.sha256(self.content).hexdigest()
        return hashlib.sha1(b"blob %d\0" % len(self.content) + self.content).hexdigest()


@dataclass
class Commit:
    oid: str
    summary: str
    paths: list[str]


@dataclass
class Repo:
    repo_id: str
    private: bool
    files: dict[str, HubFile] = field(default_factory=dict)
    commits: list[Commit] = field(default_factory=list)

    @property
    def head(self) -> str:
        return self.commits[-1].oid if self.commits else "0" * 40


@dataclass
class FakeHub:
    token: str = field(default_factory=lambda: "hf_fake_" + secrets.token_hex(12))
    user: str = "photog"
    fail_commits: int = 0
    repos: dict[str, Repo] = field(default_factory=dict)
    lfs_objects: dict[str, bytes] = field(default_factory=dict)
    lfs_uploads: Counter = field(default_factory=Counter)  # oid → PUTs received
    calls: list[tuple[str, str, bool]] = field(default_factory=list)  # method, path, token was right

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._signing_key = secrets.token_bytes(16)
        self._server = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # --- serving ----------------------------------------------------------------

    def start(self) -> "FakeHub":
        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        self._sock = sock
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self._server = uvicorn.Server(uvicorn.Config(self.app(), log_level="warning", access_log=False,
                                                     lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self._server.started, "the fake Hub did not start"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(10)
            self._sock.close()

    def app(self) -> Starlette:
        repo = "/{ns}/{name}"
        return Starlette(routes=[
            Route("/api/whoami-v2", self.whoami),
            Route("/api/repos/create", self.create_repo, methods=["POST"]),
            Route("/api/validate-yaml", self.validate_yaml, methods=["POST"]),
            Route(f"/api/models{repo}", self.repo_info),
            Route(f"/api/models{repo}/revision/{{rev}}", self.repo_info),
            Route(f"/api/models{repo}/preupload/{{rev}}", self.preupload, methods=["POST"]),
            Route(f"/api/models{repo}/commit/{{rev}}", self.commit, methods=["POST"]),
            Route(f"{repo}.git/info/lfs/objects/batch", self.lfs_batch, methods=["POST"]),
            Route("/lfs/{oid}", self.lfs_put, methods=["PUT"]),
            Route("/lfs/{oid}/verify", self.lfs_verify, methods=["POST"]),
        ])

    # --- helpers ------------------------------------------------------------------

    def _authorised(self, request: Request) -> bool:
        ok = hmac.compare_digest(request.headers.get("authorization", ""), f"Bearer {self.token}")
        self.calls.append((request.method, request.url.path, ok))
        return ok

    @staticmethod
    def _refused() -> JSONResponse:
        message = "Invalid credentials in Authorization header"
        return JSONResponse({"error": message}, 401, headers={"X-Error-Message": message})

    def _repo(self, request: Request) -> Repo | None:
        return self.repos.get(f"{request.path_params['ns']}/{request.path_params['name']}")

    @staticmethod
    def _not_found() -> JSONResponse:
        return JSONResponse({"error": "Repository not found"}, 404, headers={"X-Error-Code": "RepoNotFound"})

    def _signature(self, oid: str) -> str:
        return hmac.new(self._signing_key, oid.encode(), "sha256").hexdigest()

    # --- endpoints ----------------------------------------------------------------

    async def whoami(self, request: Request) -> Response:
        if not self._authorised(request):
            return self._refused()
        return JSONResponse({"type": "user", "name": self.user, "orgs": [],
                             "auth": {"type": "access_token", "accessToken": {"role": "write"}}})

    async def create_repo(self, request: Request) -> Response:
        if not self._authorised(request):
            return self._refused()
        body = await request.json()
        namespace = body.get("organization") or self.user
        if namespace != self.user:
            return JSONResponse({"error": f"You don't have the rights to create a model under {namespace}"}, 403)
        repo_id = f"{namespace}/{body['name']}"
        with self._lock:
            if repo_id in self.repos:
                return JSONResponse({"error": "You already created this model repo", "url": f"{self.url}/{repo_id}"},
                                    409)
            self.repos[repo_id] = Repo(repo_id, private=body.get("visibility") == "private")
        return JSONResponse({"url": f"{self.url}/{repo_id}", "name": repo_id})

    async def validate_yaml(self, request: Request) -> Response:
        if not self._authorised(request):
            return self._refused()
        content = (await request.json())["content"]
        if content.startswith("---"):
            try:
                meta = yaml.safe_load(content.split("---", 2)[1])
            except yaml.YAMLError as exc:
                return JSONResponse({"errors": [{"message": f"invalid YAML: {exc}"}]}, 400)
            if not isinstance(meta, dict):
                return JSONResponse({"errors": [{"message": "metadata must be a mapping"}]}, 400)
        return JSONResponse({"warnings": []})

    async def repo_info(self, request: Request) -> Response:
        if not self._authorised(request):
            return self._refused()
        repo = self._repo(request)
        if repo is None:
            return self._not_found()
        return JSONResponse({"id": repo.repo_id, "modelId": repo.repo_id, "private": repo.private, "sha": repo.head,
                             "siblings": [{"rfilename": path} for path in sorted(repo.files)]})

    async def preupload(self, request: Request) -> Response:
        if not self._authorised(request):
            return self._refused()
        repo = self._repo(request)
        if repo is None:
            return self._not_found()
        answers = []
        for item in (await request.json())["files"]:
            sample = base64.b64decode(item["sample"])
            lfs = item["size"] > REGULAR_MAX or b"\0" in sample
            there = repo.files.get(item["path"])
            answers.append({"path": item["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                            "oid": there.oid if there is not None else None})
        return JSONResponse({"files": answers, "commitOid": repo.head})

    async def lfs_batch(self, request: Request) -> Response:
        if not self._authorised(request):
            return self._refused()
        if self._repo(request) is None:
            return self._not_found()
        objects = []
        for item in (await request.json())["objects"]:
            oid, size = item["oid"], item["size"]
            if oid in self.lfs_objects:  # already stored: the client must not send it again
                objects.append({"oid": oid, "size": size})
                continue
            objects.append({"oid": oid, "size": size, "authenticated": True, "actions": {
                "upload": {"href": f"{self.url}/lfs/{oid}?sig={self._signature(oid)}"},
                "verify": {"href": f"{self.url}/lfs/{oid}/verify"}}})
        return JSONResponse({"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                            media_type="application/vnd.git-lfs+json")

    async def lfs_put(self, request: Request) -> Response:
        oid = request.path_params["oid"]
        if not hmac.compare_digest(request.query_params.get("sig", ""), self._signature(oid)):
            return Response("signature does not match", 403)
        body = await request.body()
        if hashlib.sha256(body).hexdigest() != oid:
            return Response("content does not match its oid", 400)
        with self._lock:
            self.lfs_uploads[oid] += 1
            self.lfs_objects[oid] = body
        return Response(status_code=200)

    async def lfs_verify(self, request: Request) -> Response:
        if not self._authorised(request):
            return self._refused()
        body = await request.json()
        stored = self.lfs_objects.get(body["oid"])
        if stored is None or len(stored) != body["size"]:
            return JSONResponse({"error": "object not uploaded"}, 404)
        return JSONResponse({"ok": True})

    async def commit(self, request: Request) -> Response:
        if not self._authorised(request):
            return self._refused()
        repo = self._repo(request)
        if repo is None:
            return self._not_found()
        lines = [json.loads(line) for line in (await request.body()).splitlines() if line.strip()]
        with self._lock:
            if self.fail_commits > 0:
                self.fail_commits -= 1
                return JSONResponse({"error": "Internal Error - We're working hard to fix this"}, 500)
            changes: dict[str, HubFile] = {}
            header = {}
            for line in lines:
                value = line["value"]
                if line["key"] == "header":
                    header = value
                elif line["key"] == "file":
                    changes[value["path"]] = HubFile(base64.b64decode(value["content"]), lfs=False)
                elif line["key"] == "lfsFile":
                    if value["oid"] not in self.lfs_objects:
                        return JSONResponse({"error": f"LFS object {value['oid']} was never uploaded"}, 422)
                    changes[value["path"]] = HubFile(self.lfs_objects[value["oid"]], lfs=True)
                else:
                    return JSONResponse({"error": f"unsupported operation {line['key']}"}, 400)
            repo.files.update(changes)
            oid = hashlib.sha1(f"{repo.head}{sorted(changes)}{len(repo.commits)}".encode()).hexdigest()
            repo.commits.append(Commit(oid, header.get("summary", ""), sorted(changes)))
        return JSONResponse({"success": True, "commitOid": oid, "commitUrl": f"{self.url}/{repo.repo_id}/commit/{oid}"})
