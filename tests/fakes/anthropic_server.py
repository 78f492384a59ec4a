"""A fake Anthropic Messages API on 127.0.0.1, real HTTP, for the real SDK (``base_url``).

It answers ``POST /v1/messages`` with a tool call whose content comes from the request:
a caption tool gets the *name of the image's mean colour* (so tests can see content flow
end to end), a verdict tool picks the caption that names that colour. It also serves the
Message Batches endpoints, and injects faults: a script of per-request faults consumed in
arrival order, then ``default`` for every request after that.

Faults: ``ok``, ``429`` (with retry-after), ``529``, ``500``, ``401``, ``400``,
``timeout`` (sleeps ``timeout_sleep`` before answering), ``no_tool`` (a text-only reply),
``bad_json`` (a tool call whose input breaks the schema).

A test that needs other answers sets ``answer``: ``answer(body, tool)`` returns the tool
input for every request that is not a fault (a scripted judge: by the images it was shown,
or always "first" to play a judge with position bias).
"""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

from PIL import Image, ImageStat

from clood_candy.records import Photo

PALETTE = {
    "red": (200, 30, 40), "orange": (240, 130, 30), "yellow": (240, 220, 40), "green": (40, 170, 60),
    "blue": (40, 80, 200), "purple": (130, 50, 160), "pink": (240, 150, 190), "brown": (120, 75, 40),
    "black": (15, 15, 15), "white": (240, 240, 240), "grey": (128, 128, 128),
}
STATUS_ERRORS = {"429": (429, "rate_limit_error"), "529": (529, "overloaded_error"), "500": (500, "api_error"),
                 "401": (401, "authentication_error"), "400": (400, "invalid_request_error")}


def colour_name(rgb: tuple[float, ...]) -> str:
    return min(PALETTE, key=lambda n: sum((a - b) ** 2 for a, b in zip(PALETTE[n], rgb)))


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes
    at: float


