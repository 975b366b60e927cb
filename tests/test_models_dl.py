"""Keras members: shapes from the FeatureConfig, the save/load contract, custom layers."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from spoofray.config import AudioConfig, FeatureConfig
from spoofray.errors import ConfigError
from spoofray.models import dl

#: Tiny versions of every member (fast on CPU), keyed by architecture.
TINY = {
    "cnn": {"filters": [8, 16]},
    "lcnn": {"width": 0.25},
    "tdnn": {"channels": [16, 16], "kernel_sizes": [3, 3], "dilations": [1, 2]},
    "rnn": {"units": 8, "cell": "lstm"},
    "mlp": {"hidden": [16]},
    "conformer": {"dim": 16, "heads": 2, "blocks": 1, "conv_kernel": 7},
    "efficientnet_b0": {},
    "vgg16": {},
}
FC_A = FeatureConfig(audio=AudioConfig(window_s=1.0, hop_s=1.0), n_mels=16, n_mfcc=8, n_lfcc=8,
                     n_linear_filters=20, kinds=("logmel", "mfcc", "lfcc"))
FC_B = FeatureConfig(audio=AudioConfig(window_s=0.5, hop_s=0.25), n_mels=24, n_mfcc=10, n_lfcc=6,
                     n_linear_filters=20, deltas=False, kinds=("logmel", "mfcc", "lfcc"))


def _inputs(cfg: dl.MemberConfig, fc: FeatureConfig, n: int = 5, seed: int = 0) -> np.ndarray:
    shape = fc.feature_shapes()[cfg.input_kind]
    return (np.random.default_rng(seed).normal(size=(n, *shape)) * 3 - 4).astype(np.float32)


@pytest.fixture(scope="module")
def saved_members(tmp_path_factory):
    """Every member built on FC_B, saved, with its in-process scores."""
    out = tmp_path_factory.mktemp("members")
    scores = {}
    for arch, params in TINY.items():
        cfg = dl.member_config(arch, params)
        x = _inputs(cfg, FC_B)
        model = dl.build_member(cfg, FC_B, dl.feature_norm_stats(x))
        scores[arch] = (x, model.predict(x, verbose=0))
        dl.save_member(model, str(out), dl.sidecar_dict(arch, cfg, FC_B, dev_metrics={"eer": 0.1},
                                                          training_data_fingerprint="f" * 64))
    return out, scores


def test_importing_spoofray_does_not_load_tensorflow():
    code = ("import sys, spoofray.models.dl, spoofray.training.train, spoofray.augment; "
            "bad = [m for m in ('tensorflow', 'keras', 'ray') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize("arch", sorted(TINY))
@pytest.mark.parametrize("fc", [FC_A, FC_B], ids=["1s", "0.5s"])
def test_member_input_shape_comes_from_the_feature_config(arch, fc):
    import keras

    cfg = dl.member_config(arch, TINY[arch])
    if arch in ("efficientnet_b0", "vgg16") and fc is FC_A:
        pytest.skip("the big backbones are checked on one config (time)")
    x = _inputs(cfg, fc, n=3)
    model = dl.build_member(cfg, fc, dl.feature_norm_stats(x))
    assert tuple(model.input_shape) == (None, *fc.feature_shapes()[cfg.input_kind])
    p = np.asarray(model(x, training=False))
    assert p.shape == (3, 1) and p.dtype == np.float32 and ((0 <= p) & (p <= 1)).all()
    # Calling without a training flag is inference too (no layer leaks training=True).
    assert np.array_equal(np.asarray(model(x)), p)
    keras.backend.clear_session()


def test_saved_members_reload_after_clear_session_with_identical_scores(saved_members):
    """(tests/test_train.py checks the same in a fresh process, on trained members.)"""
    import keras

    out, scores = saved_members
    keras.backend.clear_session()
    for arch, (x, p) in scores.items():
        model = dl.load_member(str(out / f"{arch}.keras"))
        side = dl.read_sidecar(str(out / f"{arch}.keras"))
        assert list(model.input_shape[1:]) == side["input_shape"]
        assert np.array_equal(model.predict(x, verbose=0), p), arch


def test_saved_members_have_no_lambda_layers_and_a_complete_sidecar(saved_members):
    import zipfile

    out, _ = saved_members
    for arch in TINY:
        with zipfile.ZipFile(out / f"{arch}.keras") as z:
            config = z.read("config.json").decode()
        assert '"Lambda"' not in config
        side = json.loads((out / f"{arch}.json").read_text())
        assert side["name"] == arch and side["kind"] == "keras" and side["file"] == f"{arch}.keras"
        assert side["input"] == dl.member_config(arch).input_kind
        assert side["architecture"] == arch
        assert side["feature_config"] == FC_B.to_dict()
        assert side["feature_config_hash"] == FC_B.config_hash()
        assert side["dev_metrics"] == {"eer": 0.1}
        assert side["training_data_fingerprint"] == "f" * 64
        assert FeatureConfig.from_dict(side["feature_config"]) == FC_B
        assert dl.member_config(arch, side["member_config"]) == dl.member_config(arch, TINY[arch])


def test_load_member_refuses_a_lambda_model_under_safe_mode(tmp_path):
    import keras

    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Lambda(lambda t: t * 2.0)(inp))
    path = str(tmp_path / "lambda.keras")
    model.save(path)
    with pytest.raises(ValueError, match="(?i)lambda|unsafe|safe_mode"):
        dl.load_member(path)
    with pytest.raises(FileNotFoundError):
        dl.load_member(str(tmp_path / "missing.keras"))


def test_normalisation_is_inside_the_model():
    cfg = dl.member_config("mlp", {"hidden": [4]})
    x = _inputs(cfg, FC_A, n=20)
    mean, var = dl.feature_norm_stats(x)
    assert mean.shape == var.shape == (FC_A.feature_shapes()["mfcc"][0],)
    model = dl.build_member(cfg, FC_A, (mean, var))
    norm = model.get_layer("global_norm")
    got = np.asarray(norm(x))
    assert np.allclose(got, (x - mean[None, :, None]) / np.sqrt(var)[None, :, None], atol=1e-4)
    with pytest.raises(ConfigError, match="norm_stats"):
        dl.build_member(cfg, FC_A, None)
    inst = dl.build_member(dl.member_config("mlp", {"normalization": "instance"}), FC_A)
    z = np.asarray(inst.get_layer("instance_norm")(x))
    assert np.allclose(z.mean(axis=-1), 0, atol=1e-4) and np.allclose(z.std(axis=-1), 1, atol=1e-2)


def test_custom_layers_by_hand():
    from spoofray.models import dl_layers as Lr

    x = np.array([[1.0, 5.0, 3.0, 2.0]], np.float32)  # halves [1, 5] and [3, 2]
    assert np.array_equal(np.asarray(Lr.MaxFeatureMap()(x)), [[3.0, 5.0]])
    glu = np.asarray(Lr.GatedLinearUnit()(np.array([[2.0, 0.0]], np.float32)))
    assert np.allclose(glu, [[1.0]])  # 2 * sigmoid(0)
    seq = np.array([[[1.0, 10.0], [3.0, 10.0]]], np.float32)  # (1, frames=2, ch=2)
    pooled = np.asarray(Lr.StatsPooling(epsilon=0.0)(seq))
    assert np.allclose(pooled, [[2.0, 10.0, 1.0, 0.0]])
    zeros = np.zeros((1, 3, 4), np.float32)
    pe = np.asarray(Lr.SinusoidalPositionEncoding()(zeros))
    assert np.allclose(pe[0, 0], [0, 0, 1, 1])  # sin(0), sin(0), cos(0), cos(0)
    assert np.allclose(pe[0, 1, 0], np.sin(1.0))


@pytest.mark.parametrize("fmt", ["weights.h5", "legacy.h5"])
def test_backbone_fine_tunes_from_a_local_weights_file(tmp_path, fmt):
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    cfg = dl.member_config("vgg16")
    rows, frames = FC_B.feature_shapes()["logmel"]
    size = (rows * -(-32 // rows), frames * -(-32 // frames))
    donor = keras.applications.VGG16(include_top=False, weights=None, input_shape=(*size, 3))
    path = str(tmp_path / ("donor.weights.h5" if fmt == "weights.h5" else "donor_notop.h5"))
    if fmt == "weights.h5":
        donor.save_weights(path)
    else:  # the layout of the keras.applications ImageNet files, matched by layer name
        import h5py

        with h5py.File(path, "w") as f:
            legacy_h5_format.save_weights_to_hdf5_group(f, donor)
    tuned = dl.build_member(dl.member_config("vgg16", {"weights_path": path}), FC_B,
                            dl.feature_norm_stats(_inputs(cfg, FC_B)))
    backbone = tuned.get_layer("vgg16")
    for a, b in zip(donor.weights, backbone.weights):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    fresh = dl.build_member(cfg, FC_B, dl.feature_norm_stats(_inputs(cfg, FC_B)))
    assert not np.array_equal(np.asarray(fresh.get_layer("vgg16").weights[0]),
                              np.asarray(donor.weights[0]))
    with pytest.raises(FileNotFoundError):
        dl.build_member(dl.member_config("vgg16", {"weights_path": str(tmp_path / "no.h5")}), FC_B,
                        dl.feature_norm_stats(_inputs(cfg, FC_B)))


@pytest.mark.parametrize("arch, params, match", [
    ("nope", {}, "unknown member architecture"),
    ("rnn", {"cell": "transformer"}, "cell"),
    ("tdnn", {"channels": [8], "kernel_sizes": [3, 3], "dilations": [1]}, "equal lengths"),
    ("cnn", {"normalization": "batch"}, "normalization"),
    ("cnn", {"filterz": [8]}, "unknown key"),
])
def test_member_config_errors(arch, params, match):
    with pytest.raises(ConfigError, match=match):
        dl.member_config(arch, params)


def test_member_refuses_a_kind_the_dataset_lacks():
    only_logmel = FeatureConfig(kinds=("logmel",))
    with pytest.raises(ConfigError, match="lfcc"):
        dl.member_config("lcnn").input_shape(only_logmel)
    with pytest.raises(ConfigError, match="rows, frames"):
        dl.member_config("cnn", {"input_kind": "stats"}).input_shape(FeatureConfig())


def test_training_data_fingerprint():
    a = dl.training_data_fingerprint(["a", "b", "a"], ["spoof", "bonafide", "spoof"])
    assert a == dl.training_data_fingerprint(["b", "a"], ["bonafide", "spoof"])
    assert a != dl.training_data_fingerprint(["b", "a"], ["spoof", "spoof"])
    assert len(a) == 64
