"""Each stage benchmark starts and writes a well-formed result on a tiny input (the real
figures come from running them by hand; see BENCHMARKS.md)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def bench(script: str, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done


def test_prep_bench_compares_stage_and_baseline(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, colour in enumerate(["red", "green", "blue"]):
        im = Image.new("RGB", (900, 700), "white")
        im.paste(Image.new("RGB", (200, 120), colour), (300 + 40 * i, 250 + 30 * i))
        im.save(photos / f"IMG_{i}.jpg", quality=92)
    out = tmp_path / "prep.json"
    bench("prep_bench.py", "--photos", str(photos), "--repeat", "1", "--resolution", "256", "--out", str(out),
          "--no-record", "--no-dedup-report")
    text = json.dumps(json.loads(out.read_text()))
    assert "baseline" in text and "ratio" in text


def test_caption_fight_bench_reports_wall_time_against_ideal(tmp_path):
    out = tmp_path / "fight.json"
    bench("caption_fight_bench.py", "--photos", "3", "--latency", "0.01", "--concurrency", "2", "--out", str(out),
          "--no-markdown")
    text = json.dumps(json.loads(out.read_text()))
    assert "ideal_seconds" in text and "serial_seconds" in text


@pytest.mark.slow
def test_demo_bench_runs_a_stage_from_a_cold_process(tmp_path):
    out = tmp_path / "demo.json"
    bench("demo_bench.py", "--stages", "prep", "--out", str(out), "--no-markdown")
    result = json.loads(out.read_text())
    assert result["median_seconds"] > 0 and result["peak_rss_mb"] > 50
    assert result["runs"][0]["stages"]["prep"] == "done"
