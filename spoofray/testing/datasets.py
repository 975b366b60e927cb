"""Generated window features: in memory, and as datasets and tables in the real on-disk
formats (no audio).

Datasets are written through :mod:`spoofray.dataset` like the output of
``extract_features``, so training, sweeps and bundles read them as they read real features;
the classes are learnable but not trivially so. For smoke runs of the jobs and for tests.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from spoofray import dataset, storage
from spoofray.config import STATS_NAMES, AudioConfig, FeatureConfig


#: Small windows and few mel bands: the feature config of the tests' small members and
#: bundles (featurizing a 1-s file costs milliseconds).
SMALL = FeatureConfig(audio=AudioConfig(window_s=1.0, hop_s=1.0), kinds=("logmel", "stats"),
                      n_mels=16, n_mfcc=13)


# --- window features in memory ----------------------------------------------------------------


def synthetic_features(cfg: FeatureConfig, n: int, seed: int = 0):
    """Windows whose features shift with the label: (features, labels 1 = spoof)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    shapes = cfg.feature_shapes()
    feats = {k: (rng.normal(size=(n, *shapes[k])) + y.reshape(-1, *[1] * len(shapes[k])))
             .astype(np.float32) for k in cfg.kinds}
    return feats, y


# --- window feature datasets (the layout of spoofray.dataset) ---------------------------------


def write_toy_feature_dataset(root: str, feature_cfg: FeatureConfig, *, n_files: int = 32,
                              windows_per_file: int = 2, n_attacks: int = 4, n_speakers: int = 4,
                              n_parts: int = 2, seed: int = 0) -> str:
    """A small learnable feature dataset (smoke tests, examples): spoof windows carry extra
    energy in the lower quarter of every feature's rows; everything else is noise.

    Half the files are spoof (attacks ``A0..``), half bona fide (speakers ``S0..``).
    Returns ``root``.
    """
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    shapes = feature_cfg.feature_shapes()
    meta: dict[str, list] = {f.name: [] for f in dataset.WINDOW_META_SCHEMA if f.name != "feature_config_hash"}
    feats: dict[str, list] = {k: [] for k in shapes}
    for f in range(n_files):
        spoof = f % 2 == 1
        for w in range(windows_per_file):
            meta["uri"].append(f"toy://file{f:04d}.wav")
            meta["window_index"].append(w)
            meta["start_s"].append(w * feature_cfg.audio.hop_s)
            meta["end_s"].append(w * feature_cfg.audio.hop_s + feature_cfg.audio.window_s)
            meta["label"].append("spoof" if spoof else "bonafide")
            meta["attack"].append(f"A{(f // 2) % n_attacks}" if spoof else None)
            meta["speaker"].append(f"S{(f // 2) % n_speakers}")
            meta["group"].append(f"file{f:04d}")
            meta["duration_s"].append(windows_per_file * feature_cfg.audio.hop_s)
            for kind, shape in shapes.items():
                x = rng.normal(size=shape).astype(np.float32) - 5.0
                if spoof:
                    x[: max(1, shape[0] // 4)] += 1.5
                feats[kind].append(x)
    table = dataset.windows_table(meta, {k: np.stack(v) for k, v in feats.items()}, feature_cfg)
    bounds = np.linspace(0, len(table), n_parts + 1).astype(int)
    for i in range(n_parts):
        part: pa.Table = table.slice(bounds[i], bounds[i + 1] - bounds[i])
        dataset.write_part(root, dataset.FEATURES_DIR, f"toy{i:03d}", part)
    manifest = {"feature_config": feature_cfg.to_dict(), "toy": True, "n_windows": len(table)}
    storage.write_bytes_atomic(storage.join(root, dataset.MANIFEST_NAME), json.dumps(manifest).encode())
    return root


def synthetic_feature_config() -> FeatureConfig:
    """A small FeatureConfig (0.5 s windows, 8 MFCC/LFCC) for generated datasets."""
    return FeatureConfig(audio=AudioConfig(window_s=0.5, hop_s=0.5),
                         kinds=("mfcc", "lfcc", "stats"), n_mfcc=8, n_lfcc=8)


def write_synthetic_dataset(root: str, *, n_speakers: int = 6, files_per_class: int = 2,
                            windows_per_file: int = 3, separation: float = 1.0,
                            seed: int = 0) -> str:
    """Write a generated feature dataset (no audio) in the real on-disk layout.

    Each speaker has ``files_per_class`` bona fide and spoof files; spoof windows are
    shifted by ``separation`` standard deviations on a few dimensions, on top of a
    per-speaker offset, so the task is learnable but not trivial.
    """
    cfg = synthetic_feature_config()
    shapes = cfg.feature_shapes()
    rng = np.random.default_rng(seed)
    meta: dict[str, list[Any]] = {c: [] for c in dataset.WINDOW_META_SCHEMA.names
                                  if c != "feature_config_hash"}
    feats: dict[str, list[np.ndarray]] = {k: [] for k in shapes}
    for s in range(n_speakers):
        offset = {k: rng.normal(0, 0.5, shapes[k][0]) for k in shapes}
        for label in ("bonafide", "spoof"):
            for f in range(files_per_class):
                uri = f"/synthetic/spk{s}/{label}_{f}.wav"
                for w in range(windows_per_file):
                    meta["uri"].append(uri)
                    meta["window_index"].append(w)
                    meta["start_s"].append(w * cfg.audio.hop_s)
                    meta["end_s"].append(w * cfg.audio.hop_s + cfg.audio.window_s)
                    meta["label"].append(label)
                    attack = f"A0{(s + f) % 3 + 1}" if label == "spoof" else None
                    meta["attack"].append(attack)
                    meta["speaker"].append(f"spk{s}")
                    meta["group"].append(f"spk{s}")
                    meta["duration_s"].append(windows_per_file * cfg.audio.hop_s)
                    shift = separation if label == "spoof" else 0.0
                    for kind, shape in shapes.items():
                        rows = offset[kind].reshape(-1, *[1] * (len(shape) - 1))
                        x = rng.normal(0, 1, shape) + rows
                        x[:4] += shift
                        feats[kind].append(x.astype(np.float32))
    arrays = {k: np.stack(v) for k, v in feats.items()}
    table = dataset.windows_table(meta, arrays, cfg)
    dataset.write_part(root, dataset.FEATURES_DIR, dataset.part_key(sorted(set(meta["uri"]))),
                       table)
    manifest = {"feature_config": cfg.to_dict(), "generated": "synthetic features, no audio",
                "counts": {"windows": len(meta["uri"]), "files_ok": len(set(meta["uri"]))}}
    storage.write_bytes_atomic(storage.join(root, dataset.MANIFEST_NAME),
                               json.dumps(manifest, indent=2).encode())
    return root


# --- feature tables (DEEP-VOICE CSV) ----------------------------------------------------------


def write_synthetic_table(path: str, *, n_rows: int = 120, separation: float = 1.0,
                          seed: int = 0) -> str:
    """Write a DEEP-VOICE style CSV (26 stats columns + LABEL REAL/FAKE) of generated rows."""
    rng = np.random.default_rng(seed)
    labels = np.array(["REAL", "FAKE"])[np.arange(n_rows) % 2]
    values = rng.normal(0, 1, (n_rows, len(STATS_NAMES)))
    values[labels == "FAKE", :5] += separation
    frame = pd.DataFrame(values, columns=list(STATS_NAMES))
    frame["LABEL"] = labels
    storage.write_bytes_atomic(path, frame.to_csv(index=False).encode())
    return path
