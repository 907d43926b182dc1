"""`make demo` end to end: embedded Redis, a real worker process with the shipped models, the CLI."""
import json
import subprocess
import sys

from PIL import Image


def test_demo_writes_every_output(tmp_path):
    out = tmp_path / "demo-out"
    proc = subprocess.run([sys.executable, "-m", "worker.demo", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    classified = json.loads((out / "classify.json").read_text())
    assert len(classified) == 2
    for item in classified:
        scores = [lab["score"] for lab in item["labels"]]
        assert scores == sorted(scores, reverse=True) and abs(sum(scores) - 1) < 1e-4

    found = json.loads((out / "find.json").read_text())
    assert found["query"] == "a red star" and len(found["hits"]) == 5
    assert [h["score"] for h in found["hits"]] == sorted((h["score"] for h in found["hits"]), reverse=True)
    assert Image.open(out / "find.png").size == (5 * 128, 148)

    painted = json.loads((out / "imagine.json").read_text())
    assert painted["steps"] > 0 and painted["out"].endswith("imagine.png")
    assert Image.open(out / "imagine.png").format == "PNG"
    gif = Image.open(out / "imagine.gif")
    assert gif.format == "GIF" and gif.n_frames > 1
    assert "demo finished" in proc.stdout
    # jobs are submitted only once the demo's worker has loaded its models and registered
    assert "worker ready after" in proc.stderr and "no live worker" not in proc.stderr
