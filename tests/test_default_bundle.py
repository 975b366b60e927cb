"""The shipped default bundle: it loads and verifies, jobs use it without --bundle, and its
model card quotes the numbers its bundle.json records."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from spoofray import reports, testing
from spoofray.errors import ConfigError
from spoofray.models import default
from spoofray.models.bundle import Bundle, verify_bundle_dir
from spoofray.models.registry import resolve_bundle
from spoofray.pipeline.score import ScoreConfig, score_archive

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CARD = os.path.join(REPO, "docs", "model_card.md")


def _manifest() -> dict:
    with open(os.path.join(default.default_bundle(), "bundle.json")) as fh:
        return json.load(fh)


def test_default_bundle_is_small_verified_and_thresholded_on_held_out_real_speech():
    folder = default.default_bundle()
    verify_bundle_dir(folder)  # every checksum and the feature config
    bundle = Bundle.load(folder)
    assert bundle.name == default.NAME
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(folder) for f in fs)
    assert size < 5 * 1024**2
    manifest = _manifest()
    assert manifest["threshold_method"] == "false_alarm_rate_on_held_out_reports"
    assert manifest["threshold_details"]["target_false_alarm_rate"] == 0.01


def test_no_bundle_means_the_shipped_default_and_latest_means_the_registry(tmp_path, monkeypatch):
    assert resolve_bundle(None) == (default.FOLDER, "default")
    assert resolve_bundle("s3://b/x") == ("s3://b/x", "given")
    monkeypatch.setenv("SPOOFRAY_HOME", str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="newest bundle of the local registry.*is empty"):
        resolve_bundle("latest")


def test_scoring_without_bundle_uses_the_default(ray_session, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    uri = testing.write_wav(folder / "a.wav", testing.voiced(140.0, 3.0, 16000), 16000)
    summary = score_archive(ScoreConfig(input=str(folder), output=str(tmp_path / "out"),
                                        plots=False))
    assert summary["bundle"]["source"] == "default"
    assert summary["bundle"]["name"] == default.NAME
    row = reports.read_report(summary["run_uri"]).set_index("uri").loc[uri]
    assert row["status"] == "ok" and 0.0 <= row["spoof_score"] <= 1.0
    assert row["model_name"] == default.NAME


def test_score_job_says_which_bundle_and_where_the_model_card_is():
    # The note comes before Ray starts only for a bad run; here the job's --help names it.
    out = subprocess.run([sys.executable, os.path.join(REPO, "jobs", "score_archive.py"),
                          "--help"], capture_output=True, text=True, check=True).stdout
    assert "spoofray-base" in out and "model_card.md" in out


def test_model_card_quotes_the_bundles_own_evaluation():
    recorded = _manifest()["evaluation"]
    with open(CARD) as fh:
        card = fh.read()
    block = re.search(r"<!-- evaluation: (\{.*?\}) -->", card, re.S)
    assert block, "the model card must carry its numbers in an '<!-- evaluation: ... -->' block"
    assert json.loads(block.group(1)) == recorded
    # ... and the human-readable headline says the same.
    assert f"| pooled EER | {100 * recorded['pooled_eer']:.1f} % |" in card
    assert f"| decision threshold | {recorded['threshold']:.4f} |" in card


# --- narrowband: real speech stored as call recorders store it ------------------------------

SHARED = os.path.join(os.path.dirname(REPO), "shared", "data")
needs_tools = pytest.mark.skipif(not (shutil.which("sox") and shutil.which("ffmpeg")),
                                 reason="needs sox and ffmpeg (make system-deps)")
needs_shared = pytest.mark.skipif(
    not all(os.path.exists(os.path.join(SHARED, c, "manifest.csv"))
            for c in ("devcorpus", "trainpool")),
    reason=f"devcorpus and trainpool not found in {SHARED} (../shared is absent in this checkout)")


def _real_clips(n: int) -> list[str]:
    """``n`` known-real clips of devcorpus and trainpool (LibriSpeech, VCTK, LibriTTS),
    longest first, the same ones every run."""
    import pandas as pd

    rows = []
    for corpus in ("devcorpus", "trainpool"):
        m = pd.read_csv(os.path.join(SHARED, corpus, "manifest.csv"))
        m = m[(m["label"] == "bonafide") & m["corpus"].isin(["librispeech", "vctk", "libritts"])]
        rows += [(os.path.join(SHARED, corpus, p), d) for p, d in zip(m["path"], m["duration_s"])]
    rows.sort(key=lambda r: (-r[1], r[0]))
    return [p for p, _ in rows[: 3 * n : 3]]


def _convert(tool: str, src: str, dst, *args: str) -> None:
    cmd = (["sox", src, *args, str(dst)] if tool == "sox" else
           ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", src, *args, str(dst)])
    subprocess.run(cmd, check=True, capture_output=True)


#: 8 kHz files as telephony stores them, written by sox and ffmpeg.
NARROWBAND_WRITERS = {
    "sox-pcm": ("sox", ("-r", "8000", "-b", "16")),
    "sox-mulaw": ("sox", ("-r", "8000", "-e", "mu-law", "-b", "8")),
    "ffmpeg-pcm": ("ffmpeg", ("-ar", "8000", "-c:a", "pcm_s16le")),
    "ffmpeg-mulaw": ("ffmpeg", ("-ar", "8000", "-c:a", "pcm_mulaw")),
}


@needs_tools
@needs_shared
def test_real_speech_stored_as_8_khz_files_comes_out_bona_fide(ray_session, tmp_path):
    clips = _real_clips(16)
    folder = tmp_path / "calls"
    for name, (tool, args) in NARROWBAND_WRITERS.items():
        (folder / name).mkdir(parents=True)
        for i, src in enumerate(clips):
            _convert(tool, src, folder / name / f"{i:02d}.wav", *args)
    # Stereo calls (agent / caller): two real clips side by side, 8 kHz mu-law.
    (folder / "stereo").mkdir()
    for i in range(0, len(clips), 2):
        subprocess.run(["sox", "-M", clips[i], clips[i + 1], "-r", "8000", "-e", "mu-law",
                        "-b", "8", str(folder / "stereo" / f"{i:02d}.wav")], check=True,
                       capture_output=True)
    summary = score_archive(ScoreConfig(input=str(folder), output=str(tmp_path / "out"),
                                        plots=False))
    rows = reports.read_report(summary["run_uri"])
    assert (rows["status"] == "ok").all(), rows[rows["status"] != "ok"]["error_message"].tolist()
    assert set(rows["band"]) == {"narrow"} and set(rows["source_sample_rate"]) == {8000}
    mono = rows[~rows["uri"].str.contains("/stereo/")]
    channels = rows[rows["uri"].str.contains("/stereo/") & rows["channel"].notna()]
    assert len(mono) == 4 * len(clips) and len(channels) == len(clips)
    # The shipped threshold allows 1 % false alarms on held-out real speech: a few of
    # these 80 judgements may be flagged, never most of them (1.1.0 flagged all).
    judged = pd_concat(mono, channels)
    flagged = judged["predicted_label"] == "spoof"
    assert flagged.mean() <= 0.05, judged[flagged][["uri", "channel", "spoof_score"]]
    manifest = _manifest()
    assert judged["threshold"].eq(manifest["bands"]["narrow"]["threshold"]).all()


def pd_concat(*frames):
    import pandas as pd

    return pd.concat(frames, ignore_index=True)


@needs_tools
@needs_shared
def test_a_call_with_generated_speech_on_one_side_flags_that_side(ray_session, tmp_path):
    import pandas as pd

    m = pd.read_csv(os.path.join(SHARED, "devcorpus", "manifest.csv"))
    # Tacotron 2 with a Griffin-Lim vocoder on the LJSpeech voice (devcorpus), against
    # LibriSpeech speech: the caller's side of the call is generated.
    fake = m[m["attack"] == "espnet:tacotron2.v1:GL"].sort_values("path")
    real = m[m["corpus"] == "librispeech"].sort_values("path")
    work = tmp_path / "parts"
    work.mkdir()
    sides = {}
    for side, rows in (("agent", real.head(4)), ("caller", fake.head(4))):
        paths = [os.path.join(SHARED, "devcorpus", p) for p in rows["path"]]
        sides[side] = str(work / f"{side}.wav")
        subprocess.run(["sox", *paths, "-r", "16000", "-c", "1", sides[side]], check=True,
                       capture_output=True)
    folder = tmp_path / "calls"
    folder.mkdir()
    call = folder / "call.wav"
    # sox -M pads the shorter side with silence; 8 kHz mu-law as a recorder stores it.
    subprocess.run(["sox", "-M", sides["agent"], sides["caller"], "-r", "8000", "-e",
                    "mu-law", "-b", "8", str(call)], check=True, capture_output=True)
    summary = score_archive(ScoreConfig(input=str(folder), output=str(tmp_path / "out"),
                                        plots=False))
    rows = reports.read_report(summary["run_uri"])
    by_channel = rows[rows["channel"].notna()].set_index("channel")
    assert by_channel.loc[0, "predicted_label"] == "bonafide"
    assert by_channel.loc[1, "predicted_label"] == "spoof"
    assert (by_channel["band"] == "narrow").all()
    file_row = rows[rows["channel"].isna()].iloc[0]
    assert file_row["predicted_label"] == "spoof"
