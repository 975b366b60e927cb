"""Explain one file: score it with the production scorer and say why it was called what it was.

Examples
--------
  spoofray explain ~/calls/2024-05-01/0412.wav
  spoofray explain s3://archive/calls/0412.flac --bundle s3://models/calls/1.0 --png 0412.png
  spoofray explain call.wav --output explained/   # keep the one-file run and its page
  python jobs/explain.py --smoke-test

Prints the decision, which rule fired (file mean or segment rule) against which threshold,
the suspicious spans and a timeline of the window scores (one character per window); writes
the same timeline as a PNG (--png, default <file name>.timeline.png here).
Exit code: 0 bona fide, 3 spoof, 4 the file could not be scored, 2 refused before scoring.
"""

from __future__ import annotations

import argparse
import sys
import tempfile

import _bootstrap  # sys.path + logging, absolute()

from spoofray import cli
from spoofray.errors import SpoofrayError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from spoofray.pipeline.explain import ExplainConfig

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", nargs="?", metavar="FILE_OR_URI",
                   help="the audio file to explain (local path or s3:// URI)")
    cli.add_config_flags(p, ExplainConfig)
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else local Ray)")
    p.add_argument("--num-cpus", type=int, help="CPUs for a local Ray (default: all)")
    p.add_argument("--smoke-test", action="store_true",
                   help="explain a generated file with a tiny demo bundle")
    p.add_argument("--verbose", action="store_true",
                   help="also show Ray's and TensorFlow's start-up and progress output")
    args = p.parse_args(argv)
    if not args.smoke_test and not args.file:
        p.error("FILE_OR_URI is required (or use --smoke-test)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from spoofray import console

    console.set_verbose(args.verbose or console.verbose())
    from spoofray.pipeline import explain
    from spoofray.pipeline.runtime import init_ray

    with tempfile.TemporaryDirectory(prefix="spoofray-explain-smoke-") as tmp:
        overrides: dict = {"input": _bootstrap.absolute(args.file) if args.file else None}
        if args.smoke_test:
            from spoofray import testing
            from spoofray.testing.bundles import build_demo_bundle

            given = cli.given(args)
            overrides["input"] = overrides["input"] or testing.write_wav(
                f"{tmp}/call.wav", testing.voiced(140.0, 9.0, 16000), 16000)
            overrides["bundle"] = given.get("bundle") or build_demo_bundle(f"{tmp}/bundle")
            overrides["png"] = given.get("png") or f"{tmp}/call.timeline.png"
        try:
            cfg = cli.build_config(explain.ExplainConfig, args, overrides)
            explain.preflight(cfg)  # refusals that need no cluster, before Ray starts
            init_ray(args.address, num_cpus=args.num_cpus)
            result = explain.explain_file(cfg)
        except SpoofrayError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print("\n".join(explain.explanation_lines(result)), flush=True)
        return explain.exit_code(result["row"])


if __name__ == "__main__":
    sys.exit(main())
