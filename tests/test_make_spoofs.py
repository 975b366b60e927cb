"""make_spoofs on a real local Ray: a tiny folder of generated clips, one corrupt file and
one labelled spoof; every input accounted for once; a resumed run finishes the rest."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from spoofray.augment import CopysynConfig
from spoofray.errors import ConfigError, OutputExistsError
from spoofray.pipeline.make_spoofs import DONE_DIR, MakeSpoofsConfig, done_uri, make_spoofs
from spoofray.sources import resolve_inputs
from spoofray.testing import voiced, write_wav

SR = 16_000
# Fast vocoders: HiFi-GAN has its own tests (tests/test_hifigan.py) and the job's smoke test.
RECIPE = CopysynConfig(vocoders=("griffin_lim", "world"), channels=("none", "noise:20"),
                       vocoder_kwargs={"griffin_lim": {"mel_inversion": "pinv", "n_iter": 8}})


@pytest.fixture
def calls(tmp_path):
    """a.wav (speaker s1, group call1), b.wav (no group), broken.wav (not audio) and a
    spoof someone labelled as such (skipped), listed by a manifest."""
    root = tmp_path / "calls"
    root.mkdir()
    write_wav(root / "a.wav", voiced(120.0, 0.4, SR), SR)
    write_wav(root / "b.wav", voiced(190.0, 0.4, SR), SR)
    write_wav(root / "tts.wav", voiced(150.0, 0.4, SR), SR)
    (root / "broken.wav").write_bytes(b"RIFF but not really a wav file" * 4)
    pd.DataFrame({"path": ["a.wav", "b.wav", "broken.wav", "tts.wav"],
                  "label": ["bonafide", "bonafide", "bonafide", "spoof"],
                  "speaker": ["s1", "s2", "s3", "s4"],
                  "group": ["call1", "", "", ""]}).to_csv(root / "manifest.csv", index=False)
    return root


def run(calls, out, **kwargs):
    cfg = MakeSpoofsConfig(input=str(calls / "manifest.csv"), output=str(out), copysyn=RECIPE,
                           items_per_task=1, progress_every_s=0.0, **kwargs)
    return make_spoofs(cfg)


def test_every_input_accounted_for_and_the_manifest_reads_back(ray_session, calls, tmp_path):
    out = tmp_path / "spoofs"
    result = run(calls, out)
    # 2 usable sources x (bona fide + 2 vocoders) x 2 channels = 12 files.
    assert result["counts"] == {"listed": 4, "made": 2, "resumed": 0, "error": 1, "skipped": 1,
                                "files_written": 12, "labels": {"bonafide": 4, "spoof": 8}}
    errors = pd.read_csv(result["errors"])
    assert errors["uri"].tolist() == [str(calls / "broken.wav")]
    assert errors["error_type"].tolist() == ["AudioDecodeError"]
    assert "broken.wav" in errors["error_message"][0]

    listed = resolve_inputs(result["manifest"])  # what extract_features reads
    assert len(listed) == 12 and all(os.path.getsize(it.uri) > 0 for it in listed)
    assert {it.attack for it in listed if it.label == "spoof"} == {"copysyn:griffin_lim",
                                                                   "copysyn:world"}
    # Copies keep their source's group (the source file when it had none) and speaker.
    assert {(it.speaker, it.group) for it in listed} == {("s1", "call1"),
                                                         ("s2", str(calls / "b.wav"))}
    # Both classes went through both channels: the channel cannot give the label away.
    for label in ("bonafide", "spoof"):
        names = [os.path.basename(it.uri) for it in listed if it.label == label]
        assert sum("__noise-20" in n for n in names) == len(names) / 2
    with pytest.raises(OutputExistsError, match="--resume"):
        run(calls, out)


def test_resume_skips_finished_sources_and_writes_the_same_manifest(ray_session, calls, tmp_path):
    out = tmp_path / "spoofs"
    first = run(calls, out)
    manifest = open(first["manifest"], "rb").read()
    # The state a kill leaves: no manifest yet, source b's files written but no done record.
    os.remove(first["manifest"])
    os.remove(done_uri(str(out), str(calls / "b.wav")))
    done_a = done_uri(str(out), str(calls / "a.wav"))
    a_files = [os.path.join(out, r["path"]) for r in json.load(open(done_a))["rows"]]
    stamps = {p: os.stat(p).st_mtime_ns for p in a_files}

    second = run(calls, out, resume=True)
    assert second["counts"]["resumed"] == 1 and second["counts"]["made"] == 1
    assert second["counts"]["error"] == 1 and second["counts"]["skipped"] == 1
    assert {p: os.stat(p).st_mtime_ns for p in a_files} == stamps  # not redone
    assert open(second["manifest"], "rb").read() == manifest
    assert len(os.listdir(out / DONE_DIR)) == 2

    other = CopysynConfig(vocoders=("world",))
    with pytest.raises(ConfigError, match="other settings"):
        make_spoofs(MakeSpoofsConfig(input=str(calls / "manifest.csv"), output=str(out),
                                     copysyn=other, resume=True))


def load_job(monkeypatch):
    import importlib.util

    jobs = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "jobs")
    monkeypatch.syspath_prepend(jobs)
    spec = importlib.util.spec_from_file_location("job_make_spoofs",
                                                  os.path.join(jobs, "make_spoofs.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_job_flags_build_the_config_and_refusals_come_before_ray(calls, tmp_path, monkeypatch,
                                                                  capsys):
    job = load_job(monkeypatch)
    args = job.parse_args(["--input", str(calls), "--output", str(tmp_path / "o"),
                           "--vocoders", "hifigan,world", "--hifigan-model", "LJSpeech",
                           "--channels", "none,band:300-3400,telephone:gsm+noise:20,"
                           "trim+pad_silence:0.5+gain:-6", "--resume"])
    cfg = job.build_config(args)
    assert cfg.copysyn.vocoders == ("hifigan", "world") and cfg.resume
    assert cfg.copysyn.channels == ("none", "band:300-3400", "telephone:gsm+noise:20",
                                    "trim+pad_silence:0.5+gain:-6")  # ',' between, '+' within
    assert cfg.copysyn.vocoder_kwargs == {"hifigan": {"model": "LJSpeech"}}
    assert job.build_config(job.parse_args(["--input", "x", "--output", "y"])).copysyn.vocoders \
        == ("griffin_lim", "world", "hifigan")

    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "manifest.csv").write_text("path\n")
    for argv, message in (
        (["--output", str(tmp_path / "used")], "pass --resume"),
        (["--output", str(tmp_path / "o"), "--channels", "bitcrush:4"], "unknown channel spec"),
        (["--output", str(tmp_path / "o"), "--channels", "none,trim+rawboost:9"], "1, 2 or 3"),
        (["--output", str(tmp_path / "o"), "--vocoders", "wavenet"], "unknown vocoder"),
    ):
        assert job.main(["--input", str(calls), "--vocoders", "world", *argv]) == 2
        assert message in capsys.readouterr().err  # refused before Ray starts (no cluster)
