"""Evaluate a scoring report against known labels: EER, AUC, accuracy, precision, recall, F1,
confusion, per-attack EER, plus ROC and DET plots.

Examples
--------
  # labels the scored listing carried (label folders, manifest or protocol input)
  python jobs/evaluate.py --report out/reports/run_id=20250101T000000Z-ab12cd --output out/eval
  # labels from elsewhere, joined on the file URI
  python jobs/evaluate.py --report s3://archive/reports/run_id=X --labels LA/protocol.txt \\
      --audio-root LA/flac --output out/eval
  # min t-DCF too, in tandem with an ASV system's scores ('[speaker] [utt] key score')
  python jobs/evaluate.py --report out/reports/run_id=X --asv-scores asv_scores.txt --output out/eval
  python jobs/evaluate.py --smoke-test

Output: metrics.parquet and metrics.json (one "overall" row, one "attack" row per attack:
that attack's spoofs against every bona fide file), roc.png, det.png. Error rows and
unlabelled files are left out and counted; with --labels the counts also say how many
report URIs the labels matched (none matched is an error naming examples from both sides). Metrics are file-level (a file's score is the
mean of its window scores).
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
    from spoofray.reports import EvaluateConfig

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_config_flags(p, EvaluateConfig)
    p.add_argument("--smoke-test", action="store_true",
                   help="score a tiny generated archive, then evaluate it")
    args = p.parse_args(argv)
    if not args.smoke_test:
        cli.require(p, args, "report", "output")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from spoofray.reports import EvaluateConfig, evaluate_report

    with tempfile.TemporaryDirectory(prefix="spoofray-eval-smoke-") as tmp:
        if args.smoke_test:
            import score_archive  # the sibling job: its smoke test makes a report

            report = score_archive.smoke_report(tmp)
            if report is None:
                return 1
            smoke = {"report": report,
                     "output": cli.given(args).get("output") or f"{tmp}/eval"}
        try:
            cfg = cli.build_config(EvaluateConfig, args, smoke if args.smoke_test else None)
            result = evaluate_report(cfg)
        except (SpoofrayError, FileNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        overall = result["metrics"][0]
        print(json.dumps({"output": cfg.output, "counts": result["counts"],
                          "threshold": result["threshold"],
                          **{k: overall[k] for k in ("eer", "auc", "min_tdcf", "accuracy",
                                                     "precision", "recall", "f1")
                             if k in overall},
                          "attacks": {r["attack"]: r["eer"] for r in result["metrics"][1:]}},
                         indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
