"""Evaluate a scoring report against known labels: EER, AUC, accuracy, precision, recall, F1,
confusion, per-attack EER, plus ROC and DET plots.

Examples
--------
  # labels the scored listing carried (label folders, manifest or protocol input)
  python jobs/evaluate.py --report out/reports/run_id=20250101T000000Z-ab12cd --output out/eval
  # labels from elsewhere, joined on the file URI
  python jobs/evaluate.py --report s3://archive/reports/run_id=X --labels LA/protocol.txt \\
      --audio-root LA/flac --output out/eval
  python jobs/evaluate.py --smoke-test

Output: metrics.parquet and metrics.json (one "overall" row, one "attack" row per attack:
that attack's spoofs against every bona fide file), roc.png, det.png. Error rows and
unlabelled files are left out and counted. Metrics are file-level (a file's score is the
mean of its window scores).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile

import _bootstrap  # sys.path + logging, absolute()

from spoofray.errors import SpoofrayError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--report", help="run folder <output>/run_id=<id>/ (local or s3://)")
    p.add_argument("--output", help="folder for metrics and plots (local or s3://)")
    p.add_argument("--labels", help="manifest, ASVspoof protocol or labelled folder "
                   "(default: the labels the scored listing carried)")
    p.add_argument("--audio-root", help="audio folder of an ASVspoof protocol")
    p.add_argument("--threshold", type=float,
                   help="operating point of accuracy/precision/recall/F1 (default: the report's)")
    p.add_argument("--smoke-test", action="store_true",
                   help="score a tiny generated archive, then evaluate it")
    args = p.parse_args(argv)
    if not args.smoke_test and not (args.report and args.output):
        p.error("--report and --output are required (or use --smoke-test)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from spoofray.reports import EvaluateConfig, evaluate_report

    with tempfile.TemporaryDirectory(prefix="spoofray-eval-smoke-") as tmp:
        if args.smoke_test:
            import score_archive  # the sibling job: its smoke test makes a report

            if score_archive.main(["--smoke-test", "--output", f"{tmp}/reports",
                                   "--run-id", "smoke"]) != 0:
                return 1
            args.report = f"{tmp}/reports/run_id=smoke"
            args.output = args.output or f"{tmp}/eval"
        try:
            cfg = EvaluateConfig(report=_bootstrap.absolute(args.report),
                                 output=_bootstrap.absolute(args.output),
                                 labels=_bootstrap.absolute(args.labels),
                                 audio_root=_bootstrap.absolute(args.audio_root),
                                 threshold=args.threshold)
            result = evaluate_report(cfg)
        except (SpoofrayError, FileNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        overall = result["metrics"][0]
        print(json.dumps({"output": cfg.output, "counts": result["counts"],
                          "threshold": result["threshold"],
                          **{k: overall[k] for k in ("eer", "auc", "accuracy", "precision",
                                                     "recall", "f1")},
                          "attacks": {r["attack"]: r["eer"] for r in result["metrics"][1:]}},
                         indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
