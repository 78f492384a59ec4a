"""``clood dogfood candy --demo --base tiny-flux``, end to end: the same stages, fight and
report as SD's demo, and a Flux LoRA in both layouts, verified."""

import json

import pytest
from click.testing import CliRunner
from safetensors.torch import load_file

from clood_candy.cli import cli
from clood_candy.runstore import STAGES, RunStore

pytestmark = pytest.mark.slow  # the whole demo (about 30 s on 2 cores)


@pytest.fixture(scope="module")
def flux_demo(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("fluxdemo") / "run"
    result = CliRunner().invoke(cli, ["dogfood", "candy", "--demo", "--base", "tiny-flux", "--run-dir", str(run_dir), "-q"])
    assert result.exit_code == 0, result.output + (str(result.exception) if result.exception else "")
    return run_dir


def test_every_stage_runs_on_the_flux_family(flux_demo):
    state = RunStore.open(flux_demo).state
    assert {s: state.stages[s].status for s in STAGES} == dict.fromkeys(STAGES, "done")
    fight = json.loads((flux_demo / "train" / "fight.json").read_text())
    assert len(fight["configs"]) >= 3 and fight["winner"] in {c["name"] for c in fight["configs"]}
    outcome = json.loads((flux_demo / "train" / "outcome.json").read_text())
    assert outcome["verification"]["ok"], outcome["verification"]


def test_the_lora_is_in_both_flux_layouts(flux_demo):
    state = RunStore.open(flux_demo).state
    kohya = load_file(str(flux_demo / state.outputs["lora"]))
    assert "lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight" in kohya
    outcome = json.loads((flux_demo / "train" / "outcome.json").read_text())
    diffusers_file = load_file(str(flux_demo / outcome["lora_diffusers"]))
    assert "transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight" in diffusers_file


def test_the_report_speaks_of_flux(flux_demo):
    page = (flux_demo / "report.html").read_text()
    assert "flow matching" in page and "as Flux.1" in page and "black-forest-labs/FLUX.1-dev" in page
    assert "Automatic1111 knows" not in page  # A1111 does not load Flux: the report does not claim it
