"""Side-by-side benchmarks, run by hand through ``benchmarks/benchmark.py``; results go to
``docs/benchmarks.md``. Never used by tests: timing belongs here, not in unit tests.

``extract`` compares, on the same files in one run:

* the seeds' way: a plain per-file loop, ``librosa.load`` then ``librosa.feature.*`` per
  window, computing the same features with the same settings, on one core;
* the spoofray pipeline on a local Ray with 1 worker and with 2 workers;
* the machine's own ceiling for 2 vs 1: the per-file work (``featurize_file``) in one plain
  process alone, then in two at once, without Ray.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
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
    """The baseline: load each file with librosa, window it, featurise each window.

    Runs with one BLAS/OpenMP thread, so that it uses the one core it is credited with (left
    alone, OpenBLAS spreads librosa's filterbank products over every core; on 2 cores that
    made the loop use 1.7 cores and run slower, 27.7x instead of 35.2x real time).
    """
    import librosa
    from threadpoolctl import threadpool_limits

    from spoofray.audio import frame_windows

    started = time.perf_counter()
    audio_s = 0.0
    n_windows = 0
    with threadpool_limits(limits=1):
        for path in paths:
            try:
                y, _ = librosa.load(path, sr=cfg.audio.sample_rate, mono=True)
            except Exception:  # noqa: BLE001 - skips what it cannot read, as the seeds did
                continue
            audio_s += len(y) / cfg.audio.sample_rate
            windows, _, _ = frame_windows(y.astype(np.float32), cfg.audio)
            for w in windows:
                librosa_window_features(w, cfg)
            n_windows += len(windows)
    wall = time.perf_counter() - started
    return {"wall_s": wall, "audio_s": audio_s, "files": len(paths), "windows": n_windows}


def pipeline_run(items: Sequence[Any], cfg: FeatureConfig, *, workers: int,
                 files_per_task: int | None = None) -> dict[str, Any]:
    """One spoofray extraction of ``items`` with ``workers`` parallel tasks on the current Ray
    (``files_per_task``: the product default unless given)."""
    from spoofray.pipeline.extract import ExtractConfig, extract_features

    batching = {} if files_per_task is None else {"files_per_task": files_per_task}
    with tempfile.TemporaryDirectory(prefix="spoofray-bench-") as tmp:
        started = time.perf_counter()
        manifest = extract_features(ExtractConfig(
            input="benchmark files", output=f"{tmp}/ds", features=cfg, concurrency=workers,
            **batching), items=items)
        wall = time.perf_counter() - started
    return {"wall_s": wall, "audio_s": manifest["audio_hours"] * 3600,
            "files": manifest["counts"]["files_listed"], "windows": manifest["counts"]["windows"]}


#: Files each plain process featurizes for the machine's 2-vs-1 ceiling (>= 10 s of work
#: on devcorpus clips, so that neither side is mostly start or end).
PLAIN_PROCESS_FILES = 400


def featurize_seconds(paths: Sequence[str], cfg_dict: dict[str, Any]) -> tuple[float, float]:
    """Featurize ``paths`` one by one in this process with one BLAS thread; return the wall
    seconds and the seconds of audio."""
    from threadpoolctl import threadpool_limits

    from spoofray.featurize import featurize_file

    cfg = FeatureConfig.from_dict(cfg_dict)
    audio_s = 0.0
    with threadpool_limits(limits=1):
        started = time.perf_counter()
        for p in paths:
            audio_s += featurize_file({"uri": p}, cfg).duration_s or 0.0
        return time.perf_counter() - started, audio_s


def plain_process_rows(pool: Any, paths: Sequence[str], cfg: FeatureConfig) -> list[dict]:
    """The same files featurized by one pool process alone, then by both at once (each all
    of ``paths``): how well this machine runs two busy processes, with no Ray involved."""
    job = (list(paths), cfg.to_dict())
    alone, audio_s = pool.apply(featurize_seconds, job)
    together = max(wall for wall, _ in pool.starmap(featurize_seconds, [job, job], chunksize=1))
    method = "featurize_file in plain processes (no Ray), {} at once"
    return [{"method": method.format(1), "cores": 1, "wall_s": alone, "audio_s": audio_s,
             "files": len(paths)},
            {"method": method.format(2), "cores": 2, "wall_s": together, "audio_s": 2 * audio_s,
             "files": 2 * len(paths)}]


def machine_info() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "machine": platform.machine(),
            "python": platform.python_version()}


def extract_benchmark(paths: Sequence[str], cfg: FeatureConfig,
                      repeats: int = 1) -> list[dict[str, Any]]:
    """Rows of the extraction comparison (per-core throughput in audio s per wall s).

    Each repeat runs the librosa loop, then the pipeline with 1 and with 2 workers, on the
    same files, then the machine's 2-vs-1 ceiling on the first
    ``PLAIN_PROCESS_FILES`` (:func:`plain_process_rows`), then a 2-file pipeline run (its
    wall time is start-up: planning, the first task, publishing); interleaving them puts
    the machine's slow spells (other tenants, steal time) into every method rather than
    into one.
    """
    import multiprocessing

    from spoofray.sources import AudioItem

    # Sizes as a listing fills them: the pipeline starts the largest files first.
    items = [AudioItem(uri=p, size_bytes=os.path.getsize(p)) for p in paths]
    # Warm-up: start Ray's worker processes and their imports once, as on a running cluster;
    # the timed runs then measure steady-state throughput, not process start-up. One file per
    # task, so that both workers get tasks (one task would warm up only one of them).
    pipeline_run(items[:8], cfg, workers=2, files_per_task=1)
    ceiling_paths = list(paths[:PLAIN_PROCESS_FILES])
    rows = []
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.starmap(featurize_seconds, [(paths[:2], cfg.to_dict())] * 2, chunksize=1)
        for repeat in range(1, repeats + 1):
            base = librosa_loop(paths, cfg)
            rows.append({"repeat": repeat, "method": "librosa per-file loop (1 process)",
                         "cores": 1, **base})
            for workers in (1, 2):
                res = pipeline_run(items, cfg, workers=workers)
                rows.append({"repeat": repeat,
                             "method": f"spoofray pipeline, {workers} worker(s)",
                             "cores": workers, **res})
            rows += [{"repeat": repeat, **r} for r in plain_process_rows(pool, ceiling_paths, cfg)]
            rows.append({"repeat": repeat, "method": "start-up: spoofray pipeline, 2 files",
                         "cores": 2, **pipeline_run(items[:2], cfg, workers=2)})
    for r in rows:
        r["audio_x_realtime_per_core"] = r["audio_s"] / r["wall_s"] / r["cores"]
        r["files_per_s"] = r["files"] / r["wall_s"]
    return rows


def extract_ratios(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per repeat: pipeline (1 worker) vs librosa loop per core, 2 workers vs 1 (wall), and
    the same 2-vs-1 throughput ratio for plain processes (the machine's ceiling)."""
    out = []
    for repeat in sorted({r["repeat"] for r in rows}):
        base, one, two, plain_one, plain_two, start = [r for r in rows if r["repeat"] == repeat]
        plain = 2 * plain_one["wall_s"] / plain_two["wall_s"]
        out.append({"repeat": repeat,
                    "speedup_per_core": one["audio_x_realtime_per_core"]
                    / base["audio_x_realtime_per_core"],
                    "two_vs_one_workers": one["wall_s"] / two["wall_s"],
                    # each plain process does all of its files: twice the work in the pair
                    "two_vs_one_plain_processes": plain,
                    "workers_vs_plain_ceiling": one["wall_s"] / two["wall_s"] / plain,
                    "start_up_s": start["wall_s"]})
    return out


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    body = ""
    for r in rows:
        cells = [f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c]) for c in columns]
        body += "| " + " | ".join(cells) + " |\n"
    return head + body


