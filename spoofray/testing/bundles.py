"""Small real bundles, assembled by the real :func:`~spoofray.models.assemble.assemble_bundle`
from the members of :mod:`spoofray.testing.members`.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile

import numpy as np

from spoofray.config import AudioConfig, FeatureConfig
from spoofray.featurize import featurize_file
from spoofray.models.assemble import AssembleConfig, assemble_bundle
from spoofray.testing.datasets import synthetic_features
from spoofray.testing.members import save_ml_member, train_ml
from spoofray.testing.synth import make_demo_archive

#: 2-s windows and 32 mel bands: a 30-minute recording is 900 cheap windows.
AUDIO_CFG = FeatureConfig(audio=AudioConfig(window_s=2.0, hop_s=2.0), kinds=("logmel",),
                          n_mels=32)


@functools.lru_cache(maxsize=1)
def audio_trained_model():
    """An ensemble trained on the windows of the demo archive of seed 1 (the tests score
    archives of other seeds)."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = make_demo_archive(tmp, seed=1, n_bonafide=8, n_spoof=8, broken=False,
                                    duration_range_s=(1.0, 4.0))
        feats, labels = [], []
        for it in archive.items:
            r = featurize_file({"uri": os.path.join(archive.root, it.path)}, AUDIO_CFG)
            feats.append(r.features["logmel"])
            labels += [int(it.label == "spoof")] * r.n_windows
    return train_ml({"logmel": np.concatenate(feats)}, np.array(labels),
                    inputs=("logmel_pooled",))


def make_audio_bundle(tmp_path, output: str | None = None) -> str:
    """A real bundle named ``audio`` (one skops member on pooled log-mel, trained on a demo
    archive); returns its URI."""
    member = save_ml_member(audio_trained_model(), os.path.join(tmp_path, "tune"), AUDIO_CFG,
                            inputs=("logmel_pooled",), threshold=0.5)
    made = assemble_bundle(AssembleConfig(members=(member,), name="audio", version="1",
                                          output=output or os.path.join(tmp_path, "bundle")))
    return made["uri"]


#: 1-s windows and 16 mel bands: featurizing a 1-s file costs milliseconds.
AUDIT_CFG = FeatureConfig(audio=AudioConfig(window_s=1.0, hop_s=1.0), kinds=("logmel",),
                          n_mels=16, n_mfcc=13)


@functools.lru_cache(maxsize=None)
def _audit_model(seed: int):
    feats, y = synthetic_features(AUDIT_CFG, 40, seed=seed)
    return train_ml(feats, y, inputs=("logmel_pooled",))


def make_audit_bundle(work_dir, version: str, *, seed: int = 0, output: str | None = None) -> str:
    """A real bundle named ``audit`` with the given version; returns its URI."""
    member = save_ml_member(_audit_model(seed), os.path.join(work_dir, f"member-{version}"),
                            AUDIT_CFG, inputs=("logmel_pooled",), threshold=0.5)
    made = assemble_bundle(AssembleConfig(
        members=(member,), name="audit", version=version,
        output=output or os.path.join(work_dir, f"bundle-{version}")))
    return made["uri"]


def build_demo_bundle(work_dir: str, *, seed: int = 0, output: str | None = None) -> str:
    """Train a tiny sklearn member on a synthetic demo archive and bundle it (smoke tests).

    **Demonstrates the plumbing only**: the audio is synthetic (see :mod:`spoofray.testing.synth`).

    Parameters
    ----------
    work_dir : str
        Scratch folder for the demo archive and the member (local).
    output : str, optional
        Bundle folder; default ``<work_dir>/bundle``.

    Returns
    -------
    str
        The bundle's URI.
    """
    from spoofray.models import ml

    cfg = FeatureConfig(audio=AudioConfig(window_s=2.0, hop_s=2.0), kinds=("logmel",),
                        n_mels=32)
    archive = make_demo_archive(os.path.join(work_dir, "train_audio"), seed=seed + 1000,
                                n_bonafide=8, n_spoof=8, broken=False, duration_range_s=(1.0, 4.0))
    feats, labels = [], []
    for it in archive.items:
        r = featurize_file({"uri": os.path.join(archive.root, it.path)}, cfg)
        if r.status == "ok":
            feats.append(r.features["logmel"])
            labels += [int(it.label == "spoof")] * r.n_windows
    inputs = ["logmel_pooled"]
    X = ml.design_matrix({"logmel": np.concatenate(feats)}, inputs)
    model = ml.make_ensemble({"weight_svc": 0, "weight_knn": 0, "weight_hgb": 0,
                              "rf__n_estimators": 20, "inputs": tuple(inputs),
                              "random_state": seed}).fit(X, np.array(labels))
    member_dir = os.path.join(work_dir, "member", "model")
    os.makedirs(member_dir, exist_ok=True)
    ml.save_ensemble(model, os.path.join(member_dir, "ensemble.skops"))
    sidecar = {"name": "ml", "kind": "sklearn", "file": "ensemble.skops", "inputs": inputs,
               "feature_config": cfg.to_dict(), "feature_config_hash": cfg.config_hash(),
               "threshold": 0.5, "threshold_method": "fixed 0.5 (demo)",
               "training_data_fingerprint": f"synthetic demo archive seed {seed + 1000}"}
    with open(os.path.join(member_dir, "member.json"), "w") as fh:
        json.dump(sidecar, fh, indent=2)
    made = assemble_bundle(AssembleConfig(
        members=(member_dir,), name="demo", version=f"seed{seed}",
        output=output or os.path.join(work_dir, "bundle"), overwrite=True))
    return made["uri"]
