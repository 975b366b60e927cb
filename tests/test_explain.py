"""``spoofray explain``: one real file scored by the production scorer (the shipped bundle, a
real local Ray), its decision told and its exit code scriptable."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from spoofray import console, reports
from spoofray.errors import ConfigError
from spoofray.pipeline import explain
from spoofray.pipeline.score import ScoreConfig, score_archive
from spoofray.testing.archives import make_spliced_calls

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def calls(devcorpus, tmp_path_factory):
    return make_spliced_calls(tmp_path_factory.mktemp("explain") / "in", devcorpus)


def test_explain_is_the_scorers_answer_for_the_file(ray_session, calls, tmp_path):
    uri = calls["uris"]["two_sided.wav"]
    result = explain.explain_file(explain.ExplainConfig(input=uri, png=str(tmp_path / "t.png")))
    # The same file in an ordinary run: the same row, the same spans and windows.
    summary = score_archive(ScoreConfig(input=uri, output=str(tmp_path / "out"), run_id="r",
                                        plots=False, page=False))
    report = reports.read_report(summary["run_uri"])
    file_row = reports.file_rows(report).iloc[0]
    for key in ("spoof_score", "predicted_label", "decision_rule", "max_window_score",
                "top_window_start_s", "n_segments", "threshold", "segment_threshold"):
        assert result["row"][key] == file_row[key], key
    assert [r["channel"] for r in result["channel_rows"]] == [0, 1]
    windows = reports.read_windows(summary["run_uri"])
    assert result["windows"]["score"].tolist() == windows.sort_values(
        ["channel", "window_index"])["score"].tolist()
    assert explain.exit_code(result["row"]) == explain.EXIT_SPOOF
    lines = explain.explanation_lines(result)
    text = "\n".join(lines)
    # The insert is on channel 1: that channel's segment rule fired, channel 0's did not.
    ch0 = lines.index(next(line for line in lines if line.startswith("  channel 0:")))
    ch1 = lines.index(next(line for line in lines if line.startswith("  channel 1:")))
    assert "bonafide" in lines[ch0] and lines[ch0 + 1] == "    no rule fired"
    assert "spoof" in lines[ch1] and lines[ch1 + 1] == "    rule fired: segment rule"
    (span,) = result["segments"].itertuples()
    assert "channel 1: " in text and "suspicious spans:" in text
    channel, start, end = calls["insert"]["two_sided.wav"]
    assert span.channel == channel and min(span.end_s, end) - max(span.start_s, start) > 0
    strips = [line for line in lines if "|" in line]
    assert [len(s.split("|")[1]) for s in strips] == [
        int((result["windows"]["channel"] == c).sum()) for c in (0, 1)]
    assert (tmp_path / "t.png").read_bytes().startswith(b"\x89PNG")


def test_explain_refuses_a_folder_before_ray_starts(calls):
    folder = os.path.dirname(calls["uris"]["call.wav"])
    with pytest.raises(ConfigError, match="explain takes one audio file; .* lists 3 files"):
        explain.preflight(explain.ExplainConfig(input=folder))


def _job(*args: str, cwd: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", console.VERBOSE_ENV)}
    return subprocess.run([sys.executable, os.path.join(REPO, "jobs", "explain.py"), *args,
                           "--num-cpus", "2"], capture_output=True, text=True, timeout=600,
                          env=env, cwd=cwd)


@pytest.mark.slow
def test_the_job_prints_the_decision_and_exits_3_for_spoof_0_for_bona_fide(calls, tmp_path):
    spliced = _job(calls["uris"]["call_spliced.wav"], cwd=str(tmp_path))
    assert spliced.returncode == explain.EXIT_SPOOF, spliced.stdout + spliced.stderr[-3000:]
    out = spliced.stdout.splitlines()
    assert out[0].startswith(f"{calls['uris']['call_spliced.wav']}: spoof (")
    assert out[1] == "  rule fired: segment rule"
    assert "is under the file threshold" in out[2]  # the mean alone would have missed it
    assert any("█" in line or "#" in line for line in out)
    png = tmp_path / "call_spliced.wav.timeline.png"
    assert f"  timeline plot: {png}" in out and png.exists()
    real = _job(calls["uris"]["call.wav"], "--png", str(tmp_path / "real.png"),
                cwd=str(tmp_path))
    assert real.returncode == explain.EXIT_BONAFIDE, real.stdout + real.stderr[-3000:]
    assert real.stdout.splitlines()[1] == "  no rule fired"
    # Quiet: spoofray's own lines only on stderr (its log lines and progress line).
    for line in real.stderr.splitlines():
        assert " spoofray." in line or line.startswith("scored ") or not line.strip(), line
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really a wav")
    bad = _job(str(broken), cwd=str(tmp_path))
    assert bad.returncode == explain.EXIT_NOT_SCORED, bad.stdout + bad.stderr[-3000:]
    assert "not scored" in bad.stdout
