"""The review web app (Starlette): the Photos, Captions and Pick pages of one run folder.

Safe by default, since it writes into a run: it answers only as 127.0.0.1/localhost on its
own port (a page elsewhere cannot reach it through a DNS name pointed at 127.0.0.1), every
request must carry the token made at start-up (writes in the form body or a header, never
only a cookie, so no other page can post edits), request bodies are bounded, every string
is escaped by Jinja2's autoescape, and the pages load nothing from anywhere else (CSP).
"""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from clood_candy import edits
from clood_candy.records import FightResult
from clood_candy.runstore import RunStore
from clood_candy_plugins.review import pickpage, views
from clood_candy_plugins.review.desk import Conflict, Desk, Refused

MAX_BODY = 256 * 1024  # a 5,000-character caption in any script fits many times over
TEMPLATES = Path(__file__).parent / "templates"
FILTERS = {"all": "every photo", "disputed": "judges disagreed or the margin was small", "edited": "edited by you",
           "needs": "needs a caption"}


def csp(nonce: str) -> str:
    return ("default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; "
            f"script-src 'nonce-{nonce}'; connect-src 'self'; form-action 'self'; base-uri 'none'; "
            "frame-ancestors 'none'")


class Guard:
    """ASGI middleware in front of every route: the Host check, the body bound (read whole
    before any route sees it, so a route never works on a cut-off body) and the headers."""

    def __init__(self, app, hosts: set[str]):
        self.app, self.hosts = app, hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        nonce = secrets.token_urlsafe(16)

        async def send_headed(message):
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["content-security-policy"] = csp(nonce)
                # The token is in the URL: no referrer leaves; same-origin, not no-referrer, which
                # would make the browser send Origin "null" with every form.
                headers["referrer-policy"] = "same-origin"
                headers["x-content-type-options"] = "nosniff"
                headers["cache-control"] = "no-store"
            await send(message)

        headers = Headers(scope=scope)
        if headers.get("host") not in self.hosts:
            refusal = PlainTextResponse(f"Refused: this review page answers only as {' or '.join(sorted(self.hosts))}.",
                                        status_code=400)
            return await refusal(scope, receive, send_headed)
        too_big = PlainTextResponse(f"Refused: the request is over {MAX_BODY // 1024} KiB. Nothing was changed.",
                                    status_code=413)
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            return await too_big(scope, receive, send_headed)
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > MAX_BODY:
                return await too_big(scope, receive, send_headed)
        delivered = False

        async def replay():
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        scope.setdefault("state", {})["nonce"] = nonce
        await self.app(scope, replay, send_headed)


@dataclass
class Kit:
    """What a page module (pickpage) needs of the app: the run, its desk, the token and
    origin checks, and the page makers, so every page is guarded the same way."""

    root: Path
    desk: Desk
    token_ok: Callable[[str | None], bool]
    form: Callable[[Request], Awaitable[dict[str, str] | None]]
    page: Callable[..., HTMLResponse]
    message: Callable[..., HTMLResponse]
    forbidden: Callable[[Request], HTMLResponse]
    where: Callable[..., str]


