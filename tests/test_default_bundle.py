"""The shipped default bundle: it loads and verifies, jobs use it without --bundle, and its
model card quotes the numbers its bundle.json records."""

from __future__ import annotations

import json
import os
import re
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
