"""Turn a folder, S3 prefix, manifest or ASVspoof protocol of audio into a feature dataset.

Examples
--------
  python jobs/extract_features.py --input ~/calls --output out/features
  python jobs/extract_features.py --input s3://bucket/audio/ --output s3://bucket/features/
  python jobs/extract_features.py --input LA/protocol.txt --audio-root LA/flac --output out/la
  python jobs/extract_features.py --smoke-test

Output: <output>/features/*.parquet (one row per window), <output>/errors/*.parquet (one row
per file that could not be used, with the reason), <output>/_manifest.json (written last).
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
    from spoofray.pipeline.extract import ExtractConfig

    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_config_flags(p, ExtractConfig)
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else local Ray)")
    p.add_argument("--num-cpus", type=int, help="CPUs for a local Ray (default: all)")
    p.add_argument("--smoke-test", action="store_true",
                   help="extract a tiny generated archive into a temporary folder and check it")
    p.add_argument("--verbose", action="store_true",
                   help="also show Ray's start-up and progress output")
    args = p.parse_args(argv)
    if not args.smoke_test:
        cli.require(p, args, "input", "output")
    return args


def build_config(args: argparse.Namespace, overrides: dict | None = None):
    from spoofray.pipeline.extract import ExtractConfig

    return cli.build_config(ExtractConfig, args, overrides)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from spoofray import console

    console.set_verbose(args.verbose or console.verbose())
    from spoofray.pipeline.extract import extract_features, preflight
    from spoofray.pipeline.runtime import init_ray

    with tempfile.TemporaryDirectory(prefix="spoofray-smoke-") as tmp:
        if args.smoke_test:
            from spoofray.testing.synth import make_demo_archive

            archive = make_demo_archive(f"{tmp}/archive", seed=0)
            given = cli.given(args)
            smoke = {"input": given.get("input") or str(archive.manifest_path),
                     "output": given.get("output") or f"{tmp}/features"}
        try:
            cfg = build_config(args, smoke if args.smoke_test else None)
            items = preflight(cfg)  # refusals that need no cluster, before Ray starts
            init_ray(args.address, num_cpus=args.num_cpus)
            manifest = extract_features(cfg, items=items)
        except SpoofrayError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        counts = manifest["counts"]
        print(json.dumps({"output": cfg.output, **counts,
                          "audio_hours": round(manifest["audio_hours"], 4),
                          "throughput": manifest["throughput"]}, indent=2))
        if args.smoke_test and counts["files_ok"] == 0:
            print("smoke test failed: no file produced features", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
