"""Score an audio archive with a model bundle: one report row per file, written atomically.

Examples
--------
  python jobs/score_archive.py --input ~/calls --bundle ~/.spoofray/bundles/calls/1.0 --output out/reports
  python jobs/score_archive.py --input s3://archive/audio/ --bundle s3://models/calls/1.0 \\
      --output s3://archive/reports/ --concurrency 4 --num-gpus 1
  ray job submit --working-dir . -- python jobs/score_archive.py --input /data/calls \\
      --bundle /models/calls/1.0 --output /data/reports
  python jobs/score_archive.py --smoke-test

Input: a folder or s3:// prefix (recursive), a manifest .csv/.parquet or an ASVspoof protocol.
Without --bundle the shipped default bundle spoofray-base is used (docs/model_card.md);
--bundle latest takes the newest bundle of the local registry ($SPOOFRAY_HOME/bundles).
Output: <output>/run_id=<id>/report/*.parquet (one row per input file, bad files as error
rows), summary.json, plots/*.png and _SUCCESS (written last).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile

import _bootstrap  # sys.path + logging, absolute()

from spoofray import cli
from spoofray.errors import SpoofrayError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from spoofray.pipeline.score import ScoreConfig

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_config_flags(p, ScoreConfig)
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else local Ray)")
    p.add_argument("--num-cpus", type=int, help="CPUs for a local Ray (default: all)")
    p.add_argument("--smoke-test", action="store_true",
                   help="score a tiny generated archive with a tiny demo bundle and check it")
    p.add_argument("--verbose", action="store_true",
                   help="also show Ray's and TensorFlow's start-up and progress output")
    args = p.parse_args(argv)
    if not args.smoke_test:
        cli.require(p, args, "input", "output")
    return args


def build_config(args: argparse.Namespace, overrides: dict | None = None):
    from spoofray.pipeline.score import ScoreConfig

    return cli.build_config(ScoreConfig, args, overrides)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from spoofray import console

    console.set_verbose(args.verbose or console.verbose())
    from spoofray.pipeline.runtime import init_ray
    from spoofray.pipeline.score import preflight, score_archive

    with tempfile.TemporaryDirectory(prefix="spoofray-score-smoke-") as tmp:
        expected_files = None
        if args.smoke_test:
            from spoofray.testing.bundles import build_demo_bundle
            from spoofray.testing.synth import make_demo_archive

            archive = make_demo_archive(f"{tmp}/archive", seed=0, n_bonafide=4, n_spoof=4,
                                        duration_range_s=(1.0, 3.0))
            expected_files = len(archive.items)
            given = cli.given(args)
            smoke = {"input": given.get("input") or archive.manifest_path,
                     "output": given.get("output") or f"{tmp}/reports",
                     "bundle": given.get("bundle") or build_demo_bundle(f"{tmp}/demo_bundle")}
        try:
            cfg = build_config(args, smoke if args.smoke_test else None)
            items = preflight(cfg)  # refusals that need no cluster, before Ray starts
            init_ray(args.address, num_cpus=args.num_cpus)
            summary = score_archive(cfg, items=items)
        except SpoofrayError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        b = summary["bundle"]
        if b["source"] != "given":
            from spoofray.models.registry import bundle_note

            print("note: " + bundle_note(b["name"], b["version"], b["uri"], b["source"]),
                  file=sys.stderr)
        print(json.dumps({k: summary[k] for k in ("run_uri", "counts", "spoof_rate",
                                                  "audio_hours", "wall_s", "throughput")},
                         indent=2))
        if summary["counts"]["files"] == 1:  # one file: its answer, not just the counts
            from spoofray.reports import describe_file, read_report

            print(describe_file(read_report(summary["run_uri"]).iloc[0]))
        if expected_files is not None and summary["counts"]["files"] != expected_files:
            print("smoke test failed: report rows != listed files", file=sys.stderr)
            return 1
    return 0


def smoke_report(folder: str) -> str | None:
    """Score this job's smoke-test archive into ``<folder>/reports``; the run folder, or None
    if the smoke run failed (the evaluate and export jobs' smoke tests start from it)."""
    if main(["--smoke-test", "--output", f"{folder}/reports", "--run-id", "smoke"]) != 0:
        return None
    return f"{folder}/reports/run_id=smoke"


if __name__ == "__main__":
    sys.exit(main())
