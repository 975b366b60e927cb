"""Train deep ensemble members (Keras 3) on a feature dataset with Ray Train.

One TensorflowTrainer run (MultiWorkerMirroredStrategy, --num-workers workers, GPUs with
--use-gpu) trains every member named in --members on the same streamed batches:
cnn (log-mel), lcnn (LFCC, max-feature-map), tdnn and rnn (MFCC frames), mlp (pooled
MFCC), conformer (log-mel), efficientnet_b0 and vgg16 (log-mel, keras.applications with
weights=None; --member-params '{"vgg16": {"weights_path": "vgg16_notop.h5"}}' fine-tunes
from a local weights file). Train/dev is a group-disjoint holdout (--split-by, default
attack: dev attacks are unseen in training). Every epoch reports loss and dev EER/AUC at
window level (dev_eer) and file level (dev_eer_file, mean window score per file) and
writes a checkpoint; a member stops after --patience epochs without a better dev EER.

Examples
--------
  python jobs/train_dl.py --dataset out/features --output out/dl --members cnn,lcnn,tdnn
  python jobs/train_dl.py --dataset out/features --output out/dl --members cnn --resume --epochs 30
  python jobs/train_dl.py --smoke-test
  ray job submit --working-dir . -- python jobs/train_dl.py --dataset s3://b/features \\
      --output s3://b/dl --members cnn,lcnn,conformer --num-workers 4 --use-gpu

On a multi-node cluster --output must be storage every node reaches (s3:// or a shared
file system): checkpoints are written there.

Output: members/<name>.keras + members/<name>.json (the model bundle's input),
dev_scores.parquet, training_summary.json, ray/ (runs and checkpoints; used by --resume).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import _bootstrap  # noqa: F401  (sys.path + logging)

from spoofray import cli
from spoofray.errors import SpoofrayError

#: What --smoke-test trains unless told otherwise: two tiny members, capped settings.
SMOKE_MEMBERS = ("cnn", "mlp")
SMOKE_PARAMS = {"cnn": {"filters": [8, 16]}, "mlp": {"hidden": [16]}}
SMOKE_CAPS = {"batch_size": 8, "epochs": 2, "cpus_per_worker": 0.5}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from spoofray.training.train import DLTrainConfig

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", help="feature dataset made by jobs/extract_features.py (local or s3://)")
    p.add_argument("--output", help="output folder (local or s3://)")
    cli.add_config_flags(p, DLTrainConfig)
    p.add_argument("--no-augment", action="store_true", help="no SpecAugment/mixup/cutmix")
    p.add_argument("--resume", action="store_true",
                   help="continue from the latest checkpoint under --output (epoch count included)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else local Ray)")
    p.add_argument("--smoke-test", action="store_true",
                   help="2 tiny members, 2 epochs, on a generated dataset in a temporary folder "
                   "(unless --dataset/--output are given)")
    args = p.parse_args(argv)
    if not args.smoke_test and not (args.dataset and args.output):
        p.error("--dataset and --output are required (or use --smoke-test)")
    return args


def build_config(args: argparse.Namespace):
    from spoofray.augment import FeatureAugmentConfig
    from spoofray.training.train import DLTrainConfig

    given = cli.given(args)
    fixed: dict = {}
    if args.no_augment:
        fixed["augment"] = FeatureAugmentConfig.off().to_dict()
    if args.smoke_test:
        members = tuple(given.get("members") or SMOKE_MEMBERS)
        params = {**SMOKE_PARAMS, **given.get("member_params", {})}
        fixed.update(members=members, member_params={k: v for k, v in params.items()
                                                     if k in members},
                     **{k: min(given.get(k, getattr(DLTrainConfig, k)), cap)
                        for k, cap in SMOKE_CAPS.items()})
    return cli.build_config(DLTrainConfig, args, fixed)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from spoofray.config import AudioConfig, FeatureConfig
    from spoofray.pipeline.runtime import init_ray
    from spoofray.training.train import train_members

    with tempfile.TemporaryDirectory(prefix="spoofray-train-dl-smoke-") as tmp:
        try:
            cfg = build_config(args)
            if args.smoke_test and not args.dataset:
                from spoofray.testing.datasets import write_toy_feature_dataset

                toy = FeatureConfig(audio=AudioConfig(window_s=1.0, hop_s=1.0), n_mels=16,
                                    n_mfcc=8, n_lfcc=8, n_linear_filters=20)
                args.dataset = write_toy_feature_dataset(os.path.join(tmp, "features"), toy)
            if args.smoke_test and not args.output:
                args.output = os.path.join(tmp, "dl")
            init_ray(args.address, num_cpus=2 if args.smoke_test else None)
            result = train_members(args.dataset, args.output, cfg, resume=args.resume,
                                   overwrite=args.overwrite)
        except (SpoofrayError, FileNotFoundError, json.JSONDecodeError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        s = result.summary
        print(json.dumps({
            "output": result.output,
            "members": {n: {"file": m["file"], "best_epoch": m["best_epoch"],
                            "dev_eer": m["dev_metrics"].get("eer"),
                            "dev_eer_file": m["dev_metrics"].get("eer_file"),
                            "dev_auc": m["dev_metrics"].get("auc")}
                        for n, m in s["members"].items()},
            "epochs_done": s["epochs_done"],
            "data": s["data"],
            "timing_s": s["timing_s"],
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
