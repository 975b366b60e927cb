"""Benchmarks, run by hand; paste the printed table into docs/benchmarks.md.

  python benchmarks/benchmark.py extract [--files 200] [--repeats 3]
        pipeline (1 and 2 workers) vs a librosa loop; 2 vs 1 plain processes (machine ceiling)
  python benchmarks/benchmark.py score [--files 100]
        ML-only vs fused bundle; peak RSS at 1x and 10x
  python benchmarks/benchmark.py stages [--files 100]
        CPU cost of each scoring stage on one core

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
    print(markdown_table(ratios, ["repeat", "speedup_per_core", "two_vs_one_workers",
                                  "two_vs_one_plain_processes"]))
    for key, what in (("speedup_per_core", "speed-up per core vs librosa loop (1 worker)"),
                      ("two_vs_one_workers", "2 workers vs 1 worker (wall)"),
                      ("two_vs_one_plain_processes",
                       "machine ceiling: 2 plain processes vs 1, no Ray (throughput)")):
        values = sorted(r[key] for r in ratios)
        print(f"{what}: median {statistics.median(values):.2f}x "
              f"(range {values[0]:.2f}-{values[-1]:.2f}x over {len(values)} repeats)")


def score(args: argparse.Namespace) -> None:
    from benchmarks.measure import machine_info, markdown_table, score_run, throughput_bundles
    from spoofray.config import FeatureConfig
    from spoofray.pipeline.runtime import init_ray
    from spoofray.sources import AudioItem

    init_ray(num_cpus=2)
    cores = 2
    with tempfile.TemporaryDirectory(prefix="spoofray-bench-") as tmp:
        paths = _input_files(args.files, tmp)
        items = [AudioItem(uri=p) for p in paths]
        # 10x larger archive: the same files listed ten times under distinct URIs would need
        # copies; symlinks keep it cheap and still make every URI distinct.
        big = []
        for rep in range(10):
            folder = os.path.join(tmp, f"copy{rep}")
            os.makedirs(folder)
            for i, p in enumerate(paths):
                link = os.path.join(folder, f"{i:05d}{os.path.splitext(p)[1]}")
                os.symlink(p, link)
                big.append(AudioItem(uri=link))
        bundles = throughput_bundles(os.path.join(tmp, "work"), FeatureConfig())
        rows = []
        for name, bundle in bundles.items():
            score_run(items[:4], bundle, cores=cores)  # warm-up: worker start and imports
            rows.append({"bundle": name, "archive": "1x", **score_run(items, bundle, cores=cores)})
        rows.append({"bundle": "fused ml+cnn", "archive": "10x",
                     **score_run(big, bundles["fused ml+cnn"], cores=cores)})
    print(json.dumps({"machine": machine_info(), "rows": rows}, indent=2))
    print(markdown_table(rows, ["bundle", "archive", "files", "audio_s", "wall_s", "cores",
                                "audio_x_realtime_per_core", "peak_ray_rss_gib"]))


def stages(args: argparse.Namespace) -> None:
    # One thread per library, set before numpy/TensorFlow load: the rows are per core.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        os.environ[var] = "1"
    from benchmarks.measure import markdown_table, stage_costs, throughput_bundles
    from spoofray.config import FeatureConfig

    with tempfile.TemporaryDirectory(prefix="spoofray-bench-") as tmp:
        paths = _input_files(args.files, tmp)
        bundles = throughput_bundles(os.path.join(tmp, "work"), FeatureConfig())
        rows = stage_costs(paths, bundles["fused ml+cnn"], FeatureConfig())
    print(f"{rows[0]['files']} files, {rows[0]['audio_s']:.1f} s of audio, "
          f"{rows[0]['windows']} windows; CPU seconds on one thread, warm")
    print(markdown_table(rows, ["stage", "cpu_s", "ms_per_window", "audio_x_realtime_one_core"]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("extract", help="feature extraction throughput")
    e.add_argument("--files", type=int, default=200, help="files to use (default: %(default)s)")
    e.add_argument("--repeats", type=int, default=3,
                   help="interleaved repeats of all three methods (default: %(default)s)")
    e.set_defaults(func=extract)
    s = sub.add_parser("score", help="archive scoring throughput and peak memory")
    s.add_argument("--files", type=int, default=100, help="files in the 1x archive")
    s.set_defaults(func=score)
    c = sub.add_parser("stages", help="CPU cost of each scoring stage, one thread")
    c.add_argument("--files", type=int, default=100, help="files to use (default: %(default)s)")
    c.set_defaults(func=stages)
    args = p.parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