def with_kinds(cfg: FeatureConfig, kinds: Sequence[str]) -> FeatureConfig:
    return dataclasses.replace(cfg, kinds=tuple(kinds))


# --- scoring ---------------------------------------------------------------------------------


def throughput_bundles(work: str, cfg: FeatureConfig, *, seed: int = 0) -> dict[str, str]:
    """An ML-only bundle (ensemble on ``stats``) and a fused one (+ a CNN on ``logmel``).

    Weights are fitted on random features: scoring cost does not depend on what a model
    learned, only on its architecture and inputs, so throughput is measured honestly without
    spending the benchmark's time on training.
    """
    import json

    from spoofray.models import dl, ml
    from spoofray.models.assemble import AssembleConfig, assemble_bundle

    rng = np.random.default_rng(seed)
    n = 256
    y = np.arange(n) % 2
    stats = rng.normal(size=(n, cfg.feature_shapes()["stats"][0])).astype(np.float32) + y[:, None]
    model = ml.make_ensemble({"inputs": ("stats",), "random_state": seed}).fit(stats, y)
    ml_dir = os.path.join(work, "ml")
    os.makedirs(os.path.join(ml_dir, "model"), exist_ok=True)
    ml.save_ensemble(model, os.path.join(ml_dir, "model", "ensemble.skops"))
    with open(os.path.join(ml_dir, "model", "member.json"), "w") as fh:
        json.dump({"name": "ml", "kind": "sklearn", "file": "ensemble.skops", "inputs": ["stats"],
                   "feature_config": cfg.to_dict(), "feature_config_hash": cfg.config_hash(),
                   "threshold": 0.5, "threshold_method": "fixed (benchmark)",
                   "training_data_fingerprint": "random-benchmark-data"}, fh)

    cnn_cfg = dl.CNNConfig(normalization="instance")
    cnn = dl.build_member(cnn_cfg, cfg)
    sidecar = dl.sidecar_dict("cnn", cnn_cfg, cfg, training_data_fingerprint="random-init")
    cnn_json = dl.save_member(cnn, os.path.join(work, "dl"), sidecar)[1]

    bundles = {}
    for name, members in (("ml-only", (ml_dir,)), ("fused ml+cnn", (ml_dir, cnn_json))):
        out = os.path.join(work, "bundles", name.replace(" ", "_").replace("+", "_"))
        assemble_bundle(AssembleConfig(members=members, name="bench", version="1",
                                       output=out, overwrite=True))
        bundles[name] = out
    return bundles


