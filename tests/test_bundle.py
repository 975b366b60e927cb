"""Model bundles: assemble, load, score, calibrate on dev, and refuse tampering.

Members are real (:mod:`spoofray.testing.members`): a small SpoofVotingEnsemble saved with
skops, a small Keras model saved as ``.keras``, each with the sidecar their producers write.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest

from spoofray import dataset
from spoofray.config import AudioConfig, FeatureConfig
from spoofray.errors import BundleIntegrityError, ConfigError
from spoofray.models import ml
from spoofray.models.assemble import AssembleConfig, assemble_bundle, file_level
from spoofray.models.bundle import Bundle, BundleSpec
from spoofray.models.registry import latest_bundle, list_registry
from spoofray.scoring import threshold_at_eer
from spoofray.testing.datasets import SMALL, synthetic_features
from spoofray.testing.members import (make_keras_model, save_keras_member, save_ml_member,
                                      train_ml)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- datasets and features of file-level labels ------------------------------------------


def write_feature_dataset(root, cfg, features, labels, windows_per_file=3) -> str:
    """A real feature dataset (``dataset.py`` layout) of consecutive windows per file."""
    n = len(labels)
    file_of = np.arange(n) // windows_per_file
    meta = {"uri": [f"/dev/f{f}.wav" for f in file_of],
            "window_index": (np.arange(n) % windows_per_file).tolist(),
            "start_s": [float(i % windows_per_file) for i in range(n)],
            "end_s": [float(i % windows_per_file + 1) for i in range(n)],
            "label": ["spoof" if y else "bonafide" for y in labels],
            "attack": [None] * n, "speaker": [None] * n, "group": [None] * n,
            "duration_s": [float(windows_per_file)] * n}
    dataset.write_part(str(root), dataset.FEATURES_DIR, "p0",
                       dataset.windows_table(meta, features, cfg))
    with open(os.path.join(root, dataset.MANIFEST_NAME), "w") as fh:
        json.dump({"feature_config": cfg.to_dict(), "inputs_fingerprint": "dev"}, fh)
    return str(root)


def file_labelled_features(cfg, n_files, windows_per_file=3, seed=0):
    """Synthetic features where all windows of a file share the file's label."""
    feats, _ = synthetic_features(cfg, n_files * windows_per_file, seed)
    y = np.repeat(np.arange(n_files) % 2, windows_per_file)
    rng = np.random.default_rng(seed + 1)
    shapes = cfg.feature_shapes()
    feats = {k: (rng.normal(size=(len(y), *shapes[k])) + 0.8 * y.reshape(-1, *[1] * len(
        shapes[k]))).astype(np.float32) for k in cfg.kinds}
    return feats, y


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SPOOFRAY_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="module")
def trained():
    feats, y = synthetic_features(SMALL, 80)
    return feats, y, train_ml(feats, y)


@pytest.fixture
def ml_bundle(tmp_path, trained):
    _, _, model = trained
    tune_out = save_ml_member(model, tmp_path / "tune", SMALL, threshold=0.42)
    made = assemble_bundle(AssembleConfig(members=(tune_out,), name="t", version="1",
                                          output=str(tmp_path / "bundle")))
    return made["uri"]


# --- behaviour -----------------------------------------------------------------------------


