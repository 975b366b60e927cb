"""The console: quiet by default (TensorFlow's import notices, Ray's progress noise), one
progress line of our own, a one-file run that ends with the file's answer."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

from spoofray import console, testing
from spoofray.progress import Progress
from spoofray.testing.waiting import run_to_end

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Deadlines for subprocesses on a busy 2-core machine: importing TensorFlow (91 s
#: measured at load ~20-36, issue #30), and a local Ray started for a few tasks (over
#: 300 s at that load: the Ray start alone had not finished).
TF_IMPORT_S = 600
RAY_RUN_S = 900


def test_count_grammar():
    assert console.count(1, "file") == "1 file"
    assert console.count(0, "file") == "0 files"
    assert console.count(1200, "file") == "1,200 files"


def test_progress_line_files_audio_rate_and_time_left():
    now = [0.0]
    out = io.StringIO()
    shown = Progress(1000, total_bytes=1000 * 100, stream=out, every_s=30, clock=lambda: now[0])
    now[0] = 10.0
    shown.add(100, audio_s=1800.0, size_bytes=5_000)  # 5 % of the bytes in 10 s
    now[0] = 20.0
    shown.add(100, audio_s=1800.0, size_bytes=5_000)  # within 30 s of the last line: quiet
    now[0] = 45.0
    shown.add(800, audio_s=14_400.0, size_bytes=90_000)
    shown.close()  # nothing new since the last line: no repeat
    lines = out.getvalue().splitlines()
    assert lines == [
        "scored 100/1,000 files (10%), 30.0 min of audio, 10.0 files/s, about 3m10s left",
        "scored 1,000/1,000 files (100%), 5.00 h of audio, 22.2 files/s, done in 45s",
    ]


def test_progress_of_one_file_and_without_sizes():
    now = [0.0]
    out = io.StringIO()
    shown = Progress(1, stream=out, clock=lambda: now[0])
    now[0] = 90.0
    shown.close()
    assert out.getvalue() == "scored 0/1 file (0%), 0 s of audio, 0.0 files/min\n"
    shown = Progress(4, stream=(out := io.StringIO()), clock=lambda: now[0])
    now[0] = 100.0
    shown.add(1)  # a quarter of the files in 10 s: 30 s left by files
    assert "about 30s left" in out.getvalue()


def test_tensorflow_imports_without_its_notices():
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL",
                                                             console.VERBOSE_ENV)}
    run = run_to_end([sys.executable, "-c", "from spoofray import console; "
                      "tf = console.import_tensorflow(); print(tf.constant(2).numpy())"],
                     timeout_s=TF_IMPORT_S, what="a TensorFlow import", cwd=REPO,
                     env={**env, "PYTHONPATH": REPO})
    assert run.returncode == 0 and run.stdout.strip() == "2", run.stderr[-2000:]
    for notice in ("oneDNN", "cuda", "absl::InitializeLog", "cpu_feature_guard"):
        assert notice not in run.stderr, run.stderr[-2000:]


def test_a_held_back_tensorflow_import_shows_its_output_only_when_it_fails(tmp_path):
    # A stand-in package: what the hook does to "import tensorflow", without TensorFlow.
    (tmp_path / "tensorflow").mkdir()
    (tmp_path / "tensorflow" / "__init__.py").write_text(
        "import os\nos.write(2, b'notice written while importing\\n')\n"
        "if os.environ.get('BREAK_IT'):\n    raise ImportError('a broken install')\n")
    (tmp_path / "tensorflow" / "sub.py").write_text("VALUE = 7\n")
    code = ("import sys; from spoofray import console; console.hold_back_tensorflow_import(); "
            "import tensorflow.sub; print(tensorflow.sub.VALUE, "
            "type(tensorflow.__spec__.loader).__name__, type(tensorflow.__loader__).__name__); "
            "print('after', file=sys.stderr)")
    env = {k: v for k, v in os.environ.items() if k != console.VERBOSE_ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), REPO])
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env=env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["7", "SourceFileLoader", "SourceFileLoader"]
    assert run.stderr == "after\n"  # held back during the import only
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env={**env, "BREAK_IT": "1"})
    assert run.returncode != 0
    assert "notice written while importing" in run.stderr and "a broken install" in run.stderr


LOCAL_RAY_WORKERS = """
import os
import ray
from spoofray.pipeline.runtime import init_ray

init_ray(num_cpus=1)

