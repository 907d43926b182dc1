"""CLIPBOT_TORCH_THREADS reaches torch when the worker builds its engines."""
import subprocess
import sys

CODE = """
import torch
from jobs.settings import load_settings
from worker.handlers import build
setup = build(load_settings())
print(torch.get_num_threads(), sorted(setup.handlers))
"""


def test_torch_threads_setting_applies_to_the_worker():
    proc = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "CLIPBOT_TORCH_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    threads, handlers = proc.stdout.strip().split(" ", 1)
    assert threads == "1"
    assert "classify" in handlers and "find" in handlers
