"""Plugin loading and registration: built-ins through entry points, a user's files
from a plugins dir, failures reported by name."""

import json

from click.testing import CliRunner

from clood_candy import plugins as plugin_mod
from clood_candy.cli import cli
from clood_candy.fighters import Captioner
from clood_candy.hookspecs import hookimpl
from clood_candy.records import CaptionResult

BUILT_INS = {
    ("preparer", "default"), ("family", "sd1"), ("family", "sdxl"), ("captioner", "baseline"),
    ("captioner", "vision-stats"), ("captioner", "exif-folder"), ("captioner", "claude"),
    ("captioner", "local-vlm"), ("judge", "rubric"), ("judge", "diffusion-likelihood"), ("judge", "claude"),
    ("sampler", "default"), ("reporter", "html"),
}


def test_plugins_json_lists_the_built_ins():
    result = CliRunner().invoke(cli, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    listed = {(p["kind"], p["name"]) for p in data["plugins"]}
    assert BUILT_INS <= listed
    assert all(p["source"] == "built-in" and p["version"] for p in data["plugins"] if (p["kind"], p["name"]) in BUILT_INS)
    assert data["problems"] == []


class Shouty(Captioner):
    name = "shouty"

    def caption(self, photos, ctx):
        return {p.id: CaptionResult(caption="JLYBN, CANDY") for p in photos}


class ShoutyPlugin:
    @hookimpl
    def register_captioners(self, register):
        register(Shouty())


def test_register_and_unregister_a_plugin_for_one_test():
    plugin_mod.pm.register(ShoutyPlugin(), name="shouty-plugin")
    try:
        registry = plugin_mod.build_registry()
        assert "shouty" in registry.of("captioner")
        assert registry.items["captioner"]["shouty"].plugin == "shouty-plugin"
    finally:
        plugin_mod.pm.unregister(name="shouty-plugin")
    assert "shouty" not in plugin_mod.build_registry().of("captioner")


def test_a_plugin_whose_hook_raises_is_reported_by_name_and_others_still_load():
    class Exploding:
        @hookimpl
        def register_judges(self, register):
            raise ValueError("boom")

    plugin_mod.pm.register(Exploding(), name="exploding")
    try:
        registry = plugin_mod.build_registry()
        assert any(p.plugin == "exploding" and "boom" in p.error for p in registry.problems)
        assert "rubric" in registry.of("judge")
    finally:
        plugin_mod.pm.unregister(name="exploding")


def test_a_plugin_file_that_fails_to_import_is_reported(tmp_path, monkeypatch):
    (tmp_path / "broken_one.py").write_text("import not_a_real_module_xyz\n")
    monkeypatch.setattr(plugin_mod, "_load_problems", [])
    plugin_mod.load_plugin_dir(tmp_path)
    try:
        registry = plugin_mod.build_registry()
        assert any(p.plugin == "broken_one" and "not_a_real_module_xyz" in p.error for p in registry.problems)
    finally:
        plugin_mod._loaded_dirs.discard(tmp_path.resolve())


def test_missing_plugins_dir_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(cli, ["--plugins-dir", str(tmp_path / "nope"), "plugins"])
    assert result.exit_code == 2
    assert "plugins dir not found" in result.output


def test_a_plugin_adds_a_command():
    import click

    class Greeter:
        @hookimpl
        def register_commands(self, cli):
            @cli.command(name="hello-candy")
            def hello():
                click.echo("hello from a plugin")

    plugin_mod.pm.register(Greeter(), name="greeter")
    try:
        plugin_mod.pm.hook.register_commands(cli=cli)
        result = CliRunner().invoke(cli, ["hello-candy"])
        assert result.exit_code == 0 and "hello from a plugin" in result.output
    finally:
        plugin_mod.pm.unregister(name="greeter")
        cli.commands.pop("hello-candy", None)


def test_a_plugin_with_an_unknown_hook_is_told_so_and_given_the_new_name():
    # register_trainers was renamed register_model_families: an old plugin must not be ignored silently
    class OldStyle:
        @hookimpl
        def register_trainers(self, register):
            raise AssertionError("never called: not a clood hook")

    plugin_mod.pm.register(OldStyle(), name="old-style")
    try:
        problems = [p for p in plugin_mod.build_registry().problems if p.plugin == "old-style"]
        assert len(problems) == 1
        assert "register_trainers" in problems[0].error and "register_model_families" in problems[0].error
    finally:
        plugin_mod.pm.unregister(name="old-style")
