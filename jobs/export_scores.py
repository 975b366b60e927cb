"""Export a scoring run for the tools of the field: an ASVspoof-style score file (one line
per file, higher = bona fide) and, optionally, its suspicious segments as lhotse
supervisions.

Examples
--------
  python jobs/export_scores.py --report out/reports/run_id=R --output out/scores.txt
  python jobs/export_scores.py --report s3://archive/reports/run_id=R --output scores.txt \\
      --supervisions segments.jsonl.gz --recordings calls_recordings_test.jsonl.gz
  python jobs/export_scores.py --smoke-test

Score file: 'utt attack key score' (the ASVspoof 2019 CM layout; attack '-' for bona fide)
when every scored file carries a label, else 'utt score'; the score is 1 - spoof_score.
The utterance id is the lhotse recording id (--recordings) or the file name without its
extension. Error rows have no score and are left out (counted in the summary).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile

import _bootstrap  # noqa: F401  (sys.path + logging)

from spoofray import cli
from spoofray.errors import SpoofrayError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from spoofray.reports import ExportConfig

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_config_flags(p, ExportConfig)
    p.add_argument("--smoke-test", action="store_true",
                   help="score a tiny generated archive, then export it")
    args = p.parse_args(argv)
    if not args.smoke_test:
        cli.require(p, args, "report", "output")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from spoofray.reports import ExportConfig, export_scores

    with tempfile.TemporaryDirectory(prefix="spoofray-export-smoke-") as tmp:
        if args.smoke_test:
            import score_archive  # the sibling job: its smoke test makes a report

            report = score_archive.smoke_report(tmp)
            if report is None:
                return 1
            given = cli.given(args)
            smoke = {"report": report,
                     "output": given.get("output") or f"{tmp}/scores.txt",
                     "supervisions": given.get("supervisions") or f"{tmp}/segments.jsonl"}
        try:
            cfg = cli.build_config(ExportConfig, args, smoke if args.smoke_test else None)
            result = export_scores(cfg)
        except (SpoofrayError, FileNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(json.dumps(result, indent=2))
        if args.smoke_test and result["lines"] == 0:
            print("smoke test failed: no score lines", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
