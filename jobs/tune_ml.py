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

import _bootstrap  # noqa: F401  (sys.path + logging)

from spoofray.errors import SpoofrayError
from spoofray.splits import GROUP_BY


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from spoofray.training.tune import TuneMLConfig as C

    spaces = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "tune_spaces")
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    data = p.add_argument_group("data (one of)")
    data.add_argument("--dataset", help="feature dataset made by jobs/extract_features.py "
                      "(local path or s3://)")
    data.add_argument("--table", help="DEEP-VOICE style .csv/.parquet: 26 stats columns + LABEL")
    p.add_argument("--output", help="output folder (local or s3://)")
    p.add_argument("--space", help="YAML search space (default: tune_spaces/"
                   "voting_ensemble.yaml; smoke.yaml with --smoke-test)")
    p.add_argument("--group-by", choices=GROUP_BY, default=C.group_by,
                   help="what folds keep disjoint (default: %(default)s; missing speakers "
                   "fall back to the recording)")
    p.add_argument("--n-splits", type=int, default=C.n_splits, help="folds (default: %(default)s)")
    p.add_argument("--table-block-rows", type=int, default=C.table_block_rows,
                   help="--table only: consecutive rows per fold group; 0 = row-level folds, "
                   "optimistic (default: %(default)s)")
    p.add_argument("--num-samples", type=int, default=C.num_samples,
                   help="configurations to try (default: %(default)s)")
    p.add_argument("--time-budget-s", type=float, help="stop starting trials after this long")
    p.add_argument("--max-concurrent", type=int, default=C.max_concurrent,
                   help="most trials at once; 0 = as many as CPUs allow (default: %(default)s)")
    p.add_argument("--cpus-per-trial", type=int, default=C.cpus_per_trial,
                   help="CPUs per trial, also the members' n_jobs (default: %(default)s)")
    p.add_argument("--grace-period", type=int, default=C.grace_period,
                   help="ASHA: folds every trial runs before it may be stopped "
                   "(default: %(default)s)")
    p.add_argument("--seed", type=int, default=C.seed,
                   help="seed of folds, sampling and models (default: %(default)s)")
    p.add_argument("--storage-path",
                   help="Tune experiment storage (default: <output>/ray_results)")
    p.add_argument("--name", default=C.name, help="experiment name (default: %(default)s)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted sweep in --output (finished trials are kept, "
                   "unfinished ones continue from their last fold)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else local Ray)")
    p.add_argument("--verbose", type=int, default=C.verbose, choices=(0, 1, 2),
                   help="Tune progress output (default: %(default)s)")
    p.add_argument("--smoke-test", action="store_true",
                   help="tiny sweep (tune_spaces/smoke.yaml) on a generated dataset in a "
                   "temporary folder, unless --dataset/--table/--output are given")
    args = p.parse_args(argv)
    default_space = "smoke.yaml" if args.smoke_test else "voting_ensemble.yaml"
    args.space = args.space or os.path.join(spaces, default_space)
    if args.smoke_test:
        args.num_samples = min(args.num_samples, 3)
        args.n_splits = min(args.n_splits, 3)
    elif not args.output or not (args.dataset or args.table):
        p.error("--output and one of --dataset/--table are required (or use --smoke-test)")
    if args.dataset and args.table:
        p.error("give only one of --dataset and --table")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from spoofray.training.tune import TuneMLConfig, run_sweep

    with tempfile.TemporaryDirectory(prefix="spoofray-tune-smoke-") as tmp:
        if args.smoke_test and not (args.dataset or args.table):
            from spoofray.testing.datasets import write_synthetic_dataset

            args.dataset = write_synthetic_dataset(os.path.join(tmp, "features"))
        if args.smoke_test and not args.output:
            args.output = os.path.join(tmp, "sweep")
        try:
            cfg = TuneMLConfig(
                space=args.space, output=args.output, dataset=args.dataset, table=args.table,
                storage_path=args.storage_path, name=args.name, group_by=args.group_by,
                n_splits=args.n_splits, table_block_rows=args.table_block_rows,
                num_samples=args.num_samples, time_budget_s=args.time_budget_s,
                max_concurrent=args.max_concurrent, cpus_per_trial=args.cpus_per_trial,
                grace_period=args.grace_period, seed=args.seed, resume=args.resume,
                overwrite=args.overwrite, address=args.address, verbose=args.verbose,
            )
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