@dataclass
class FakeAnthropic:
    latency: float = 0.0  # seconds added to every /v1/messages answer
    timeout_sleep: float = 2.0
    retry_after: str = "0"  # header value sent with 429s
    default: str = "ok"
    batch_polls: int = 1  # retrieves that still say in_progress
    requests: list[Recorded] = field(default_factory=list)
    max_in_flight: int = 0
    answer: Callable[[Any, dict[str, Any]], dict[str, Any]] | None = None  # None: the built-in answers below

    def __post_init__(self) -> None:
        self._script: deque[str] = deque()
        self._lock = threading.Lock()
        self._in_flight = 0
        self._batches: dict[str, dict[str, Any]] = {}
        self._server: ThreadingHTTPServer | None = None

    # --- control ------------------------------------------------------------

    def script(self, *faults: str) -> None:
        self._script.extend(faults)

    def next_fault(self) -> str:
        with self._lock:
            return self._script.popleft() if self._script else self.default

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def messages_calls(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST" and r.path == "/v1/messages"]

    def start(self) -> "FakeAnthropic":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                fake._handle(self, "POST")

            def do_GET(self) -> None:
                fake._handle(self, "GET")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> "FakeAnthropic":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # --- HTTP -----------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        raw = handler.rfile.read(int(handler.headers.get("content-length") or 0))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        path = handler.path.split("?")[0]
        with self._lock:
            self.requests.append(Recorded(method, path, {k.lower(): v for k, v in handler.headers.items()},
                                          body, raw, time.perf_counter()))
        try:
            if not (handler.headers.get("x-api-key") or handler.headers.get("authorization")):
                self._send(handler, 401, {"type": "error", "error": {"type": "authentication_error",
                                                                      "message": "no credentials"}})
            elif method == "POST" and path == "/v1/messages":
                self._messages(handler, body)
            elif method == "POST" and path == "/v1/messages/batches":
                self._batch_create(handler, body)
            elif method == "GET" and (m := re.fullmatch(r"/v1/messages/batches/([\w-]+)", path)):
                self._batch_get(handler, m.group(1))
            elif method == "POST" and (m := re.fullmatch(r"/v1/messages/batches/([\w-]+)/cancel", path)):
                self._send(handler, 200, {**self._batch_json(m.group(1)), "processing_status": "canceling"})
            elif method == "GET" and (m := re.fullmatch(r"/v1/messages/batches/([\w-]+)/results", path)):
                self._batch_results(handler, m.group(1))
            else:
                self._send(handler, 404, {"type": "error", "error": {"type": "not_found_error", "message": path}})
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test): nothing to answer

    def _send(self, handler: BaseHTTPRequestHandler, status: int, payload: Any,
              headers: dict[str, str] | None = None, content_type: str = "application/json") -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("content-type", content_type)
        handler.send_header("content-length", str(len(data)))
        handler.send_header("request-id", f"req_{uuid.uuid4().hex[:12]}")
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(data)

    def _messages(self, handler: BaseHTTPRequestHandler, body: Any) -> None:
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            fault = self.next_fault()
            time.sleep(self.latency)
            if fault == "timeout":
                time.sleep(self.timeout_sleep)
                fault = "ok"  # answers late; the client has hung up by then
            if fault in STATUS_ERRORS:
                status, kind = STATUS_ERRORS[fault]
                headers = {"retry-after": self.retry_after} if status == 429 else {}
                self._send(handler, status, {"type": "error", "error": {"type": kind, "message": f"injected {fault}"}},
                           headers)
                return
            self._send(handler, 200, self.reply(body, fault))
        finally:
            with self._lock:
                self._in_flight -= 1

    # --- content --------------------------------------------------------------

    @staticmethod
    def image_colour(body: Any) -> str | None:
        for message in body.get("messages", []):
            for block in message.get("content", []) if isinstance(message.get("content"), list) else []:
                if block.get("type") == "image":
                    return colour_name(FakeAnthropic.image_mean(block))
        return None

    @staticmethod
    def image_mean(block: dict[str, Any]) -> tuple[float, ...]:
        """The mean RGB of an image block's picture."""
        with Image.open(io.BytesIO(base64.b64decode(block["source"]["data"]))) as im:
            return tuple(ImageStat.Stat(im.convert("RGB")).mean)

    @staticmethod
    def prompt_text(body: Any) -> str:
        texts = []
        for message in body.get("messages", []):
            content = message.get("content")
            if isinstance(content, str):
                texts.append(content)
            else:
                texts += [b.get("text", "") for b in content if b.get("type") == "text"]
        return "\n".join(texts)

    def tool_input(self, body: Any, tool: dict[str, Any]) -> dict[str, Any]:
        if self.answer is not None:
            return self.answer(body, tool)
        colour = self.image_colour(body) or "unknown"
        props = tool.get("input_schema", {}).get("properties", {})
        if "winner" in props:  # a pairwise verdict: the caption naming the true colour wins
            text = self.prompt_text(body)
            first = re.search(r"<first>(.*?)</first>", text, re.S)
            second = re.search(r"<second>(.*?)</second>", text, re.S)
            a = bool(first and colour in first.group(1).lower())
            b = bool(second and colour in second.group(1).lower())
            winner = "first" if a and not b else "second" if b and not a else "tie"
            return {"winner": winner, "reason": f"the photo is {colour}"}
        return {"caption": f"a {colour} jellybean on a plain background", "subject": "jellybean",
                "colours": [colour], "count": 1, "arrangement": "single", "background": "white"}

    def reply(self, body: Any, fault: str = "ok") -> dict[str, Any]:
        tools = body.get("tools") or []
        if fault == "no_tool" or not tools:
            content: list[dict[str, Any]] = [{"type": "text", "text": "Here is a description instead of a tool call."}]
        else:
            tool_in = {"caption": 42, "colours": "not a list", "count": "many"} if fault == "bad_json" \
                else self.tool_input(body, tools[0])
            content = [{"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:12]}", "name": tools[0]["name"],
                        "input": tool_in}]
        out_tokens = max(1, len(json.dumps(content)) // 4)
        return {"id": f"msg_{uuid.uuid4().hex[:12]}", "type": "message", "role": "assistant",
                "model": body.get("model", "?"), "content": content,
                "stop_reason": "tool_use" if content[0]["type"] == "tool_use" else "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": max(1, len(json.dumps(body)) // 40), "output_tokens": out_tokens}}

    # --- batches ----------------------------------------------------------------

    def _batch_json(self, batch_id: str) -> dict[str, Any]:
        batch = self._batches[batch_id]
        ended = batch["polls"] > self.batch_polls
        n = len(batch["results"])
        return {"id": batch_id, "type": "message_batch", "processing_status": "ended" if ended else "in_progress",
                "created_at": "2026-01-01T00:00:00Z", "expires_at": "2026-01-02T00:00:00Z",
                "ended_at": "2026-01-01T00:01:00Z" if ended else None,
                "request_counts": {"processing": 0 if ended else n, "succeeded": n if ended else 0,
                                   "errored": 0, "canceled": 0, "expired": 0},
                "results_url": f"{self.url}/v1/messages/batches/{batch_id}/results" if ended else None}

    def _batch_create(self, handler: BaseHTTPRequestHandler, body: Any) -> None:
        fault = self.next_fault()
        if fault in STATUS_ERRORS:
            status, kind = STATUS_ERRORS[fault]
            self._send(handler, status, {"type": "error", "error": {"type": kind, "message": f"injected {fault}"}})
            return
        batch_id = f"msgbatch_{uuid.uuid4().hex[:12]}"
        results = []
        for item in body["requests"]:  # per-item faults come from the same script
            item_fault = self.next_fault()
            if item_fault in STATUS_ERRORS:
                result = {"type": "errored", "error": {"type": "error", "error": {"type": "api_error", "message": "x"}}}
            else:
                result = {"type": "succeeded", "message": self.reply(item["params"], item_fault)}
            results.append({"custom_id": item["custom_id"], "result": result})
        with self._lock:
            self._batches[batch_id] = {"results": results, "polls": 0}
        self._send(handler, 200, self._batch_json(batch_id))

    def _batch_get(self, handler: BaseHTTPRequestHandler, batch_id: str) -> None:
        with self._lock:
            self._batches[batch_id]["polls"] += 1
        self._send(handler, 200, self._batch_json(batch_id))

    def _batch_results(self, handler: BaseHTTPRequestHandler, batch_id: str) -> None:
        lines = "".join(json.dumps(r) + "\n" for r in self._batches[batch_id]["results"])
        self._send(handler, 200, lines.encode(), content_type="application/binary")


def solid_photos(run_root: Path, colours: dict[str, tuple[int, int, int]], size=(96, 96)) -> list[Photo]:
    """Prepared photos of one flat colour each (the fake names an image by its mean colour)."""
    photos = []
    for photo_id, rgb in colours.items():
        path = run_root / "prep" / f"{photo_id}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, rgb).save(path)
        photos.append(Photo(id=photo_id, source=f"{photo_id}.jpg", image=f"prep/{photo_id}.png",
                            width=size[0], height=size[1]))
    return photos