class RaySampler:
    """Samples the summed RSS of this process and all its descendants (the local Ray it
    started: GCS, raylet, workers) in a background thread; other Rays on the machine are
    left out."""

    def __init__(self, interval_s: float = 0.1) -> None:
        import threading

        self.interval_s = interval_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def ray_rss() -> int:
        import psutil

        me = psutil.Process()
        total = 0
        for proc in [me, *me.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except psutil.Error:  # ended between listing and reading
                pass
        return total

    def _run(self) -> None:
        # A sample at once, then every interval: a run shorter than one still gets one.
        while True:
            self.peak_bytes = max(self.peak_bytes, self.ray_rss())
            if self._stop.wait(self.interval_s):
                return

    def __enter__(self) -> "RaySampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def score_run(items: Sequence[Any], bundle: str, *, cores: int, **settings: Any
              ) -> dict[str, Any]:
    """Score ``items`` once with ``bundle`` (product defaults unless ``settings`` name
    ScoreConfig fields); wall time, audio seconds and peak RSS of the local Ray."""
    from spoofray.pipeline.score import ScoreConfig, score_archive

    with tempfile.TemporaryDirectory(prefix="spoofray-bench-") as tmp, RaySampler() as sampler:
        started = time.perf_counter()
        summary = score_archive(ScoreConfig(input="benchmark files", output=tmp, bundle=bundle,
                                            plots=False, **settings), items=items)
        wall = time.perf_counter() - started
    audio_s = summary.get("audio_hours", 0.0) * 3600
    return {"wall_s": wall, "audio_s": audio_s, "files": len(items), "cores": cores,
            "audio_x_realtime_per_core": audio_s / wall / cores,
            "peak_ray_rss_gib": sampler.peak_bytes / 1024**3}


def linked_archive(paths: Sequence[str], folder: str, times: int) -> list[Any]:
    """``paths`` listed ``times`` over under distinct URIs (symlinks, sizes filled as a
    listing fills them): a larger archive of the same audio, without copies."""
    from spoofray.sources import AudioItem

    items = []
    for rep in range(times):
        sub = os.path.join(folder, f"x{times}-{rep}")
        os.makedirs(sub)
        for i, p in enumerate(paths):
            link = os.path.join(sub, f"{i:05d}{os.path.splitext(p)[1]}")
            os.symlink(os.path.abspath(p), link)
            items.append(AudioItem(uri=link, size_bytes=os.path.getsize(p)))
    return items


