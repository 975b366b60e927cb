"""Small real ensemble members, saved in the folder layouts and sidecar formats their
producers write: a skops :class:`~spoofray.models.ml.SpoofVotingEnsemble` as a Tune output
(``training/tune.py``), a Keras model as a Train output (``training/train.py``).
"""

from __future__ import annotations

import json
import os

import numpy as np

from spoofray.models import ml


def train_ml(features, y, inputs=("stats",)):
    """A small fitted ensemble (8-tree random forest and a depth-3 tree, soft vote) on
    ``inputs`` of ``features`` (kind -> windows), labels ``y`` (1 = spoof)."""
    model = ml.make_ensemble({"weight_svc": 0, "weight_knn": 0, "weight_hgb": 0,
                              "rf__n_estimators": 8, "dt__max_depth": 3,
                              "inputs": tuple(inputs), "random_state": 0})
    return model.fit(ml.design_matrix(features, inputs), y)


def save_ml_member(model, out_dir, cfg, *, name="ml", inputs=("stats",), threshold=0.5) -> str:
    """A tune output folder: ``<out_dir>/model/ensemble.skops`` + ``member.json``."""
    model_dir = os.path.join(out_dir, "model")
    os.makedirs(model_dir, exist_ok=True)
    ml.save_ensemble(model, os.path.join(model_dir, "ensemble.skops"))
    sidecar = {"name": name, "kind": "sklearn", "file": "ensemble.skops", "inputs": list(inputs),
               "feature_config": cfg.to_dict(), "feature_config_hash": cfg.config_hash(),
               "threshold": threshold, "threshold_method": "oof_eer",
               "oof_metrics": {"eer": 0.1}, "training_data_fingerprint": "fp-ml"}
    with open(os.path.join(model_dir, "member.json"), "w") as fh:
        json.dump(sidecar, fh)
    return str(out_dir)


def make_keras_model(cfg, kind="logmel", *, gain=2.0, bias=-1.0):
    """``sigmoid(gain * mean(x) + bias)`` over a window's tensor, as a real Keras model."""
    import keras

    shape = cfg.feature_shapes()[kind]
    inputs = keras.Input(shape=shape)
    x = keras.layers.Flatten()(inputs)
    dense = keras.layers.Dense(1, activation="sigmoid")
    model = keras.Model(inputs, dense(x))
    size = int(np.prod(shape))
    dense.set_weights([np.full((size, 1), gain / size, np.float32), np.array([bias], np.float32)])
    return model


def save_keras_member(model, out_dir, cfg, *, name="cnn", kind="logmel") -> str:
    """A train output folder: ``<out_dir>/<name>.keras`` + ``<name>.json``; returns the json."""
    from spoofray.models import dl

    sidecar = {"name": name, "kind": "keras", "file": f"{name}.keras", "input": kind,
               "input_shape": list(cfg.feature_shapes()[kind]),
               "feature_config": cfg.to_dict(), "feature_config_hash": cfg.config_hash(),
               "dev_metrics": {"eer": 0.2}, "training_data_fingerprint": "fp-dl"}
    return dl.save_member(model, str(out_dir), sidecar)[1]
