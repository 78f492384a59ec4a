"""``clood dogfood candy --demo --base tiny-flux`` and ``--base tiny-sd3``, end to end: the
same stages, fight and report as SD's demo, and verified LoRAs in each family's layouts."""

import json

import pytest
from click.testing import CliRunner
from safetensors.torch import load_file

from clood_candy.cli import cli
from clood_candy.runstore import STAGES, RunStore

pytestmark = pytest.mark.slow  # each demo takes about 30 s on 2 cores

# what the main file and the diffusers-format file must hold, and what the report names
EXPECTED = {"tiny-flux": ("lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight",
                          "transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight", "as Flux.1",
                          "black-forest-labs/FLUX.1-dev"),
            "tiny-sd3": ("transformer.transformer_blocks.0.attn.to_q.lora_A.weight",
                         "transformer.transformer_blocks.0.attn.add_q_proj.lora_B.weight", "as Stable Diffusion 3",
                         "stabilityai/stable-diffusion-3.5-medium")}


@pytest.fixture(scope="module", params=sorted(EXPECTED))
def demo(request, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp(request.param) / "run"
    result = CliRunner().invoke(cli, ["dogfood", "candy", "--demo", "--base", request.param, "--run-dir", str(run_dir), "-q"])
    assert result.exit_code == 0, result.output + (str(result.exception) if result.exception else "")
    return request.param, run_dir


def test_every_stage_runs_and_the_lora_verifies(demo):
    _, run_dir = demo
    state = RunStore.open(run_dir).state
    assert {s: state.stages[s].status for s in STAGES} == dict.fromkeys(STAGES, "done")
    fight = json.loads((run_dir / "train" / "fight.json").read_text())
    assert len(fight["configs"]) >= 3 and fight["winner"] in {c["name"] for c in fight["configs"]}
    outcome = json.loads((run_dir / "train" / "outcome.json").read_text())
    assert outcome["error"] is None and outcome["verification"]["ok"], outcome["verification"]


def test_the_lora_files_are_in_the_familys_layouts(demo):
    base, run_dir = demo
    main_key, diffusers_key, _, _ = EXPECTED[base]
    state = RunStore.open(run_dir).state
    assert main_key in load_file(str(run_dir / state.outputs["lora"]))
    outcome = json.loads((run_dir / "train" / "outcome.json").read_text())
    assert diffusers_key in load_file(str(run_dir / outcome["lora_diffusers"]))


def test_the_report_speaks_of_the_family(demo):
    base, run_dir = demo
    _, _, named, real_base = EXPECTED[base]
    page = (run_dir / "report.html").read_text()
    assert "flow matching" in page and named in page and real_base in page
    assert "Automatic1111 knows" not in page  # A1111 loads neither: the report does not claim it
