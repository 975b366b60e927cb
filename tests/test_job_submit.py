"""Jobs submitted with the real `ray job submit` CLI to a real local head."""

from __future__ import annotations

import json
import re

from spoofray import dataset, testing


def test_extract_features_via_ray_job_submit(submit_job, tmp_path):
    src = tmp_path / "in"
    (src / "real").mkdir(parents=True)
    (src / "fake").mkdir(parents=True)
    testing.write_wav(src / "real" / "a.wav", testing.voiced(120, 2.5, 16_000), 16_000)
    testing.write_wav(src / "fake" / "b.wav", testing.chirp(200, 2000, 1.0, 16_000), 16_000)
    (src / "fake" / "c.wav").write_bytes(b"")
    out = tmp_path / "ds"

    run = submit_job(["python", "jobs/extract_features.py", "--input", str(src),
                      "--output", str(out), "--features", "stats"])

    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert re.search(r"Job 'raysubmit_\w+' succeeded", run.stdout), run.stdout[-2000:]
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["counts"]["files_ok"] == 2 and manifest["counts"]["files_error"] == 1
    assert len(dataset.read_errors(str(out))) == 1


def test_relative_output_under_ray_job_submit_is_refused(submit_job, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    testing.write_wav(src / "a.wav", testing.voiced(120, 1.5, 16_000), 16_000)

    run = submit_job(["python", "jobs/score_archive.py", "--input", str(src),
                      "--output", "out/reports"])

    text = run.stdout + run.stderr
    assert run.returncode != 0, text[-3000:]
    assert "--output out/reports: a relative path under `ray job submit`" in text, text[-3000:]
    assert "starting Ray" not in text  # refused before the job joined the cluster
