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

from spoofray.config import FEATURE_KINDS, PAD_MODES, AudioConfig, FeatureConfig
from spoofray.errors import SpoofrayError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", help="folder, s3:// prefix, manifest .csv/.parquet, or ASVspoof "
                   "protocol .txt (labels from <label>/ folders, manifest or protocol)")
    p.add_argument("--output", help="where to write the dataset (local path or s3://)")
    p.add_argument("--audio-root", help="audio folder of an ASVspoof protocol "
                   "(default: the protocol's folder)")
    p.add_argument("--features", default=",".join(FEATURE_KINDS),
                   help="comma-separated feature kinds (default: %(default)s)")
    p.add_argument("--window-s", type=float, default=AudioConfig.window_s,
                   help="window length in seconds (default: %(default)s)")
    p.add_argument("--hop-s", type=float, default=AudioConfig.hop_s,
                   help="hop between windows in seconds (default: %(default)s)")
    p.add_argument("--n-mels", type=int, default=FeatureConfig.n_mels)
    p.add_argument("--pad", choices=PAD_MODES, default=AudioConfig.pad,
                   help="fill of the last partial window (default: %(default)s)")
    p.add_argument("--trim-db", type=float, default=AudioConfig.trim_db,
                   help="cut leading/trailing audio this many dB below the loudest frame "
                        "(default: keep)")
    p.add_argument("--max-duration-s", type=float, default=AudioConfig.max_duration_s,
                   help="longer files become error rows (default: %(default)s)")
    p.add_argument("--float16", action="store_true", help="store tensors as float16 (half size)")
    p.add_argument("--files-per-task", type=int,
                   help="most files per Ray task (default: 128; bigger tasks idle less "
                        "between them)")
    p.add_argument("--concurrency", type=int, help="most parallel tasks (default: all CPUs)")
    p.add_argument("--limit", type=int, help="only the first N files")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else local Ray)")
    p.add_argument("--num-cpus", type=int, help="CPUs for a local Ray (default: all)")
    p.add_argument("--smoke-test", action="store_true",
                   help="extract a tiny generated archive into a temporary folder and check it")
    args = p.parse_args(argv)
    if not args.smoke_test and not (args.input and args.output):
        p.error("--input and --output are required (or use --smoke-test)")
    return args


def build_config(args: argparse.Namespace):
    from spoofray.pipeline.extract import ExtractConfig

    audio = AudioConfig(window_s=args.window_s, hop_s=args.hop_s,
                        max_duration_s=args.max_duration_s, pad=args.pad, trim_db=args.trim_db)
    features = FeatureConfig(audio=audio, kinds=tuple(args.features.split(",")),
                             n_mels=args.n_mels, store_float16=args.float16)
    return ExtractConfig(input=_bootstrap.absolute(args.input),
                         output=_bootstrap.absolute(args.output),
                         audio_root=_bootstrap.absolute(args.audio_root),
                         features=features, concurrency=args.concurrency,
                         overwrite=args.overwrite, limit=args.limit,
                         **({} if args.files_per_task is None
                            else {"files_per_task": args.files_per_task}))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from spoofray.pipeline.extract import extract_features
    from spoofray.pipeline.runtime import init_ray

    with tempfile.TemporaryDirectory(prefix="spoofray-smoke-") as tmp:
        if args.smoke_test:
            from spoofray.testing.synth import make_demo_archive

            archive = make_demo_archive(f"{tmp}/archive", seed=0)
            args.input = args.input or str(archive.manifest_path)
            args.output = args.output or f"{tmp}/features"
        try:
            cfg = build_config(args)
            init_ray(args.address, num_cpus=args.num_cpus)
            manifest = extract_features(cfg)
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
