"""Sweep the hyperparameters of the scikit-learn soft-voting ensemble with Ray Tune.

Each trial is one ensemble configuration drawn from a YAML search space
(tune_spaces/voting_ensemble.yaml; keys are scikit-learn parameter names such as
rf__n_estimators, svc__C, weight_knn, inputs). It is cross-validated over group-aware folds
(--group-by speaker|recording|attack|group: no speaker/recording/attack is on both sides;
the windows of one recording never straddle folds). After every fold the trial reports
the running mean EER, so ASHA stops bad trials early.

The metric is the FILE-level EER: windows are scored, and a file's score is the mean of
its windows' P(spoof), because reports are per file. AUC, window-level EER and
accuracy/precision/recall/F1 at P(spoof) >= 0.5 are reported alongside. The best
complete trial is refit on all the data and saved with its decision threshold (the EER
point of its out-of-fold file scores).

Examples
--------
  python jobs/tune_ml.py --dataset out/features --output out/sweep
  python jobs/tune_ml.py --dataset s3://bucket/features --output s3://bucket/sweep \\
      --num-samples 200 --cpus-per-trial 2 --time-budget-s 3600
  python jobs/tune_ml.py --table DATASET-balanced.csv --table-block-rows 30 --output out/dv
  python jobs/tune_ml.py --dataset out/features --output out/sweep --resume
  python jobs/tune_ml.py --smoke-test
  ray job submit --working-dir . -- python jobs/tune_ml.py --dataset s3://... --output s3://...

--table reads a DEEP-VOICE style CSV/Parquet (26 columns chroma_stft ... mfcc20 and
LABEL = REAL/FAKE). Such tables have no recording ids: folds are row-level (optimistic)
unless --table-block-rows groups consecutive rows, and the model has no feature config.

On a multi-node cluster, --output (or --storage-path) must be storage every node reaches
(s3:// or a shared file system): trials write their fold checkpoints there.

Output: results.parquet (one row per trial), best_config.yaml, plots/, model/ensemble.skops
+ model/member.json (for the model bundle), summary.json, ray_results/ (Tune's state,
used by --resume).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import _bootstrap  # sys.path + logging, REPO_ROOT

from spoofray import cli
from spoofray.errors import SpoofrayError

#: Caps of a --smoke-test sweep.
SMOKE_CAPS = {"num_samples": 3, "n_splits": 3}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from spoofray.training.tune import TuneMLConfig

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_config_flags(p, TuneMLConfig)
    p.add_argument("--smoke-test", action="store_true",
                   help="tiny sweep (tune_spaces/smoke.yaml) on a generated dataset in a "
                   "temporary folder, unless --dataset/--table/--output are given")
    args = p.parse_args(argv)
    try:
        given = cli.given(args)
    except SpoofrayError as exc:
        p.error(str(exc))
    if not args.smoke_test and (not given.get("output")
                                or not (given.get("dataset") or given.get("table"))):
        p.error("--output and one of --dataset/--table are required (or use --smoke-test)")
    if given.get("dataset") and given.get("table"):
        p.error("give only one of --dataset and --table")
    return args


def build_config(args: argparse.Namespace, overrides: dict | None = None):
    """The sweep's config; the search space defaults to tune_spaces/voting_ensemble.yaml
    (smoke.yaml with --smoke-test), and a smoke test is capped (SMOKE_CAPS)."""
    from spoofray.training.tune import TuneMLConfig

    given = cli.given(args)
    spaces = os.path.join(_bootstrap.REPO_ROOT, "tune_spaces")
    fixed = {} if given.get("space") else {
        "space": os.path.join(spaces, "smoke.yaml" if args.smoke_test else "voting_ensemble.yaml")}
    if args.smoke_test:
        fixed.update({k: min(given.get(k, getattr(TuneMLConfig, k)), cap)
                      for k, cap in SMOKE_CAPS.items()})
    return cli.build_config(TuneMLConfig, args, {**fixed, **(overrides or {})})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from spoofray.training.tune import run_sweep

    with tempfile.TemporaryDirectory(prefix="spoofray-tune-smoke-") as tmp:
        smoke = {}
        given = cli.given(args)
        if args.smoke_test and not (given.get("dataset") or given.get("table")):
            from spoofray.testing.datasets import write_synthetic_dataset

            smoke["dataset"] = write_synthetic_dataset(os.path.join(tmp, "features"))
        if args.smoke_test and not given.get("output"):
            smoke["output"] = os.path.join(tmp, "sweep")
        try:
            cfg = build_config(args, smoke)
            summary = run_sweep(cfg)
        except SpoofrayError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        best = summary.get("best") or {}
        print(json.dumps({
            "output": summary["output"],
            "trials": {k: summary[f"n_{k}"] for k in ("complete", "stopped", "error")},
            "best_trial": best.get("trial_id"),
            "best_file_eer": best.get("eer"),
            "best_auc": best.get("auc"),
            "threshold": (summary.get("model") or {}).get("threshold"),
            "caveat": summary.get("caveat"),
            "elapsed_s": summary["elapsed_s"],
        }, indent=2))
        if not best:
            print(f"error: {summary.get('error')}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
