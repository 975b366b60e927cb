"""Config plumbing: constraint tables, nested configs, and job flags generated from the
dataclasses (each default written once, ``--config`` file with flags on top)."""

import argparse
import dataclasses
import importlib.util
import os
import re

import pytest
import yaml

from spoofray import cli
from spoofray.audit import AuditConfig
from spoofray.config import (AudioConfig, Check, Config, FeatureConfig, Interval, Options,
                             ScoreSettings)
from spoofray.errors import ConfigError
from spoofray.pipeline.score import ScoreConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JOBS = ("score_archive", "extract_features", "nightly_audit", "make_spoofs", "tune_ml",
        "train_dl", "evaluate")


def load_job(name, monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(REPO, "jobs"))
    spec = importlib.util.spec_from_file_location(f"job_{name}",
                                                  os.path.join(REPO, "jobs", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _parser(job, argv=("--smoke-test",)):
    """The job's parser, caught by parse_args (its ArgumentParser is built inside)."""
    seen = []
    real = argparse.ArgumentParser.parse_args

    def spy(self, args=None, namespace=None):
        seen.append(self)
        return real(self, args, namespace)

    argparse.ArgumentParser.parse_args = spy
    try:
        job.parse_args(list(argv))
    finally:
        argparse.ArgumentParser.parse_args = real
    return seen[0]


# --- constraints --------------------------------------------------------------------------


@pytest.mark.parametrize("constraint, good, bad", [
    (Interval(int, 1), [1, 7], [0, -1, 1.5, True, "3", None]),
    (Interval(float, 0, 1), [0, 0.5, 1, 1.0], [-0.1, 1.01, "0.5", False]),
    (Interval(float, 0, closed="neither"), [1e-9, 3], [0, 0.0, -2]),
    (Interval(float, 0, 1, closed="left"), [0.0, 0.99], [1.0]),
    (Options(("a", "b")), ["a", "b"], ["c", None, ["a"]]),
    (Check(lambda v: v.isdigit(), "digits"), ["12"], ["x", None, 3]),
])
def test_constraints_accept_and_refuse(constraint, good, bad):
    assert all(constraint.accepts(v) for v in good)
    assert not any(constraint.accepts(v) for v in bad)


@pytest.mark.parametrize("cls, kwargs, message", [
    (ScoreConfig, {"batch_size": 0}, r"ScoreConfig\.batch_size must be an int >= 1, got 0"),
    (ScoreConfig, {"threshold": 1.5}, r"threshold must be None or a number in \[0, 1\], got 1.5"),
    (ScoreConfig, {"run_id": "a/b"}, r"run_id must be None or a name of letters.*got 'a/b'"),
    (ScoreConfig, {"num_gpus": -1.0}, r"num_gpus must be a number >= 0, got -1.0"),
    (AuditConfig, {"on_new_bundle": "sometimes"},
     r"on_new_bundle must be one of \['rescore-all', 'new-only'\], got 'sometimes'"),
    (AuditConfig, {"date": "2025-13-01"}, r"date must be None or a date YYYY-MM-DD"),
])
def test_constraint_errors_name_field_value_and_allowed_values(cls, kwargs, message):
    with pytest.raises(ConfigError, match=message) as info:
        cls(input="in", output="out", **kwargs)
    name = next(iter(kwargs))
    assert f"--{name.replace('_', '-')}" in str(info.value)  # what to do: the flag to fix


def test_cross_field_checks_still_run_after_the_table():
    with pytest.raises(ConfigError, match="larger than window_s"):
        AudioConfig(window_s=1.0, hop_s=2.0)
    with pytest.raises(ConfigError, match="needs both input and output"):
        ScoreConfig(input="", output="o")
    with pytest.raises(ConfigError, match="--num-gpus 1.0 would go unused"):
        ScoreConfig(input="i", output="o", stages="one", num_gpus=1.0)
    with pytest.raises(ConfigError, match="use --stages two"):
        ScoreSettings(stages="one", num_gpus=0.5)  # the audit's scoring settings too


def test_every_constraint_names_a_field():
    import spoofray.augment as augment
    import spoofray.models.assemble as assemble
    import spoofray.models.dl as dl
    import spoofray.pipeline.extract as extract
    import spoofray.pipeline.make_spoofs as make_spoofs
    import spoofray.reports as reports
    import spoofray.training.dl_config as dl_config
    import spoofray.training.tune as tune

    classes = [AudioConfig, FeatureConfig, ScoreSettings, ScoreConfig, AuditConfig,
               extract.ExtractConfig, make_spoofs.MakeSpoofsConfig, augment.CopysynConfig,
               augment.FeatureAugmentConfig, tune.TuneMLConfig, dl_config.DLTrainConfig,
               reports.EvaluateConfig, assemble.AssembleConfig, *dl.MEMBER_CONFIGS.values()]
    for cls in classes:
        names = {f.name for f in dataclasses.fields(cls)}
        assert set(cls._constraints) <= names, cls
        assert set(cls._nested) <= names, cls


# --- nesting ------------------------------------------------------------------------------


def test_audit_config_nests_the_score_settings_and_round_trips_through_yaml():
    cfg = AuditConfig(input="s3://b/a", output="s3://b/o",
                      scoring=ScoreSettings(batch_size=8, featurize_memory_mb=2048))
    text = yaml.safe_dump(cfg.to_dict())
    assert AuditConfig.from_dict(yaml.safe_load(text)) == cfg
    assert yaml.safe_load(text)["scoring"]["featurize_memory_mb"] == 2048
    # Every scoring setting of a one-off run exists for the audit too, with one default.
    assert {f.name for f in dataclasses.fields(ScoreSettings)} <= \
        {f.name for f in dataclasses.fields(ScoreConfig)}
    with pytest.raises(ConfigError, match=r"'batch_size' belongs under 'scoring'"):
        AuditConfig.from_dict({"input": "a", "output": "b", "batch_size": 8})


# --- job flags ----------------------------------------------------------------------------


def _expected_default(flag):
    return f"default: {cli.show_default(flag.field)}"


@pytest.mark.parametrize("name", JOBS)
def test_job_help_lists_the_dataclass_defaults_and_argparse_holds_none(name, monkeypatch):
    job = load_job(name, monkeypatch)
    parser = _parser(job)
    flags = parser.get_default("_config_flags")
    assert flags, f"{name} has no generated config flags"
    help_text = re.sub(r"\s+", " ", parser.format_help())
    for dest, flag in flags.items():
        # A default written a second time in argparse would show up here.
        assert parser.get_default(dest) is None, f"{name} --{dest} has its own default"
        action = next(a for a in parser._actions if a.dest == dest)
        assert _expected_default(flag) in re.sub(r"\s+", " ", action.help % {}), (name, dest)
    assert "--config" in help_text


def test_bundle_assemble_flags_come_from_assemble_config(monkeypatch):
    from spoofray.models.assemble import AssembleConfig

    job = load_job("bundle", monkeypatch)
    args = job.parse_args(["assemble", "--member", "a", "--member", "s3://b/m",
                           "--threshold-report", "r", "--threshold-rule", "false_alarm_rate"])
    cfg = cli.build_config(AssembleConfig, args)
    assert cfg.members == ("a", "s3://b/m") and cfg.threshold_reports == ("r",)
    assert cfg.target_false_alarm_rate == AssembleConfig.target_false_alarm_rate


def test_flags_override_the_config_file_which_overrides_defaults(tmp_path, monkeypatch):
    job = load_job("nightly_audit", monkeypatch)
    path = tmp_path / "audit.yaml"
    path.write_text(yaml.safe_dump({"input": "s3://b/archive", "output": "s3://b/audit",
                                    "psi_bins": 20, "reference_runs": 3,
                                    "scoring": {"batch_size": 32, "plots": False}}))
    cfg = job.build_config(job.parse_args(["--config", str(path), "--batch-size", "4",
                                           "--reference-runs", "5", "--plots"]))
    assert (cfg.psi_bins, cfg.reference_runs) == (20, 5)           # file, then flag
    assert (cfg.scoring.batch_size, cfg.scoring.plots) == (4, True)  # flags win
    assert cfg.scoring.concurrency == ScoreSettings.concurrency      # default
    assert cfg.input == "s3://b/archive"


def test_config_file_gives_the_required_settings_and_paths_become_absolute(tmp_path,
                                                                           monkeypatch):
    job = load_job("score_archive", monkeypatch)
    path = tmp_path / "score.yaml"
    path.write_text("input: calls\noutput: out\nbundle: latest\n")
    cfg = job.build_config(job.parse_args(["--config", str(path)]))
    assert cfg.input == os.path.abspath("calls") and cfg.bundle == "latest"
    with pytest.raises(SystemExit) as info:
        job.parse_args(["--input", "x"])
    assert info.value.code == 2
    path.write_text("input: x\noutput: y\nbatch_sise: 3\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['batch_sise'\]"):
        job.build_config(job.parse_args(["--config", str(path)]))


def test_extract_flags_reach_the_nested_feature_and_audio_configs(monkeypatch):
    job = load_job("extract_features", monkeypatch)
    cfg = job.build_config(job.parse_args(["--input", "x", "--output", "y", "--features",
                                           "mfcc,stats", "--window-s", "2", "--hop-s", "1",
                                           "--float16", "--pad", "repeat"]))
    assert cfg.features.kinds == ("mfcc", "stats") and cfg.features.store_float16
    assert (cfg.features.audio.window_s, cfg.features.audio.hop_s) == (2.0, 1.0)
    assert cfg.features.audio.pad == "repeat"
    assert cfg.features.n_mels == FeatureConfig.n_mels
    with pytest.raises(SystemExit):
        job.parse_args(["--input", "x", "--output", "y", "--pad", "mirror"])  # choices


def test_nested_flag_names_must_not_collide():
    @dataclasses.dataclass(frozen=True)
    class Inner(Config):
        size: int = 1

    @dataclasses.dataclass(frozen=True)
    class Outer(Config):
        _nested = {"inner": Inner}
        size: int = 2
        inner: Inner = dataclasses.field(default_factory=Inner)

    with pytest.raises(ValueError, match="same flag"):
        cli.add_config_flags(argparse.ArgumentParser(), Outer)