@ray.remote(max_retries=0)
def in_worker(tag):
    import tensorflow  # noqa: F401  (its start-up notices are written here, if anywhere)
    from ray._private import services

    os.write(2, f"{tag} worker wrote this after the import\\n".encode())
    if tag == "failing":
        raise RuntimeError("a real error in a worker")
    return services.canonicalize_bootstrap_address_or_die(None)

print("own", ray.get_runtime_context().gcs_address)
print("quiet", ray.get(in_worker.remote("quiet")))
try:
    ray.get(in_worker.remote("failing"))
except ray.exceptions.RayTaskError as exc:
    print("caught", str(exc).splitlines()[-1])
verbose = in_worker.options(runtime_env={"env_vars": {"SPOOFRAY_VERBOSE": "1"}})
print("verbose", ray.get(verbose.remote("verbose")))
"""


@pytest.mark.slow
def test_local_ray_workers_import_tensorflow_quietly_and_find_their_own_cluster():
    # Ray Train's controller and workers import TensorFlow before any spoofray code runs:
    # init_ray's worker hook holds its notices back, unless verbose. And a stale record of
    # another cluster (what `ray start` leaves in <ray tmp>/ray_current_cluster) must not
    # be where a worker's own Ray look-ups go (Ray Train's placement-group cleaner).
    tmp = tempfile.mkdtemp(prefix="sr-", dir="/tmp")  # short: Ray's socket paths are limited
    try:
        os.makedirs(os.path.join(tmp, "ray"))
        with open(os.path.join(tmp, "ray", "ray_current_cluster"), "w") as fh:
            fh.write("127.0.0.1:9\n")  # nobody's GCS
        env = {k: v for k, v in os.environ.items()
               if k not in ("RAY_ADDRESS", console.VERBOSE_ENV)}
        env.update(RAY_TMPDIR=tmp, PYTHONPATH=REPO)
        run = run_to_end([sys.executable, "-c", LOCAL_RAY_WORKERS], timeout_s=RAY_RUN_S,
                         what="a local Ray with 3 TensorFlow-importing tasks", cwd=tmp, env=env)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
        said = dict(line.split(" ", 1) for line in run.stdout.splitlines())
        assert said["quiet"] == said["own"] == said["verbose"], said
        assert said["caught"].endswith("RuntimeError: a real error in a worker"), said
        # What each worker wrote to its stderr: what Ray shows on the driver's console.
        logs = os.path.join(tmp, "ray", "session_latest", "logs")
        written = {}
        for name in os.listdir(logs):
            if name.startswith("worker-") and name.endswith(".err"):
                with open(os.path.join(logs, name), errors="replace") as fh:
                    text = fh.read()
                for tag in ("quiet", "failing", "verbose"):
                    if f"{tag} worker wrote this" in text:
                        written[tag] = text
        assert set(written) == {"quiet", "failing", "verbose"}, list(written)
        # Which start-up notices TensorFlow prints depends on the CPU and build (the oneDNN
        # one is missing on some CPUs): the verbose worker shows the log preamble and at
        # least one of them, the quiet one none.
        notices = ("oneDNN", "cpu_feature_guard", "cuda")
        for notice in ("absl::InitializeLog", *notices):
            assert notice not in written["quiet"], written["quiet"][-2000:]
        assert "absl::InitializeLog" in written["verbose"], written["verbose"][-2000:]
        assert any(n in written["verbose"] for n in notices), written["verbose"][-2000:]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_one_file_run_prints_its_decision_and_a_progress_line(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    testing.write_wav(folder / "call.wav", testing.voiced(140.0, 2.0, 16000), 16000)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", console.VERBOSE_ENV)}
    run = run_to_end([sys.executable, os.path.join(REPO, "jobs", "score_archive.py"),
                      "--input", str(folder), "--output", str(tmp_path / "out"),
                      "--num-cpus", "2"], timeout_s=RAY_RUN_S, what="a one-file scoring run",
                     env=env)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    last = run.stdout.strip().splitlines()[-1]
    assert last.startswith(f"{folder / 'call.wav'}: ") and "spoof score" in last
    assert (" spoof (" in last) or (" bonafide (" in last)
    assert "scoring 1 file from" in run.stderr, run.stderr
    # No "1 files" anywhere; a rate such as "12.1 files/min" is not a count of one.
    assert not re.search(r"(?<![\d.])1 files\b", run.stderr), run.stderr
    assert "scored 1/1 file (100%)" in run.stderr, run.stderr
    # Ray Data's progress output and Ray's start-up notices stay out of the way.
    for noise in ("Total Progress", "Starting execution", "Token authentication",
                  "logging_progress", "Execution plan"):
        assert noise not in run.stderr, noise