def test_ml_only_bundle_scores_like_its_model_and_never_imports_tensorflow(
        tmp_path, home, trained):
    feats, y, model = trained
    tune_out = save_ml_member(model, tmp_path / "tune", SMALL, threshold=0.42)
    made = assemble_bundle(AssembleConfig(members=(tune_out,), name="calls", version="v1"))
    assert made["uri"] == str(home / "bundles" / "calls" / "v1") == latest_bundle()

    bundle = Bundle.load(made["uri"])
    assert bundle.needed_kinds == ("stats",)
    assert bundle.feature_config.kinds == ("stats",)
    assert (bundle.threshold, bundle.threshold_method) == (0.42, "ml_member_threshold")
    out = bundle.score_windows(feats)
    expected = model.predict_proba(ml.design_matrix(feats, ["stats"]))[:, 1]
    np.testing.assert_allclose(out["score_ml"], expected, rtol=1e-6)
    np.testing.assert_allclose(out["spoof_score"], expected, rtol=1e-6)
    assert out["spoof_score"].shape == (80,)
    with pytest.raises(Exception, match="frozen|cannot assign"):
        bundle.threshold = 0.1

    script = (
        "import sys, numpy as np\n"
        "from spoofray.models.bundle import Bundle\n"
        f"b = Bundle.load({made['uri']!r})\n"
        "s = b.score_windows({'stats': np.zeros((3, 26), np.float32)})['spoof_score']\n"
        "assert s.shape == (3,)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_keras_only_bundle_scores_like_its_model(tmp_path):
    pytest.importorskip("keras")
    feats, _ = synthetic_features(SMALL, 10, seed=3)
    sidecar = save_keras_member(make_keras_model(SMALL, gain=2.0, bias=-1.0),
                                tmp_path / "train", SMALL)
    made = assemble_bundle(AssembleConfig(members=(sidecar,), name="dl", version="1",
                                          output=str(tmp_path / "b")))
    bundle = Bundle.load(made["uri"])
    assert bundle.needed_kinds == ("logmel",)
    assert (bundle.threshold, bundle.threshold_method) == (0.5, "default_0.5")
    out = bundle.score_windows({"logmel": feats["logmel"]})
    mean = feats["logmel"].reshape(10, -1).mean(axis=1)
    np.testing.assert_allclose(out["score_cnn"], 1 / (1 + np.exp(-(2.0 * mean - 1.0))), rtol=1e-4)
    np.testing.assert_array_equal(out["spoof_score"], out["score_cnn"])


def test_keras_member_with_code_is_refused(tmp_path):
    keras = pytest.importorskip("keras")
    inputs = keras.Input(shape=SMALL.feature_shapes()["logmel"])
    x = keras.layers.Lambda(lambda t: t * 2.0)(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
    sidecar = save_keras_member(model, tmp_path / "train", SMALL, name="sneaky")
    with pytest.raises(BundleIntegrityError, match="sneaky.keras.*refused"):
        assemble_bundle(AssembleConfig(members=(sidecar,), output=str(tmp_path / "b")))
    assert not os.path.exists(tmp_path / "b")


def test_dev_calibration_fits_fusion_and_threshold_at_file_level_eer(tmp_path, trained):
    pytest.importorskip("keras")
    _, _, model = trained
    tune_out = save_ml_member(model, tmp_path / "tune", SMALL, threshold=0.42)
    sidecar = save_keras_member(make_keras_model(SMALL, gain=1.0, bias=0.0),
                                tmp_path / "train", SMALL)
    dev_feats, dev_y = file_labelled_features(SMALL, 40, seed=7)
    dev = write_feature_dataset(tmp_path / "dev", SMALL, dev_feats, dev_y)
    made = assemble_bundle(AssembleConfig(members=(tune_out, sidecar), name="fused",
                                          version="1", output=str(tmp_path / "b"),
                                          dev_features=dev))
    with open(tmp_path / "b" / "bundle.json") as fh:
        manifest = json.load(fh)
    assert manifest["fusion"]["rule"] == "logistic"
    assert all(isinstance(w, float) for w in manifest["fusion"]["weights"])
    assert manifest["threshold_method"] == "dev_eer_file_level"
    assert manifest["dev_metrics"]["n_files"] == 40
    assert set(manifest["dev_metrics"]["members"]) == {"ml", "cnn"}

    bundle = Bundle.load(made["uri"], dataset=dev)
    assert bundle.needed_kinds == ("logmel", "stats")
    fused = bundle.score_windows(dev_feats)["spoof_score"].astype(np.float64)
    uris = np.repeat([f"/dev/f{i}.wav" for i in range(40)], 3)
    file_scores, file_labels = file_level(fused, dev_y, uris)
    threshold, eer = threshold_at_eer(file_labels, file_scores)
    assert bundle.threshold == pytest.approx(threshold, abs=1e-6)
    assert manifest["dev_metrics"]["fused"]["eer"] == pytest.approx(eer)
    # A real fit: the fused score separates the dev classes far better than chance.
    assert manifest["dev_metrics"]["fused"]["auc"] > 0.8


def test_driver_verifies_a_keras_bundle_without_tensorflow_and_refuses_tampering(tmp_path):
    pytest.importorskip("keras")
    sidecar = save_keras_member(make_keras_model(SMALL), tmp_path / "train", SMALL)
    made = assemble_bundle(AssembleConfig(members=(sidecar,), name="dl", version="1",
                                          output=str(tmp_path / "b")))
    shape = list(SMALL.feature_shapes()["logmel"])
    assert made["manifest"]["members"][0]["input_shapes"] == {"logmel": shape}

    script = (
        "import sys\n"
        "from spoofray.models.bundle import BundleSpec\n"
        f"s = BundleSpec.verify({made['uri']!r})\n"
        "print(s.needed_kinds, dict(s.members[0].input_shapes), len(s.payload()))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert run.returncode == 0, run.stderr
    first, modules = run.stdout.strip().splitlines()
    assert first == f"('logmel',) {{'logmel': {tuple(shape)}}} 3"
    assert modules == "[]"

    tampered = tmp_path / "tampered"
    shutil.copytree(made["uri"], tampered)
    with open(tampered / "members/cnn/cnn.keras", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(BundleIntegrityError, match=r"cnn.keras has sha256 \w+ but bundle.json"):
        BundleSpec.verify(str(tampered))


def test_input_shapes_recorded_checked_and_computed_for_old_bundles(tmp_path, ml_bundle,
                                                                     trained):
    feats, _, model = trained
    spec = BundleSpec.verify(ml_bundle)
    assert dict(spec.members[0].input_shapes) == {"stats": (26,)}
    assert not hasattr(spec, "score_windows")  # no models on the driver

    old = tmp_path / "old"  # made before input shapes were recorded
    shutil.copytree(ml_bundle, old)
    _edit_json(old / "bundle.json", lambda d: d["members"][0].pop("input_shapes"))
    assert dict(BundleSpec.verify(str(old)).members[0].input_shapes) == {"stats": (26,)}
    expected = model.predict_proba(ml.design_matrix(feats, ["stats"]))[:, 1]
    np.testing.assert_allclose(Bundle.load(str(old)).score_windows(feats)["spoof_score"],
                               expected, rtol=1e-6)

    edited = tmp_path / "edited"
    shutil.copytree(ml_bundle, edited)
    _edit_json(edited / "bundle.json",
               lambda d: d["members"][0].update(input_shapes={"stats": [25]}))
    with pytest.raises(BundleIntegrityError, match="assembled for windows of shapes"):
        BundleSpec.verify(str(edited))


def test_both_member_types_implement_the_window_member_protocol(trained):
    from spoofray.models.bundle import WindowMember  # noqa: F401 - the protocol under test

    feats, _, model = trained
    sk = ml.EnsembleMember(model=model, inputs=("stats",))
    p = sk.predict_proba(feats)
    assert p.shape == (80,) and p.dtype == np.float64
    np.testing.assert_allclose(p, model.predict_proba(ml.design_matrix(feats, ["stats"]))[:, 1])
    assert sk.input_problem({"stats": (26,)}) is None
    assert "expects 26 features" in sk.input_problem({"stats": (20,)})

    pytest.importorskip("keras")
    from spoofray.models import dl

    km = dl.KerasMember(model=make_keras_model(SMALL, gain=2.0, bias=-1.0), kind="logmel")
    p = km.predict_proba(feats)
    mean = feats["logmel"].reshape(80, -1).mean(axis=1)
    assert p.shape == (80,) and p.dtype == np.float64
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-(2.0 * mean - 1.0))), rtol=1e-4)
    assert km.predict_proba({"logmel": feats["logmel"][:0]}).shape == (0,)
    assert km.input_problem(SMALL.feature_shapes()) is None
    assert "takes input" in km.input_problem({"logmel": (3, 4)})


def _edit_json(path, fn):
    with open(path) as fh:
        doc = json.load(fh)
    fn(doc)
    with open(path, "w") as fh:
        json.dump(doc, fh)


class _Payload:
    """Unpickling this creates a file: the proof that a pickle would have run code."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_tampered_bundles_are_refused(tmp_path, ml_bundle):
    import hashlib

    def variant(name):
        path = tmp_path / name
        shutil.copytree(ml_bundle, path)
        return path

    b = variant("modified")
    with open(b / "members/ml/ensemble.skops", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(BundleIntegrityError,
                       match=r"members/ml/ensemble.skops has sha256 \w+ but bundle.json records"):
        Bundle.load(str(b))

    b = variant("sidecar")
    _edit_json(b / "members/ml/member.json", lambda d: d.update(threshold=0.01))
    with pytest.raises(BundleIntegrityError, match="member.json has sha256"):
        Bundle.load(str(b))

    b = variant("config")
    _edit_json(b / "bundle.json", lambda d: d["feature_config"].update(n_mels=40))
    with pytest.raises(BundleIntegrityError, match="feature_config_hash .* does not match"):
        Bundle.load(str(b))

    b = variant("hash")
    _edit_json(b / "bundle.json", lambda d: d.update(feature_config_hash="0" * 16))
    with pytest.raises(BundleIntegrityError, match="feature_config_hash 0+ does not match"):
        Bundle.load(str(b))

    b = variant("missing")
    os.remove(b / "members/ml/ensemble.skops")
    with pytest.raises(BundleIntegrityError, match="ensemble.skops is missing"):
        Bundle.load(str(b))

    # A pickle disguised as skops, with its checksum "fixed" in bundle.json: still refused,
    # and the pickle never runs.
    b = variant("pickle")
    sentinel = tmp_path / "pwned"
    data = pickle.dumps(_Payload(str(sentinel)))
    with open(b / "members/ml/ensemble.skops", "wb") as fh:
        fh.write(data)
    _edit_json(b / "bundle.json", lambda d: d["files"].update(
        {"members/ml/ensemble.skops": hashlib.sha256(data).hexdigest()}))
    with pytest.raises(BundleIntegrityError, match="ensemble.skops.*not a readable skops"):
        Bundle.load(str(b))
    assert not sentinel.exists()

    Bundle.load(ml_bundle)  # the original is untouched and loads


def test_dataset_with_other_feature_config_is_refused(tmp_path, ml_bundle):
    other = FeatureConfig(audio=AudioConfig(window_s=2.0, hop_s=1.0), kinds=("stats",))
    feats, y = synthetic_features(other, 6)
    dev = write_feature_dataset(tmp_path / "dev", other, feats, y)
    with pytest.raises(BundleIntegrityError, match=r"audio.window_s: 1.0 vs 2.0"):
        Bundle.load(ml_bundle, dataset=dev)


def test_members_with_different_feature_configs_do_not_assemble(tmp_path, trained):
    _, _, model = trained
    a = save_ml_member(model, tmp_path / "a", SMALL, name="a")
    other = FeatureConfig(audio=AudioConfig(window_s=1.0, hop_s=1.0), n_mels=16, n_mfcc=13,
                          n_fft=1024)
    b = save_ml_member(model, tmp_path / "b", other, name="b")
    with pytest.raises(ConfigError, match="n_fft: 512 vs 1024"):
        assemble_bundle(AssembleConfig(members=(a, b), output=str(tmp_path / "out")))


def test_s3_bundle_loads_through_cache_and_tampering_is_refused(tmp_path, s3_bucket, trained):
    import s3fs

    feats, _, model = trained
    tune_out = save_ml_member(model, tmp_path / "tune", SMALL)
    uri = f"{s3_bucket}/bundles/calls/1"
    assemble_bundle(AssembleConfig(members=(tune_out,), name="calls", version="1", output=uri))
    bundle = Bundle.load(uri, cache_dir=str(tmp_path / "cache"))
    assert bundle.uri == uri and bundle.root.startswith(str(tmp_path / "cache"))
    expected = model.predict_proba(ml.design_matrix(feats, ["stats"]))[:, 1]
    np.testing.assert_allclose(bundle.score_windows(feats)["spoof_score"], expected, rtol=1e-6)

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": os.environ["AWS_ENDPOINT_URL"]})
    fs.pipe(f"{uri[5:]}/members/ml/ensemble.skops", b"not the model")
    with pytest.raises(BundleIntegrityError, match="ensemble.skops has sha256"):
        Bundle.load(uri, cache_dir=str(tmp_path / "fresh-cache"))


def _load_job(name, monkeypatch):
    import importlib.util

    monkeypatch.syspath_prepend(os.path.join(REPO, "jobs"))
    spec = importlib.util.spec_from_file_location(f"job_{name}",
                                                  os.path.join(REPO, "jobs", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_registry_newest_bundle_and_job_cli(tmp_path, home, trained, monkeypatch, capsys):
    _, _, model = trained
    tune_out = save_ml_member(model, tmp_path / "tune", SMALL)
    job = _load_job("bundle", monkeypatch)

    def run(*args):
        code = job.main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    code, out, err = run("assemble", "--member", tune_out, "--name", "calls", "--version", "a")
    assert code == 0, err
    assert json.loads(out)["threshold_method"] == "ml_member_threshold"
    assemble_bundle(AssembleConfig(members=(tune_out,), name="calls", version="b"))
    assert [b["version"] for b in list_registry()] == ["a", "b"]
    assert latest_bundle() == str(home / "bundles" / "calls" / "b")

    code, out, err = run("verify", latest_bundle())
    assert code == 0 and json.loads(out)["verified"] is True, err
    code, out, _ = run("inspect", latest_bundle())
    inspected = json.loads(out)
    assert inspected["members"][0]["name"] == "ml" and len(inspected["files"]) == 2

    with open(os.path.join(latest_bundle(), "members/ml/ensemble.skops"), "ab") as fh:
        fh.write(b"x")
    code, _, err = run("verify", latest_bundle())
    assert code == 2 and "sha256" in err


def test_false_alarm_rule_flags_at_most_the_budget_of_bona_fide_dev_files(tmp_path, trained):
    _, _, model = trained
    tune_out = save_ml_member(model, tmp_path / "tune", SMALL, threshold=0.42)
    dev_feats, dev_y = file_labelled_features(SMALL, 40, seed=7)
    dev = write_feature_dataset(tmp_path / "dev", SMALL, dev_feats, dev_y)
    made = assemble_bundle(AssembleConfig(members=(tune_out,), output=str(tmp_path / "b"),
                                          dev_features=dev, threshold_rule="false_alarm_rate",
                                          target_false_alarm_rate=0.1))
    manifest = made["manifest"]
    assert manifest["threshold_method"] == "dev_false_alarm_rate_file_level"
    bundle = Bundle.load(made["uri"])
    fused = bundle.score_windows(dev_feats)["spoof_score"].astype(np.float64)
    uris = np.repeat([f"/dev/f{i}.wav" for i in range(40)], 3)
    file_scores, file_labels = file_level(fused, dev_y, uris)
    bona = file_scores[file_labels == 0]
    flagged = int(np.sum(bona >= bundle.threshold))
    assert flagged <= int(0.1 * len(bona))
    # ... and it is the lowest such threshold: one step lower flags one file more.
    assert int(np.sum(bona >= np.max(bona[bona < bundle.threshold]))) == flagged + 1
    assert manifest["threshold_details"]["dev_false_alarm_rate"] == flagged / len(bona)


def test_false_alarm_rule_without_bona_fide_scores_is_refused(tmp_path, trained):
    _, _, model = trained
    tune_out = save_ml_member(model, tmp_path / "tune", SMALL, threshold=0.42)
    with pytest.raises(ConfigError, match="needs bona fide scores"):
        assemble_bundle(AssembleConfig(members=(tune_out,), output=str(tmp_path / "b"),
                                       threshold_rule="false_alarm_rate"))
    with pytest.raises(ConfigError, match="threshold_rule"):
        AssembleConfig(members=(tune_out,), threshold_reports=("x",))
