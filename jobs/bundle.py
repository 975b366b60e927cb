"""Make, inspect and verify model bundles (the versioned, checksummed detector folders).

Examples
--------
  # from a tune output and a train output; fusion and threshold fitted on a held-out dev set
  python jobs/bundle.py assemble --member out/tune --member out/train \\
      --dev-features out/dev_features --name calls --version 1.0 --output s3://models/calls/1.0
  # into the local registry ($SPOOFRAY_HOME/bundles/<name>/<version>, default ~/.spoofray)
  python jobs/bundle.py assemble --member out/tune/model/member.json --name calls
  python jobs/bundle.py list
  python jobs/bundle.py inspect s3://models/calls/1.0
  python jobs/bundle.py verify s3://models/calls/1.0 --dataset out/dev_features
  python jobs/bundle.py --smoke-test

Without --dev-features the fusion is the (weighted) mean of member scores and the threshold
is the sklearn member's own (or 0.5); bundle.json records which ("threshold_method").
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from spoofray.models.assemble import AssembleConfig

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke-test", action="store_true",
                   help="assemble a tiny bundle in a temporary registry, verify and use it")
    sub = p.add_subparsers(dest="command")
    a = sub.add_parser("assemble", help="make a bundle from tune/train outputs")
    cli.add_config_flags(a, AssembleConfig)
    a.add_argument("--weight", action="append", default=[], metavar="NAME=W",
                   help="mean-fusion weight of a member (repeatable)")
    i = sub.add_parser("inspect", help="print a bundle's description (reads bundle.json only)")
    i.add_argument("bundle")
    v = sub.add_parser("verify", help="check checksums, feature config and load every member")
    v.add_argument("bundle")
    v.add_argument("--dataset", help="also check a feature dataset's config against the bundle")
    sub.add_parser("list", help="bundles in the local registry")
    args = p.parse_args(argv)
    if not args.smoke_test and not args.command:
        p.error("give a command (assemble, inspect, verify, list) or --smoke-test")
    if args.command == "assemble":
        cli.require(a, args, "members")
    return args


def _weights(pairs: list[str]) -> dict[str, float]:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        try:
            out[name] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name:
            raise SpoofrayError(f"--weight expects NAME=NUMBER, got {pair!r}")
    return out


def _inspect(uri: str) -> dict:
    from spoofray import storage
    from spoofray.models.bundle import BUNDLE_JSON

    m = json.loads(storage.read_bytes(storage.join(uri, BUNDLE_JSON)))
    keep = ("name", "version", "created_at", "feature_config_hash", "needed_kinds", "fusion",
            "threshold", "threshold_method", "threshold_details", "training_data_fingerprint",
            "dev_metrics", "files")
    out = {"uri": uri, **{k: m.get(k) for k in keep}}
    out["members"] = [{k: e.get(k) for k in ("name", "kind", "inputs", "weight", "file")}
                      for e in m.get("members", [])]
    return out


def _smoke_test() -> int:
    import numpy as np

    from spoofray.config import AudioConfig, FeatureConfig
    from spoofray.models import ml
    from spoofray.models.assemble import AssembleConfig, assemble_bundle
    from spoofray.models.registry import latest_bundle
    from spoofray.models.bundle import Bundle

    with tempfile.TemporaryDirectory(prefix="spoofray-bundle-smoke-") as tmp:
        os.environ["SPOOFRAY_HOME"] = tmp
        cfg = FeatureConfig(audio=AudioConfig(window_s=1.0, hop_s=1.0), kinds=("stats",))
        rng = np.random.default_rng(0)
        y = np.repeat([0, 1], 40)
        stats = rng.normal(size=(80, 26)).astype(np.float32) + y[:, None]
        model = ml.make_ensemble({"weight_svc": 0, "weight_knn": 0, "weight_hgb": 0,
                                  "rf__n_estimators": 10, "random_state": 0})
        model.fit(ml.design_matrix({"stats": stats}, ["stats"]), y)
        member_dir = os.path.join(tmp, "tune", "model")
        os.makedirs(member_dir)
        ml.save_ensemble(model, os.path.join(member_dir, "ensemble.skops"))
        with open(os.path.join(member_dir, "member.json"), "w") as fh:
            json.dump({"name": "ml", "kind": "sklearn", "file": "ensemble.skops",
                       "inputs": ["stats"], "feature_config": cfg.to_dict(),
                       "feature_config_hash": cfg.config_hash(), "threshold": 0.5,
                       "threshold_method": "smoke", "training_data_fingerprint": "smoke"}, fh)
        made = assemble_bundle(AssembleConfig(members=(os.path.join(tmp, "tune"),),
                                              name="smoke", version="0"))
        bundle = Bundle.load(latest_bundle())
        scores = bundle.score_windows({"stats": stats})["spoof_score"]
        ok = made["uri"] == latest_bundle() and scores[y == 1].mean() > scores[y == 0].mean()
        print(json.dumps({"bundle": made["uri"], "mean_score_spoof": float(scores[y == 1].mean()),
                          "mean_score_bonafide": float(scores[y == 0].mean())}, indent=2))
        return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.smoke_test:
        return _smoke_test()
    from spoofray.models.registry import list_registry
    from spoofray.models.bundle import Bundle

    try:
        if args.command == "assemble":
            from spoofray.models.assemble import AssembleConfig, assemble_bundle

            weights = _weights(args.weight)
            cfg = cli.build_config(AssembleConfig, args, {"weights": weights} if weights else {})
            made = assemble_bundle(cfg)
            m = made["manifest"]
            print(json.dumps({"bundle": made["uri"], "registry": made["registry_uri"],
                              "members": [e["name"] for e in m["members"]],
                              "fusion": m["fusion"]["rule"], "threshold": m["threshold"],
                              "threshold_method": m["threshold_method"]}, indent=2))
        elif args.command == "inspect":
            print(json.dumps(_inspect(args.bundle), indent=2))
        elif args.command == "verify":
            bundle = Bundle.load(args.bundle, dataset=args.dataset)
            print(json.dumps({"verified": True, **bundle.describe()}, indent=2))
        else:
            print(json.dumps(list_registry(), indent=2))
    except (SpoofrayError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
