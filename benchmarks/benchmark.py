"""Benchmarks, run by hand; paste the printed table into docs/benchmarks.md.

  python benchmarks/benchmark.py extract [--files 998] [--repeats 3]
        pipeline (1 and 2 workers) vs a librosa loop; 2 vs 1 plain processes (machine ceiling)
  python benchmarks/benchmark.py score [--files 100] [--repeats 3]
        the shipped bundle end to end on the archive x1, x10, x40 (one stage) and x10 (two
        stages); its one-core stage ceiling right before x10 and right after x40; a fused
        ML + CNN bundle; start-up (4 files on warm workers, and right after the fused
        run); peak RSS
  python benchmarks/benchmark.py encoder [--windows 16] [--repeats 5]
        Whisper tiny.en's encoder on one core, 4 s windows: spoofray's numpy encoder (every
        state) vs ctranslate2 float32 and int8 (last state only), interleaved; and the whole
        'whisper' feature kind (log-mel + encoder + pooling) beside the LFCC kind

Uses the devcorpus (../shared/data/devcorpus) when present, else a generated archive. The
measurements themselves are in benchmarks/measure.py; nothing here is installed with spoofray.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:  # run from a checkout: spoofray, jobs/ and benchmarks/ importable
    sys.path.insert(0, REPO_ROOT)

from jobs import _bootstrap  # noqa: E402  (logging, the devcorpus next to the checkout)

DEVCORPUS = _bootstrap.default_devcorpus()


def _input_files(n: int, tmp: str) -> list[str]:
    """``n`` audio paths, a shuffled mix of corpora (devcorpus, else a generated archive)."""
    import pandas as pd

    if os.path.exists(os.path.join(DEVCORPUS, "manifest.csv")):
        root = os.path.abspath(DEVCORPUS)
        rows = pd.read_csv(os.path.join(root, "manifest.csv"))
    else:
        from spoofray.testing.synth import make_demo_archive

        archive = make_demo_archive(os.path.join(tmp, "archive"), seed=0, broken=False)
        root = str(archive.root)
        rows = pd.read_csv(archive.manifest_path)
    rows = rows.sample(frac=1.0, random_state=0).head(n)  # a mix of corpora, not one folder
    return [os.path.join(root, p) for p in rows["path"]]


def extract(args: argparse.Namespace) -> None:
    from benchmarks.measure import (extract_benchmark, extract_ratios, machine_info,
                                    markdown_table)
    from spoofray.config import FeatureConfig
    from spoofray.pipeline.runtime import init_ray

    init_ray(num_cpus=2)
    with tempfile.TemporaryDirectory(prefix="spoofray-bench-") as tmp:
        paths = _input_files(args.files, tmp)
        rows = extract_benchmark(paths, FeatureConfig(), repeats=args.repeats)
    ratios = extract_ratios(rows)
    print(json.dumps({"machine": machine_info(), "rows": rows, "ratios": ratios}, indent=2))
    print(markdown_table(rows, ["repeat", "method", "cores", "files", "audio_s", "wall_s",
                                "audio_x_realtime_per_core", "files_per_s"]))
    print(markdown_table(ratios, list(ratios[0])))
    for key, what in (("speedup_per_core", "speed-up per core vs librosa loop (1 worker)"),
                      ("two_vs_one_workers", "2 workers vs 1 worker (wall)"),
                      ("two_vs_one_plain_processes",
                       "machine ceiling: 2 plain processes vs 1, no Ray (throughput)"),
                      ("workers_vs_plain_ceiling", "2-vs-1 workers as a share of that ceiling"),
                      ("start_up_s", "start-up: a 2-file run (s)")):
        values = sorted(r[key] for r in ratios)
        print(f"{what}: median {statistics.median(values):.2f}x "
              f"(range {values[0]:.2f}-{values[-1]:.2f}x over {len(values)} repeats)")


def score(args: argparse.Namespace) -> None:
    from benchmarks.measure import machine_info, markdown_table, score_benchmark
    from spoofray.pipeline.runtime import init_ray

    cores = 2
    init_ray(num_cpus=cores)
    with tempfile.TemporaryDirectory(prefix="spoofray-bench-") as tmp:
        paths = _input_files(args.files, tmp)
        ceilings, rows, ratios = score_benchmark(paths, tmp, repeats=args.repeats, cores=cores)
    print(json.dumps({"machine": machine_info(), "ceilings": ceilings, "rows": rows,
                      "ratios": ratios}, indent=2))
    print(markdown_table(ceilings, ["repeat", "when", "stage", "cpu_s", "ms_per_window",
                                    "audio_x_realtime_one_core"]))
    print(markdown_table(rows, ["repeat", "bundle", "archive", "files", "audio_s", "wall_s",
                                "audio_x_realtime_per_core", "peak_ray_rss_gib"]))
    print(markdown_table(ratios, list(ratios[0])))
    for key in [k for k, v in ratios[0].items() if k != "repeat" and not isinstance(v, str)]:
        values = sorted(r[key] for r in ratios)
        print(f"{key}: median {statistics.median(values):.2f} "
              f"(range {values[0]:.2f}-{values[-1]:.2f} over {len(values)} repeats)")


def encoder(args: argparse.Namespace) -> None:
    """One-core cost per audio second of the Whisper front-end, side by side in one run."""
    import time

    import numpy as np
    from threadpoolctl import threadpool_limits

    from benchmarks.measure import machine_info, markdown_table
    from spoofray import features, whisper
    from spoofray.config import FeatureConfig

    rng = np.random.default_rng(0)
    audio_s = 4.0 * args.windows
    windows = (0.1 * rng.standard_normal((args.windows, 64_000))).astype(np.float32)
    mel = features.whisper_log_mel(windows)
    enc = whisper.load_encoder()
    runs = {"numpy encoder, float32 (5 states)": lambda: enc.hidden_states(mel),
            "whisper kind (log-mel + numpy encoder + pooling)":
                lambda: features.extract(windows, FeatureConfig(kinds=("whisper",))),
            "lfcc kind (for scale)": lambda: features.extract(windows,
                                                              FeatureConfig(kinds=("lfcc",)))}
    try:
        import ctranslate2

        view = ctranslate2.StorageView.from_array(np.ascontiguousarray(mel))
        for compute_type in ("float32", "int8"):
            model = ctranslate2.models.Whisper(str(whisper.model_path().parent), device="cpu",
                                               compute_type=compute_type, intra_threads=1)
            runs[f"ctranslate2 {compute_type} (last state)"] = (
                lambda m=model: m.encode(view, to_cpu=True))
    except ImportError:
        print("ctranslate2 not installed: its rows are left out")
    rows = []
    with threadpool_limits(limits=1):
        for fn in runs.values():
            fn()  # warm-up: weights, caches, allocator
        for repeat in range(args.repeats):
            for name, fn in runs.items():
                started = time.process_time()
                fn()
                cpu_s = time.process_time() - started
                rows.append({"repeat": repeat, "what": name, "cpu_s": round(cpu_s, 3),
                             "ms_per_audio_s": round(1000 * cpu_s / audio_s, 2),
                             "audio_x_realtime_one_core": round(audio_s / cpu_s, 1)})
    print(json.dumps({"machine": machine_info(), "windows": args.windows}, indent=2))
    summary = []
    for name in runs:
        values = sorted(r["audio_x_realtime_one_core"] for r in rows if r["what"] == name)
        summary.append({"what": name, "median_x_realtime_one_core": statistics.median(values),
                         "range": f"{values[0]}-{values[-1]}", "repeats": len(values)})
    print(markdown_table(summary, list(summary[0])))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("extract", help="feature extraction throughput")
    e.add_argument("--files", type=int, default=998, help="files to use (default: %(default)s)")
    e.add_argument("--repeats", type=int, default=3,
                   help="interleaved repeats of all three methods (default: %(default)s)")
    e.set_defaults(func=extract)
    s = sub.add_parser("score", help="archive scoring throughput and peak memory")
    s.add_argument("--files", type=int, default=100, help="files in the 1x archive")
    s.add_argument("--repeats", type=int, default=3,
                   help="interleaved repeats of every run (default: %(default)s)")
    s.set_defaults(func=score)
    w = sub.add_parser("encoder", help="Whisper front-end cost on one core")
    w.add_argument("--windows", type=int, default=16, help="4 s windows per call")
    w.add_argument("--repeats", type=int, default=5, help="interleaved repeats")
    w.set_defaults(func=encoder)
    args = p.parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
