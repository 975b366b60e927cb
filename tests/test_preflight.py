"""Mistakes refused before Ray starts: the real jobs run as subprocesses, each refusal one
line on stderr with exit code 2, and the job never reached its "starting Ray" line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from spoofray import cli, testing
from spoofray.errors import BundleIntegrityError, ConfigError
from spoofray.models.bundle import BundleSpec
from spoofray.preflight import check_not_a_run, check_output_root

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STARTING_RAY = "starting Ray"


def run_job(job: str, *args: str, env: dict | None = None, cwd: str | None = None,
            drop: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", *drop)}
    return subprocess.run([sys.executable, os.path.join(REPO, "jobs", job), *args],
                          capture_output=True, text=True, timeout=300,
                          env={**base, **(env or {})}, cwd=cwd)


def assert_refused(run: subprocess.CompletedProcess, *expected: str) -> str:
    """rc 2, one line on stderr naming the problem, and Ray never started."""
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2, run.stdout[-2000:] + run.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr[-3000:]
    for text in expected:
        assert text in lines[0], lines[0]
    assert STARTING_RAY not in run.stderr + run.stdout
    return lines[0]


@pytest.fixture
def audio_folder(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    testing.write_wav(folder / "a.wav", testing.voiced(150.0, 1.0, 16000), 16000)
    return folder


@pytest.mark.parametrize("job", ["score_archive.py", "extract_features.py", "nightly_audit.py"])
def test_missing_input_and_file_output_are_refused_before_ray(job, tmp_path, audio_folder):
    assert_refused(run_job(job, "--input", str(tmp_path / "nope"), "--output",
                           str(tmp_path / "out")), "no such file or folder", "nope")
    (tmp_path / "a-file").write_text("x")
    assert_refused(run_job(job, "--input", str(audio_folder), "--output",
                           str(tmp_path / "a-file")), "--output", "a-file is a file")
    assert_refused(run_job(job, "--input", str(audio_folder), "--output",
                           str(tmp_path / "a-file" / "below")), "cannot be created",
                   "a-file is a file")


@pytest.mark.parametrize("job", ["score_archive.py", "nightly_audit.py"])
def test_missing_bundle_folder_says_it_does_not_exist(job, tmp_path, audio_folder):
    line = assert_refused(run_job(job, "--input", str(audio_folder), "--output",
                                  str(tmp_path / "out"), "--bundle", str(tmp_path / "nob")))
    assert "nob: no such folder" in line and "bundle.json" not in line


def test_score_refuses_an_earlier_run_folder_and_a_taken_run_id(tmp_path, audio_folder):
    run = tmp_path / "reports" / "run_id=old"
    (run / "report").mkdir(parents=True)
    (run / "report" / "part-00000.parquet").write_bytes(b"x")
    (run / "_SUCCESS").write_text("")
    line = assert_refused(run_job("score_archive.py", "--input", str(audio_folder),
                                  "--output", str(run)), "earlier run")
    assert str(tmp_path / "reports") in line  # says what to give instead
    assert_refused(run_job("score_archive.py", "--input", str(audio_folder), "--output",
                           str(tmp_path / "reports"), "--run-id", "old"),
                   "run_id=old already exists; choose another --run-id")


def test_extract_refuses_an_existing_output_before_ray(tmp_path, audio_folder):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "x").write_text("x")
    assert_refused(run_job("extract_features.py", "--input", str(audio_folder), "--output",
                           str(tmp_path / "ds")), "already exists", "--overwrite")


def test_s3_without_credentials_is_one_line(s3_server, s3_bucket, tmp_path, audio_folder):
    keys = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
            "AWS_DEFAULT_PROFILE")
    # Nothing for botocore to find: no keys, no ~/.aws, no instance role; moto's endpoint.
    env = {"HOME": str(tmp_path), "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_CONFIG_FILE": str(tmp_path / "none"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_ENDPOINT_URL": s3_server}
    for job in ("score_archive.py", "extract_features.py", "nightly_audit.py"):
        run = run_job(job, "--input", f"{s3_bucket}/calls/", "--output",
                      str(tmp_path / "out"), env=env, drop=keys)
        assert_refused(run, "no S3 credentials found", f"{s3_bucket}/calls/",
                       "AWS_ACCESS_KEY_ID")
        assert "Traceback" not in run.stderr
    # With credentials (the fixture's), a missing bucket for the output is refused too.
    assert_refused(run_job("score_archive.py", "--input", str(audio_folder), "--output",
                           "s3://no-such-bucket-spoofray/reports/"),
                   "bucket no-such-bucket-spoofray does not exist")


def test_relative_paths_refused_under_ray_job_submit(tmp_path, audio_folder):
    # The environment variable ray job submit sets for the entrypoint.
    env = {cli.JOB_SUBMIT_ENV: '{"runtime_env": {"working_dir": "."}}'}
    line = assert_refused(run_job("score_archive.py", "--input", str(audio_folder),
                                  "--output", "out/reports", env=env, cwd=str(tmp_path)),
                          "--output out/reports", "absolute path", "s3://")
    assert "ray job submit" in line
    # A relative input that is not part of the working directory is refused too ...
    assert_refused(run_job("score_archive.py", "--input", "calls", "--output",
                           str(tmp_path / "o"), env=env, cwd=str(tmp_path)), "--input calls")
    # ... and outside ray job submit the same relative output is fine (made absolute).
    run = run_job("score_archive.py", "--input", str(tmp_path / "nope"), "--output",
                  "out/reports", cwd=str(tmp_path))
    assert_refused(run, "no such file or folder")


def test_files_shipped_with_the_working_dir_may_stay_relative(monkeypatch):
    import argparse

    from spoofray.audit import AuditConfig

    monkeypatch.setenv(cli.JOB_SUBMIT_ENV, "{}")
    monkeypatch.chdir(REPO)
    p = argparse.ArgumentParser()
    cli.add_config_flags(p, AuditConfig)
    args = p.parse_args(["--input", "s3://b/calls/", "--output", "s3://b/audit/",
                         "--rules", "audit_rules/default.yaml"])
    assert cli.given(args)["rules"] == os.path.join(REPO, "audit_rules", "default.yaml")
    args = p.parse_args(["--input", "s3://b/calls/", "--output", "audit"])
    with pytest.raises(ConfigError, match="--output audit: a relative path"):
        cli.given(args)


def test_output_checks(tmp_path):
    check_output_root(str(tmp_path / "new" / "deeper"))  # creatable
    check_output_root(str(tmp_path))
    (tmp_path / "f").write_text("")
    with pytest.raises(ConfigError, match="is a file"):
        check_output_root(str(tmp_path / "f"))
    with pytest.raises(ConfigError, match="earlier run"):
        check_not_a_run(str(tmp_path / "run_id=x"))
    check_not_a_run(str(tmp_path))


def test_missing_bundle_folder(tmp_path):
    with pytest.raises(BundleIntegrityError, match="no such folder"):
        BundleSpec.verify(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleIntegrityError, match="no bundle.json"):
        BundleSpec.verify(str(tmp_path / "empty"))