def make_app(run_dir: Path, token: str, port: int, on_train: Callable[[], None] | None = None) -> Starlette:
    """``on_train``: ``clood dogfood candy --review`` waits for the Captions page's “Train
    with these captions”; the page shows that button only when it is given."""
    root = Path(run_dir).resolve()
    desk = Desk(root)
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined)
    hosts = {f"127.0.0.1:{port}", f"localhost:{port}"} | ({"127.0.0.1", "localhost"} if port == 80 else set())
    origins = {f"http://{h}" for h in hosts}

    def token_ok(given: str | None) -> bool:
        return isinstance(given, str) and hmac.compare_digest(given.encode(), token.encode())

    def run_state():
        return RunStore.open(root).state

    def page(request: Request, template: str, status: int = 200, **values) -> HTMLResponse:
        html = env.get_template(template).render(token=token, nonce=request.state.nonce, run=run_state().name,
                                                 root=str(root), **values)
        return HTMLResponse(html, status_code=status)

    def message(request: Request, title: str, text: str, status: int, back: str = "/captions", tone: str = "error",
                **extra) -> HTMLResponse:
        return page(request, "message.html", status, title=title, text=text, back=back, tone=tone, **extra)

    def forbidden(request: Request) -> HTMLResponse:
        return message(request, "Wrong or missing token",
                       "Open the address `clood review` printed (it carries the token). Nothing was changed.", 403)

    def where(path: str, **query) -> str:
        return f"{path}?{urlencode({'token': token, **{k: v for k, v in query.items() if v}})}"

    async def form(request: Request) -> dict[str, str] | None:
        """The posted form, or None when the token or origin is wrong (checked before any
        change). Parsed here: url-encoded forms need no extra package."""
        origin = request.headers.get("origin")
        if origin is not None and origin not in origins:
            return None
        try:
            fields = dict(parse_qsl((await request.body()).decode("utf-8"), keep_blank_values=True,
                                    max_num_fields=20, errors="strict"))
        except (UnicodeDecodeError, ValueError):
            fields = {}
        given = request.headers.get("x-review-token") or fields.get("token")
        return fields if token_ok(given) else None

    async def index(request: Request) -> Response:
        if not token_ok(request.query_params.get("token")):
            return forbidden(request)
        return RedirectResponse(where("/captions"), status_code=303)

    async def photos_page(request: Request) -> Response:
        if not token_ok(request.query_params.get("token")):
            return forbidden(request)
        entries = views.sheet(root)
        counts = {s: sum(e.status == s for e in entries) for s in ("kept", "culled", "failed")}
        chosen = request.query_params.get("show", "all")
        chosen = chosen if chosen in counts else "all"
        shown = [e for e in entries if chosen == "all" or e.status == chosen]
        return page(request, "photos.html", entries=shown, counts=counts, chosen=chosen,
                    note=request.query_params.get("note", ""))

    async def decide(request: Request) -> Response:
        fields = await form(request)
        if fields is None:
            return forbidden(request)
        index = int(request.path_params["index"])
        try:
            # On a worker thread: preparing a photo (a large original, an upscaler) must not stall other requests.
            decision, said = await run_in_threadpool(desk.decide, index, fields.get("decision", ""),
                                                     fields.get("why", ""))
        except Refused as exc:
            return message(request, "Not changed", str(exc), exc.status, back=where("/photos"))
        done = f"{decision.source}: {decision.new} by you."
        if decision.prepared is not None:
            done += f" Prepared now as prep would have ({said})"
            if not views.sheet(root)[index].in_dataset:
                done += "; it joins the training set when the caption stage writes dataset/."
            elif decision.caption_from == "placeholder":
                done += (f", and in the training set with the placeholder caption “{decision.caption}”: it needs a "
                         "caption, write one on the Captions page (filter: needs a caption).")
            else:
                done += ", and in the training set with the caption fight's caption for it."
        return RedirectResponse(where("/photos", note=done) + f"#entry-{index}", status_code=303)

    async def crop(request: Request) -> Response:
        fields = await form(request)
        if fields is None:
            return forbidden(request)
        index = int(request.path_params["index"])
        try:
            change, said = await run_in_threadpool(desk.move_crop, index, fields, fields.get("why", ""))
        except Refused as exc:
            return message(request, "Crop box not moved", str(exc), exc.status,
                           back=where("/photos") + f"#entry-{index}")
        done = (f"{change.source}: crop box moved to {', '.join(map(str, change.new))} by you; its training image "
                f"was made again from the original ({said}).")
        return RedirectResponse(where("/photos", note=done) + f"#entry-{index}", status_code=303)

    async def captions_page(request: Request) -> Response:
        if not token_ok(request.query_params.get("token")):
            return forbidden(request)
        merge = bool(run_state().config.get("caption", {}).get("merge"))
        cards = views.cards(root, merge)
        chosen = request.query_params.get("filter", "all")
        chosen = chosen if chosen in FILTERS else "all"
        shown = [c for c in cards if chosen == "all" or (chosen == "disputed" and c.disputed)
                 or (chosen == "edited" and c.history) or (chosen == "needs" and c.needs_caption)]
        if chosen == "disputed":  # the closest calls first
            shown.sort(key=lambda c: (c.margin if c.margin is not None else 0.0, not c.disagreed))
        fight = views.read_record(root / "caption" / "fight.json", FightResult)
        return page(request, "captions.html", cards=shown, total=len(cards), filters=FILTERS, chosen=chosen,
                    disputed=sum(c.disputed for c in cards), needing=sum(c.needs_caption for c in cards),
                    winner=fight.winner if fight else None,
                    note=request.query_params.get("note", ""), close_margin=views.CLOSE_MARGIN,
                    waiting=on_train is not None)

    async def train(request: Request) -> Response:
        """“Train with these captions”: the edits are in dataset/ already (each save wrote
        them); this only tells ``dogfood candy --review`` to stop serving and train."""
        fields = await form(request)
        if fields is None:
            return forbidden(request)
        if on_train is None:
            return message(request, "Nothing waits to train",
                           "This page was opened with clood review, so no training waits for it. Train on these "
                           f"captions with: clood dogfood candy --resume {root}. Nothing was changed.", 409,
                           back=where("/captions"))
        on_train()
        return message(request, "Training with these captions",
                       "The review page has stopped: clood dogfood candy now trains on the captions in dataset/ "
                       "(your edits included), then samples and writes the report. Follow it in the terminal.",
                       200, back="", tone="note")

    async def save_caption(request: Request) -> Response:
        fields = await form(request)
        if fields is None:
            return forbidden(request)
        photo, chosen = request.path_params["photo"], fields.get("filter", "all")
        try:
            desk.save_caption(photo, fields.get("caption", ""), fields.get("version", ""))
        except Refused as exc:
            return message(request, "Not saved", str(exc), exc.status, back=where("/captions", filter=chosen),
                           yours=fields.get("caption", ""))
        except Conflict as clash:
            return page(request, "conflict.html", 409, clash=clash, chosen=chosen)
        return RedirectResponse(where("/captions", filter=chosen, note=f"Saved the caption of {photo}.")
                                + f"#photo-{photo}", status_code=303)

    async def bulk(request: Request) -> Response:
        fields = await form(request)
        if fields is None:
            return forbidden(request)
        try:
            changed = desk.bulk(fields.get("mode", ""), fields.get("find", ""), fields.get("replace", ""))
        except Refused as exc:
            return message(request, "Not changed", str(exc), exc.status, back=where("/captions"))
        return RedirectResponse(where("/captions", note=f"Changed {changed} caption(s)."), status_code=303)

    async def tokens(request: Request) -> Response:
        """The live counter under each caption box (fetch from the page's script)."""
        if not token_ok(request.headers.get("x-review-token")):
            return JSONResponse({"error": "wrong or missing token"}, status_code=403)
        try:
            text = json.loads(await request.body()).get("text", "")
        except (ValueError, AttributeError):
            return JSONResponse({"error": "send {\"text\": ...}"}, status_code=400)
        if not isinstance(text, str):
            return JSONResponse({"error": "text must be a string"}, status_code=400)
        return JSONResponse(views.count(text.strip()))

    def image(request: Request) -> Response:  # sync: Starlette runs it on a worker thread
        if not token_ok(request.query_params.get("token")):
            return PlainTextResponse("wrong or missing token", status_code=403)
        photo = next((p for p in views.photos(root) if p.id == request.path_params["photo"]), None)
        path = (root / photo.image).resolve() if photo else None
        if path is None or root not in path.parents or not path.is_file():
            return PlainTextResponse("no such image", status_code=404)
        return FileResponse(path)

    def thumb(request: Request) -> Response:
        if not token_ok(request.query_params.get("token")):
            return PlainTextResponse("wrong or missing token", status_code=403)
        index, state = int(request.path_params["index"]), run_state()
        entries = views.sheet(root)
        if not 0 <= index < len(entries):
            return PlainTextResponse("no such photo", status_code=404)
        entry = entries[index]
        photo = next((p for p in views.photos(root) if p.id == entry.photo), None)
        path, box = views.original_of(state.source, entry.source, photo), entry.crop_box
        if path is None and photo is not None:  # no original here: the prepared image, no box
            path, box = (root / photo.image).resolve(), None
        if path is None or not path.is_file():
            return PlainTextResponse("the original is not here", status_code=404)
        colour = "#2e9d46" if entry.status == "kept" else "#e07000"
        try:
            data = views.thumbnail(path, path.stat().st_mtime, tuple(box) if box else None, colour)
        except Exception:  # an unreadable original (prep said so): no picture, the page says why
            return PlainTextResponse("the original could not be read", status_code=404)
        return Response(data, media_type="image/jpeg")

    routes = [
        Route("/", index),
        Route("/favicon.ico", lambda request: Response(status_code=204)),  # no icon: no console error
        Route("/photos", photos_page),
        Route("/photos/{index:int}", decide, methods=["POST"]),
        Route("/photos/{index:int}/crop", crop, methods=["POST"]),
        Route("/captions", captions_page),
        Route("/captions/bulk", bulk, methods=["POST"]),
        Route("/captions/{photo}", save_caption, methods=["POST"]),
        Route("/train", train, methods=["POST"]),
        Route("/api/tokens", tokens, methods=["POST"]),
        Route("/image/{photo}", image),
        Route("/thumb/{index:int}", thumb),
        *pickpage.routes(Kit(root=root, desk=desk, token_ok=token_ok, form=form, page=page, message=message,
                             forbidden=forbidden, where=where)),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(Guard, hosts=hosts)])
    app.state.edits_path = root / edits.EDITS
    return app
