"""The training benchmark's clood side runs on a tiny input and writes well-formed results."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_train_bench_clood_side_writes_its_figures(tmp_path):
    out = tmp_path / "result.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "train_bench.py"), "--steps", "3", "--warmup", "1",
                           "--repeat", "1", "--images", "4", "--batch", "2", "--skip-diffusers", "--no-record",
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["command"].startswith("python bench/train_bench.py --steps 3")
    (run,) = result["runs"]
    assert run["side"] == "clood" and len(run["step_ms"]) == 2 and all(ms > 0 for ms in run["step_ms"])
    clood = result["summary"]["clood"]
    assert clood["s_per_step"] == run["s_per_step"] > 0 and clood["threads"] >= 1
    assert 100 < clood["peak_rss_mb"] < 8000 and clood["torch"]
    assert "diffusers" not in result["summary"] and "ratio" not in result["summary"]
    assert json.loads(done.stdout)["clood"] == clood  # the summary is printed too


def test_train_bench_explains_itself():
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "train_bench.py"), "--help"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "--diffusers-script" in done.stdout and "--peak-tflops" in done.stdout
