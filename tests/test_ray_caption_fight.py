"""The caption fight on a local Ray instance: a captioner that runs a model captions on a
Ray worker while the others run in the driver, the fight's answer is the local one, the
record says where it ran, and one that fails on its worker forfeits with its reason."""

import json
import os
import textwrap

import pytest
from PIL import Image
from support.sd import module_ctx

from clood_candy import fsutil, plugins
from clood_candy.pipeline import caption_stage
from clood_candy.records import Photo, PrepEntry, PrepReport

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]  # one Ray instance at a time; Ray starts in a few seconds, each worker imports the project

PLUGIN = textwrap.dedent('''
    import os

    from clood_candy.fighters import Captioner
    from clood_candy.hookspecs import hookimpl
    from clood_candy.records import CaptionResult

    COLOURS = ["red", "green", "yellow", "purple"]


    class ModelTagger(Captioner):
        """Stands for a local model (a VLM, a tagger): tags, and says which process it ran in."""

        name = "model-tagger"
        runs_a_model = True

        def caption(self, photos, ctx):
            return {p.id: CaptionResult(caption=f"jlybn, jellybean, {COLOURS[i % 4]}, wooden surface",
                                        details={"pid": os.getpid()}) for i, p in enumerate(photos)}


    class OutOfMemory(Captioner):
        name = "out-of-memory"
        runs_a_model = True

        def caption(self, photos, ctx):
            raise RuntimeError("CUDA out of memory (on the worker)")


    @hookimpl
    def register_captioners(register):
        register(ModelTagger())
        register(OutOfMemory())
''')


@pytest.fixture(scope="module")
def worker_plugins(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plugins")
    (folder / "ray_test_captioners.py").write_text(PLUGIN)
    plugins.load_plugins()
    plugins.load_plugin_dir(folder)
    try:
        yield folder
    finally:  # the rest of the session sees the built-ins only
        plugins.pm.unregister(name="ray_test_captioners")
        plugins._loaded_dirs.discard(folder.resolve())


@pytest.fixture(scope="module")
def local_ray(worker_plugins):
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def captioned(root, executor):
    ctx = module_ctx(root, base="no-such-base", fight={"executor": executor}, caption={
        "captioners": ["model-tagger", "baseline", "out-of-memory"], "judges": {"rubric": 1.0}})
    ctx.run.path("prep", "images").mkdir(parents=True)
    photos, entries = [], []
    for i in range(4):
        rel = f"prep/images/p{i}.png"
        Image.new("RGB", (32, 32), (200, 40 * i, 40)).save(ctx.run.path(rel))
        photos.append(Photo(id=f"p{i}", source=f"p{i}.jpg", image=rel, width=32, height=32))
        entries.append(PrepEntry(source=f"p{i}.jpg", status="kept", output=rel))
    fsutil.write_json(ctx.run.path("prep", "report.json"), PrepReport(entries=entries, photos=photos))
    caption_stage.run(ctx)
    return ctx, json.loads(ctx.run.path("caption", "fight.json").read_text())


def test_a_model_captioner_runs_on_a_worker_with_the_same_answer(tmp_path, local_ray):
    local_ctx, local = captioned(tmp_path / "local", "local")
    ray_ctx, on_ray = captioned(tmp_path / "ray", "ray")
    assert on_ray["winner"] == local["winner"] and on_ray["standings"] == local["standings"]
    assert local_ctx.run.path("dataset", "metadata.jsonl").read_text() == \
        ray_ctx.run.path("dataset", "metadata.jsonl").read_text()
    placed = on_ray["placements"]
    assert set(placed) == {"model-tagger"} and local["placements"] == {}  # baseline stayed in the driver
    assert placed["model-tagger"]["device"] == "CPU" and placed["model-tagger"]["pid"] != os.getpid()
    said = json.loads(ray_ctx.run.path("caption", "model-tagger", "results.json").read_text())
    assert all(r["details"] == {"pid": placed["model-tagger"]["pid"]} for r in said.values())
    assert "CUDA out of memory (on the worker)" in on_ray["forfeits"]["out-of-memory"]
    assert "CUDA out of memory (on the worker)" in local["forfeits"]["out-of-memory"]
