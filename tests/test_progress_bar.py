"""The CLI's progress bar starts with the work: no absurd rate from steps done before it was drawn."""
from __future__ import annotations

from jobs.schemas import Progress, Result, Started
from worker.cli import ProgressBar


def test_first_progress_is_the_start_not_a_burst():
    bar = ProgressBar("imagine")
    bar(Started(job_id="j", seq=2, worker="w"))
    assert bar.bar is None  # nothing drawn before the work reports
    bar(Progress(job_id="j", seq=3, step=10, total=100))
    meter = bar.bar.format_dict
    assert (meter["n"], meter["initial"], meter["total"]) == (10, 10, 100)
    assert "?step/s" in str(bar.bar)  # no rate until steps are done while it runs (was 10 / ~0 s)
    bar(Progress(job_id="j", seq=4, step=30, total=100))
    meter = bar.bar.format_dict
    assert meter["n"] == 30 and meter["n"] - meter["initial"] == 20  # only these count toward the rate
    bar(Result(job_id="j", seq=5, data={}))
    assert bar.bar is None


def test_a_retry_starts_a_fresh_bar(capsys):
    bar = ProgressBar("find")
    bar(Progress(job_id="j", seq=3, step=40, total=100))
    bar(Started(job_id="j", seq=4, worker="w2", attempt=2))
    assert bar.bar is None and "retrying on w2 (attempt 2)" in capsys.readouterr().err
    bar(Progress(job_id="j", seq=5, step=5, total=100))
    assert (bar.bar.format_dict["n"], bar.bar.format_dict["initial"]) == (5, 5)
    bar(Result(job_id="j", seq=6, data={}))
