"""Side-by-side benchmarks, run by hand through ``jobs/benchmark.py``; results go to
``docs/benchmarks.md``. Never used by tests: timing belongs here, not in unit tests.

``extract`` compares, on the same files in one run:

* the seeds' way: a plain per-file loop, ``librosa.load`` then ``librosa.feature.*`` per
  window, computing the same features with the same settings, on one core;
* the spoofray pipeline on a local Ray with 1 worker and with 2 workers.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from spoofray.config import FeatureConfig


def librosa_window_features(y: np.ndarray, cfg: FeatureConfig) -> dict[str, np.ndarray]:
    """The features of one window computed with librosa calls only (the baseline)."""
    import librosa
    import scipy.fft

    sr = cfg.audio.sample_rate
    stft_kw = dict(n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length,
                   window="hann", center=True)
    out: dict[str, np.ndarray] = {}
    power = np.abs(librosa.stft(y, **stft_kw)) ** 2
    mel_db = librosa.power_to_db(
        librosa.feature.melspectrogram(S=power, sr=sr, n_mels=cfg.n_mels, fmin=cfg.fmin,
                                       fmax=cfg.fmax), ref=1.0, amin=1e-10, top_db=None)

    def with_deltas(c: np.ndarray) -> np.ndarray:
        if not cfg.deltas:
            return c
        return np.concatenate([c, librosa.feature.delta(c), librosa.feature.delta(c, order=2)])

    if "logmel" in cfg.kinds:
        out["logmel"] = mel_db
    if "mfcc" in cfg.kinds:
        out["mfcc"] = with_deltas(librosa.feature.mfcc(S=mel_db, n_mfcc=cfg.n_mfcc))
    if "lfcc" in cfg.kinds:
        fmax = cfg.fmax or sr / 2
        edges = np.linspace(cfg.fmin, fmax, cfg.n_linear_filters + 2)
        freqs = librosa.fft_frequencies(sr=sr, n_fft=cfg.n_fft)
        lower = (freqs[None, :] - edges[:-2, None]) / (edges[1:-1] - edges[:-2])[:, None]
        upper = (edges[2:, None] - freqs[None, :]) / (edges[2:] - edges[1:-1])[:, None]
        fb = np.maximum(0, np.minimum(lower, upper))
        log_lin = np.log(np.maximum(fb @ power, 1e-10))
        out["lfcc"] = with_deltas(scipy.fft.dct(log_lin, axis=0, norm="ortho")[: cfg.n_lfcc])
    if "stats" in cfg.kinds:
        out["stats"] = np.array([
            np.mean(librosa.feature.chroma_stft(y=y, sr=sr)),
            np.mean(librosa.feature.rms(y=y)),
            np.mean(librosa.feature.spectral_centroid(y=y, sr=sr)),
            np.mean(librosa.feature.spectral_bandwidth(y=y, sr=sr)),
            np.mean(librosa.feature.spectral_rolloff(y=y, sr=sr)),
            np.mean(librosa.feature.zero_crossing_rate(y)),
            *np.mean(librosa.feature.mfcc(y=y, sr=sr, n_mfcc=20), axis=1),
        ])
    return out


def librosa_loop(paths: Sequence[str], cfg: FeatureConfig) -> dict[str, Any]:
    """The baseline: load each file with librosa, window it, featurise each window."""
    import librosa

    from spoofray.audio import frame_windows

    started = time.perf_counter()
    audio_s = 0.0
    n_windows = 0
    for path in paths:
        try:
            y, _ = librosa.load(path, sr=cfg.audio.sample_rate, mono=True)
        except Exception:  # noqa: BLE001 - the baseline skips what it cannot read, like the seeds
            continue
        audio_s += len(y) / cfg.audio.sample_rate
        windows, _, _ = frame_windows(y.astype(np.float32), cfg.audio)
        for w in windows:
            librosa_window_features(w, cfg)
        n_windows += len(windows)
    wall = time.perf_counter() - started
    return {"wall_s": wall, "audio_s": audio_s, "files": len(paths), "windows": n_windows}


def pipeline_run(items: Sequence[Any], cfg: FeatureConfig, *, workers: int) -> dict[str, Any]:
    """One spoofray extraction of ``items`` with ``workers`` parallel tasks on the current Ray."""
    from spoofray.pipeline.extract import ExtractConfig, extract_features

    with tempfile.TemporaryDirectory(prefix="spoofray-bench-") as tmp:
        started = time.perf_counter()
        manifest = extract_features(ExtractConfig(
            input="benchmark files", output=f"{tmp}/ds", features=cfg, concurrency=workers,
            files_per_task=8), items=items)
        wall = time.perf_counter() - started
    return {"wall_s": wall, "audio_s": manifest["audio_hours"] * 3600,
            "files": manifest["counts"]["files_listed"], "windows": manifest["counts"]["windows"]}


def machine_info() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "machine": platform.machine(),
            "python": platform.python_version()}


def extract_benchmark(paths: Sequence[str], cfg: FeatureConfig) -> list[dict[str, Any]]:
    """Rows of the extraction comparison (per-core throughput in audio s per wall s)."""
    from spoofray.sources import AudioItem

    items = [AudioItem(uri=p) for p in paths]
    rows = []
    base = librosa_loop(paths, cfg)
    rows.append({"method": "librosa per-file loop (1 process)", "cores": 1, **base})
    # Warm-up: start Ray's worker processes and their imports once, as on a running cluster;
    # the timed runs then measure steady-state throughput, not process start-up.
    pipeline_run(items[:4], cfg, workers=2)
    for workers in (1, 2):
        res = pipeline_run(items, cfg, workers=workers)
        rows.append({"method": f"spoofray Ray Data, {workers} worker(s)", "cores": workers, **res})
    for r in rows:
        r["audio_x_realtime_per_core"] = r["audio_s"] / r["wall_s"] / r["cores"]
        r["files_per_s"] = r["files"] / r["wall_s"]
    return rows


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    body = ""
    for r in rows:
        cells = [f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c]) for c in columns]
        body += "| " + " | ".join(cells) + " |\n"
    return head + body


def with_kinds(cfg: FeatureConfig, kinds: Sequence[str]) -> FeatureConfig:
    return dataclasses.replace(cfg, kinds=tuple(kinds))
