import os
from pathlib import Path

import pytest

# Only the built-in plugins load: a developer's installed third-party plugins never change a test.
os.environ.setdefault("CLOOD_LOAD_PLUGINS", "builtin")

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


@pytest.fixture
def shared_photos() -> Path:
    """../shared/photos, or skip: a user's clone has no such folder."""
    path = SHARED / "photos"
    if not path.is_dir():
        pytest.skip("../shared/photos is absent")
    return path


@pytest.fixture
def make_ctx(tmp_path):
    """Build a StageContext on a fresh run folder: ``make_ctx(**config_overrides)``."""
    from clood_candy.config import load_config
    from clood_candy.context import StageContext
    from clood_candy.plugins import build_registry, load_plugins
    from clood_candy.progress import Progress
    from clood_candy.runstore import RunStore

    def make(**overrides):
        config = load_config(None, overrides)
        load_plugins()
        run = RunStore.create(tmp_path / "run", "test", config.model_dump(mode="json"), None, demo=False)
        return StageContext(run=run, config=config, registry=build_registry(), progress=Progress(quiet=True))

    return make


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """One finished ``clood dogfood candy --demo`` run, shared by the tests that read it."""
    from click.testing import CliRunner

    from clood_candy.cli import cli

    run_dir = tmp_path_factory.mktemp("demo") / "run"
    result = CliRunner().invoke(cli, ["dogfood", "candy", "--demo", "--run-dir", str(run_dir), "-q"])
    assert result.exit_code == 0, result.output + (str(result.exception) if result.exception else "")
    return run_dir


@pytest.fixture
def anthropic_fake():
    """A started fake Messages API server on 127.0.0.1; stopped after the test."""
    from fakes.anthropic_server import FakeAnthropic

    fake = FakeAnthropic().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def network_attempts(monkeypatch):
    """Every outgoing connection a test's code tries, refused at once: the list says where
    it tried to go (a test of 'reported offline without touching the network' asserts it is empty)."""
    import socket

    tried: list[object] = []

    def refuse(self, address):
        tried.append(address)
        raise ConnectionRefusedError(f"test: no network ({address})")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", lambda self, address: (tried.append(address), 111)[1])
    return tried


@pytest.fixture
def load_calls(monkeypatch):
    """The SD families' load(), refused loudly; the list says whether anything tried."""
    from clood_candy_plugins.sd.family import SDFamily

    calls = []

    def refuse(self, base, ctx):
        calls.append(base)
        raise AssertionError(f"the base model {base} was loaded")

    monkeypatch.setattr(SDFamily, "load", refuse)
    return calls
