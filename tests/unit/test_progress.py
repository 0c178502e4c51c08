"""Plain progress lines, the heartbeat and the CLI's closing block."""

from __future__ import annotations

import io
import time

from xaudit.cli_output import closing_block
from xaudit.progress import PlainReporter, attach_epoch, epoch_line, fmt_duration, report_epoch
from xaudit.run import write_json


def test_lines_are_printed_at_start_at_most_every_interval_and_at_the_end():
    out = io.StringIO()
    rep = PlainReporter(out, interval=3600)
    for done in range(0, 11):
        rep.progress("explain saliency", done, 10)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2  # the first report and the last, nothing in between
    assert lines[0].endswith("explain saliency 0/10 (0%)")
    assert "explain saliency 10/10 (100%), " in lines[1] and lines[1].endswith("/s")


def test_heartbeat_names_what_is_still_running():
    out = io.StringIO()
    with PlainReporter(out, heartbeat=0.2) as rep:
        rep.log("audit 1/8 convergence")
        time.sleep(5.6)  # the heartbeat thread wakes at most every 5 s
    assert "still running: audit 1/8 convergence (" in out.getvalue()


def test_heartbeat_names_the_step_started_after_a_finished_bar():
    out = io.StringIO()
    with PlainReporter(out, heartbeat=0.2) as rep:
        rep.log("explaining 8 images with saliency")
        rep.progress("saliency", 8, 8)
        rep.log("explaining 8 images with layer_conductance")
        rep.log("warning: a report line starts nothing")
        time.sleep(5.6)
    beats = [line for line in out.getvalue().splitlines() if "still running" in line]
    assert beats and all("still running: explaining 8 images with layer_conductance (" in b
                         for b in beats)


def test_epoch_rows_reach_the_reporter_through_the_progress_callback():
    out = io.StringIO()
    rep = PlainReporter(out)
    progress = attach_epoch(rep.progress, rep.epoch)
    report_epoch(progress, {"epoch": 3, "train_loss": 0.41234, "train_acc": 0.875,
                            "val_loss": None, "val_acc": None})
    report_epoch(lambda d, n, t: None, {"epoch": 1})  # a plain callback: ignored
    assert out.getvalue().rstrip().endswith(
        "epoch 3  train loss 0.412 acc 0.875  val loss – acc –")
    assert epoch_line({"epoch": 1}) == "epoch 1  train loss – acc –  val loss – acc –"
    assert [fmt_duration(s) for s in (4.4, 75, 3725)] == ["4 s", "1 min 15 s", "1 h 02 min"]


def test_closing_block_reads_accuracy_verdict_and_timing(tmp_path):
    write_json(tmp_path / "summary.json", {
        "name": "demo", "test": {"accuracy": 0.98333, "n": 120, "macro_f1": 0.9833},
        "timing": {"audit": 187.2, "train": 8.6},
        "audits": {"verdict_lines": {"grad_cam": "grad_cam: trusted — passed all 3 checks"}}})
    lines = closing_block(tmp_path, 222.04)
    assert lines[1] == "── demo done in 222.0 s ──"
    assert "test accuracy 98.3% on 120 images, macro F1 0.983" in lines
    assert "  grad_cam: trusted — passed all 3 checks" in lines
    assert "time per stage: train 8.6 s, audit 187.2 s" in lines
    assert lines[-1] == f"report: {tmp_path / 'report.html'}"
    write_json(tmp_path / "summary.json", {"name": "x", "test": {"accuracy": 1.0, "n": 3}})
    assert "verdict: no audits ran (audit.enabled: false)" in closing_block(tmp_path, 1.0)


def test_an_audit_line_with_its_plan_is_still_an_audit_line():
    from xaudit.progress import AUDIT_LINE

    plain = AUDIT_LINE.match("audit 3/8 model_randomization")
    planned = AUDIT_LINE.match("audit 3/8 model_randomization — ~1,632 model evaluations, ~46 s planned")
    assert plain[3] == planned[3] == "model_randomization" and plain[4] is None
    assert planned[4] == "~1,632 model evaluations, ~46 s planned"
    out = io.StringIO()
    with PlainReporter(out, heartbeat=0.05) as rep:
        rep.log("audit 3/8 model_randomization — ~1,632 model evaluations, ~46 s planned")
        time.sleep(0.3)
    assert "still running: audit 3/8 model_randomization (" in out.getvalue()


def test_still_running_lines_say_the_time_left():
    from xaudit.progress import parse_duration

    assert parse_duration("1 min 05 s") == 65 and parse_duration("2 h 03 min") == 7380
    out = io.StringIO()
    with PlainReporter(out, heartbeat=0.05) as rep:
        rep.log("audit 2/8 faithfulness — ~1,632 model evaluations, ~2 min 00 s planned")
        time.sleep(0.3)
    beats = [line for line in out.getvalue().splitlines() if "still running" in line]
    assert beats and "left of ~2 min 00 s planned" in beats[0]
    out = io.StringIO()
    with PlainReporter(out, heartbeat=0.05) as rep:
        rep.log("audit 2/8 complexity — ~10 model evaluations, ~0 s planned")
        time.sleep(0.3)
    assert "past the ~0 s planned" in out.getvalue()
