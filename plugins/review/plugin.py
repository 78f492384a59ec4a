"""``clood review RUN``: check the cull and fix the captions of a run in the browser, on a
local page only this machine's user can open (127.0.0.1 and a token made at start-up).
``clood dogfood candy --review`` serves the same page between captioning and training."""

from __future__ import annotations

import errno
import secrets
import socket
import threading
import webbrowser
from collections.abc import Callable
from pathlib import Path

import click

from clood_candy.errors import UserError
from clood_candy.hookspecs import hookimpl


def bind(port: int) -> socket.socket:
    """The listening socket, bound before the server starts so the printed address is the
    one it serves (port 0: a free one, no race between choosing and binding)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise UserError(f"port {port} is in use: pick another with --port, "
                            "or leave it out for a free one") from None
        raise UserError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}") from None
    sock.listen(64)
    return sock


def serve(run_dir: Path, port: int = 0, browser: bool = True, *, before_training: bool = False,
          echo: Callable[[str], None] = click.echo) -> bool:
    """Serve the review page of one run until Ctrl-C (a KeyboardInterrupt, after the server
    has shut down cleanly) or, with ``before_training``, until the Captions page's “Train with
    these captions” is pressed: then it returns True, and the caller trains."""
    import uvicorn

    from clood_candy_plugins.review.app import make_app

    root = Path(run_dir).expanduser().resolve()
    if not (root / "run.json").is_file():
        raise UserError(f"not a run folder (no run.json): {run_dir}")
    if not (root / "prep" / "report.json").is_file():
        raise UserError(f"{run_dir} has no prep results yet: run the prep stage first "
                        f"(clood dogfood candy ... --stages prep,caption --run-dir {run_dir})")
    token = secrets.token_urlsafe(24)
    sock = bind(port)
    port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/?token={token}"
    pressed = threading.Event()
    server: uvicorn.Server

    def train() -> None:  # called by the page's POST: the answer still goes out before the server stops
        pressed.set()
        server.should_exit = True

    app = make_app(root, token, port, on_train=train if before_training else None)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, server_header=False,
                                           lifespan="off"))
    echo(f"Reviewing {root}\nOpen {url}\n(edits go to {root / 'review' / 'edits.json'}; " +
         ("press “Train with these captions” on the Captions page to train, or Ctrl-C to stop here)"
          if before_training else "Ctrl-C stops)"))
    if browser:
        threading.Timer(0.5, webbrowser.open, (url,)).start()
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return pressed.is_set()


@click.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--port", type=click.IntRange(0, 65535), default=0, help="Default: a free port.")
@click.option("--no-browser", is_flag=True, help="Print the address; do not open a browser.")
def review(run_dir: Path, port: int, no_browser: bool) -> None:
    """Review a run in the browser: keep or cull photos, read the caption fight, fix captions,
    vote in the pick fight."""
    serve(run_dir, port, not no_browser)


@hookimpl
def register_commands(cli):
    cli.add_command(review)


@hookimpl
def review_before_training(run_dir, port, open_browser, echo):
    return serve(run_dir, port, open_browser, before_training=True, echo=echo)