# --- per-stage CPU cost (the ceiling) --------------------------------------------------------


def stage_costs(paths: Sequence[str], bundle_dir: str) -> list[dict[str, Any]]:
    """CPU seconds of each scoring stage of ``bundle_dir`` over ``paths``, in this process
    with one thread per library (threadpoolctl; second pass: warm), and their sum: the
    one-core ceiling of scoring with that bundle.
    """
    from threadpoolctl import threadpool_limits

    from spoofray import audio
    from spoofray.featurize import window_features
    from spoofray.models.bundle import Bundle
    from spoofray.reader import read_item_bytes

    bundle = Bundle.load(bundle_dir)
    cfg = bundle.feature_config
    kinds = tuple(bundle.needed_kinds)

    def cpu_s(fn: Any) -> tuple[float, Any]:
        for _ in range(2):  # the first pass pays for caches and lazy imports
            started = time.process_time()
            out = fn()
            spent = time.process_time() - started
        return spent, out

    rows = []
    with threadpool_limits(limits=1):
        spent, decoded = cpu_s(lambda: [audio.load(read_item_bytes({"uri": p}, cfg), p,
                                                   cfg.audio) for p in paths])
        rows.append({"stage": "read + decode + resample", "cpu_s": spent})
        spent, feats = cpu_s(lambda: [window_features(d.samples, cfg, kinds)[0]
                                      for d in decoded])
        rows.append({"stage": "trim + window + features " + " + ".join(kinds), "cpu_s": spent})
        joined = {k: np.concatenate([f[k] for f in feats]) for k in kinds}
        for m in bundle.members:
            spent, _ = cpu_s(lambda m=m: m.model.predict_proba(joined))
            rows.append({"stage": f"member {m.name} ({m.kind})", "cpu_s": spent})
    rows.append({"stage": "ceiling (sum of the above)", "cpu_s": sum(r["cpu_s"] for r in rows)})
    audio_s = sum(d.duration_s for d in decoded)
    n_windows = len(next(iter(joined.values())))
    for r in rows:
        r.update(files=len(paths), audio_s=audio_s, windows=n_windows,
                 ms_per_window=1000 * r["cpu_s"] / n_windows,
                 audio_x_realtime_one_core=audio_s / r["cpu_s"])
    return rows


def plain_scoring_seconds(paths: Sequence[str], bundle_dir: str) -> float:
    """Wall seconds to score ``paths`` with ``bundle_dir`` in this plain process, file by
    file, one BLAS thread, no Ray (second pass: warm): read, decode, features, model."""
    from threadpoolctl import threadpool_limits

    from spoofray import audio
    from spoofray.featurize import window_features
    from spoofray.models.bundle import Bundle
    from spoofray.reader import read_item_bytes

    bundle = Bundle.load(bundle_dir)
    cfg, kinds = bundle.feature_config, tuple(bundle.needed_kinds)
    with threadpool_limits(limits=1):
        for _ in range(2):
            started = time.perf_counter()
            for p in paths:
                decoded = audio.load(read_item_bytes({"uri": p}, cfg), p, cfg.audio)
                feats = window_features(decoded.samples, cfg, kinds)[0]
                for m in bundle.members:
                    m.model.predict_proba(feats)
            wall = time.perf_counter() - started
    return wall


def two_process_share(pool: Any, paths: Sequence[str], bundle_dir: str) -> float:
    """What each of two plain processes scoring at once gets of one alone (1.0: the
    machine runs two as fast as one): the 2-core ceiling as a share of the 1-core one."""
    alone = pool.apply(plain_scoring_seconds, (list(paths), bundle_dir))
    both = max(pool.starmap(plain_scoring_seconds, [(list(paths), bundle_dir)] * 2,
                            chunksize=1))
    return alone / both


def score_benchmark(paths: Sequence[str], work: str, *, repeats: int, cores: int
                    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Each repeat, side by side: what two plain processes scoring at once get of one
    (:func:`two_process_share`); a fused ML + CNN bundle on x10 (two stages, an actor
    pool); a 4-file run of the shipped bundle right after it (start-up on the workers Ray
    left: the actor pool's processes replace warm ones); the shipped bundle on x10 with
    ``--stages two``; an untimed 8-file warm-up; a 4-file run (start-up on warm workers);
    the shipped bundle end to end on the archive x1, x10 and x40 (product defaults: one
    stage), with its one-core stage ceiling taken right before x10 and right after x40
    (their mean is what x10 and x40 are compared with). Returns (ceiling rows, run rows,
    per-repeat ratios)."""
    from spoofray.config import FeatureConfig
    from spoofray.models.registry import resolve_bundle

    shipped = resolve_bundle(None)[0]
    fused = throughput_bundles(os.path.join(work, "bundles"), FeatureConfig())["fused ml+cnn"]
    archives = {t: linked_archive(paths, os.path.join(work, "archive"), t) for t in (1, 10, 40)}
    # Actor-pool runs first: after one, Ray's idle-worker reaper has replaced the warm
    # task workers, and the next one-stage run pays fresh workers' imports.
    archives["4 files"], archives["8 files"] = archives[1][:4], archives[1][:8]
    runs = [("fused ml+cnn (two stages)", fused, 10, {}),
            ("shipped, after the fused run", shipped, "4 files", {}),
            ("shipped, --stages two", shipped, 10, {"stages": "two"}),
            ("warm-up", shipped, "8 files", {}),
            ("shipped", shipped, "4 files", {}),
            ("shipped", shipped, 1, {}), ("shipped", shipped, 10, {}),
            ("shipped", shipped, 40, {})]
    import multiprocessing

    for bundle in (shipped, fused):  # worker start-up and imports, as on a running cluster
        score_run(archives["8 files"], bundle, cores=cores)
    ceilings, rows, ratios = [], [], []
    # The ceiling in a plain process of its own (not the driver, whose Ray threads run).
    ceiling_pool = multiprocessing.get_context("spawn").Pool(2)

    def ceiling(repeat: int, when: str) -> float:
        costs = ceiling_pool.apply(stage_costs, (list(paths), shipped))
        ceilings.extend({"repeat": repeat, "when": when, **r} for r in costs)
        return costs[-1]["audio_x_realtime_one_core"]

    for repeat in range(1, repeats + 1):
        # The files 4 times: ~3 s a pass, long enough for the two to overlap.
        share = two_process_share(ceiling_pool, list(paths) * 4, shipped)
        got = {}
        for name, bundle, archive, settings in runs:
            # This host's speed moves within minutes: the ceiling is taken right before
            # and right after the x10 and x40 runs it is compared with, and averaged.
            if archive == 10 and name == "shipped":
                before = ceiling(repeat, "before x10")
            got[name, archive] = score_run(archives[archive], bundle, cores=cores, **settings)
            if name != "warm-up":
                rows.append({"repeat": repeat, "bundle": name, "archive": archive
                             if isinstance(archive, str) else f"x{archive}",
                             **got[name, archive]})
        after = ceiling(repeat, "after x40")
        one_core = statistics.mean([before, after])
        x1, x10, x40 = got["shipped", 1], got["shipped", 10], got["shipped", 40]
        steady = (x40["audio_s"] - x10["audio_s"]) / (x40["wall_s"] - x10["wall_s"]) / cores
        ratios.append({
            "repeat": repeat, "ceiling_one_core": one_core,
            "ceiling_before_after": f"{before:.0f} / {after:.0f}",
            "x10_per_core": x10["audio_x_realtime_per_core"],
            "x40_per_core": x40["audio_x_realtime_per_core"],
            "steady_per_core": steady,
            "x40_vs_ceiling": x40["audio_x_realtime_per_core"] / one_core,
            "steady_vs_ceiling": steady / one_core,
            "two_plain_processes_share": share,
            "x40_vs_two_process_ceiling": x40["audio_x_realtime_per_core"] / one_core / share,
            "one_vs_two_stages": got["shipped, --stages two", 10]["wall_s"] / x10["wall_s"],
            "start_up_s": got["shipped", "4 files"]["wall_s"],
            "start_up_after_actor_pool_s": got["shipped, after the fused run", "4 files"][
                "wall_s"],
            "rss_x10_vs_x1": x10["peak_ray_rss_gib"] / x1["peak_ray_rss_gib"],
            "rss_x40_vs_x1": x40["peak_ray_rss_gib"] / x1["peak_ray_rss_gib"]})
    ceiling_pool.close()
    return ceilings, rows, ratios
