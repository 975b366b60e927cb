"""The whole spoofray path on a small generated archive, on a local Ray (no cloud):

  demo archive → features → quick sklearn sweep (Ray Tune) → quick CNN (Ray Train)
  → bundle (fusion and threshold fitted on a second, held-out archive) → score → evaluate

  python jobs/demo.py --output demo_out

The archive is synthetic (spoofray.testing.synth): it only demonstrates the pipeline, and its
quality numbers say nothing about real deepfakes (see docs/quality.md for those).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

import _bootstrap  # noqa: F401  (sys.path + logging)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default="demo_out", help="folder for everything (replaced)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs for the local Ray")
    p.add_argument("--verbose", action="store_true",
                   help="also show Ray's and TensorFlow's start-up and progress output")
    args = p.parse_args(argv)
    out = os.path.abspath(args.output)
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()

    from spoofray import console

    console.set_verbose(args.verbose or console.verbose())
    from spoofray.config import FeatureConfig
    from spoofray.models.assemble import AssembleConfig, assemble_bundle
    from spoofray.pipeline.extract import ExtractConfig, extract_features
    from spoofray.pipeline.runtime import init_ray
    from spoofray.pipeline.score import ScoreConfig, score_archive
    from spoofray.reports import EvaluateConfig, evaluate_report
    from spoofray.testing.synth import make_demo_archive
    from spoofray.training.train import DLTrainConfig, train_members
    from spoofray.training.tune import TuneMLConfig, run_sweep

    def step(i: int, text: str) -> None:
        print(f"[{i}/8 {time.perf_counter() - started:5.0f}s] {text}", flush=True)

    archive = make_demo_archive(os.path.join(out, "archive"), seed=0)
    step(1, f"demo archive (synthetic audio): {archive.root}")
    init_ray(num_cpus=args.num_cpus)

    # One feature config for the archive and the held-out dev archive: the bundle refuses
    # dev features computed differently from what its members were trained on.
    feature_cfg = FeatureConfig(kinds=("logmel", "mfcc", "stats"))
    features = os.path.join(out, "features")
    manifest = extract_features(ExtractConfig(
        input=str(archive.manifest_path), output=features, features=feature_cfg))
    step(2, f"features: {features}  {json.dumps(manifest['counts'])}")

    sweep = os.path.join(out, "sweep")
    space = os.path.join(_bootstrap.REPO_ROOT, "tune_spaces", "smoke.yaml")
    summary = run_sweep(TuneMLConfig(space=space, output=sweep, dataset=features,
                                     group_by="speaker", n_splits=2, num_samples=4, verbose=0))
    best = summary.get("best") or {}
    step(3, f"sklearn ensemble sweep: {sweep}  (best trial's out-of-fold EER "
         f"{best.get('oof_eer', 'n/a')})")

    dl_out = os.path.join(out, "dl")
    train_members(features, dl_out, DLTrainConfig(members=("cnn",), epochs=2, num_workers=1,
                                                   batch_size=16, split_by="speaker",
                                                   dev_fraction=0.3))
    step(4, f"deep member (CNN on log-mel, Ray Train): {dl_out}/members/")

    # The fused score needs its own threshold: each member's was chosen for that member
    # alone. A second archive (other seed: other voices and utterances) is the held-out dev
    # set the fusion weights and the threshold are fitted on.
    dev_archive = make_demo_archive(os.path.join(out, "dev_archive"), seed=1, broken=False)
    dev_features = os.path.join(out, "dev_features")
    extract_features(ExtractConfig(input=str(dev_archive.manifest_path), output=dev_features,
                                   features=feature_cfg))
    step(5, f"held-out dev archive and its features: {dev_features}")

    bundle = os.path.join(out, "bundle")
    assembled = assemble_bundle(AssembleConfig(members=(sweep, dl_out), name="demo", version="1",
                                               output=bundle, dev_features=dev_features))
    chosen = assembled["manifest"]
    step(6, f"bundle: {bundle}  ({chosen['fusion']['rule']} fusion, threshold "
         f"{chosen['threshold']:.3f}: {chosen['threshold_method']})")

    reports = os.path.join(out, "reports")
    run = score_archive(ScoreConfig(input=str(archive.manifest_path), output=reports,
                                    bundle=bundle))
    step(7, f"report: {run['run_uri']}  ({json.dumps(run.get('counts', {}))})")

    evaluation = evaluate_report(EvaluateConfig(report=run["run_uri"],
                                                output=os.path.join(out, "evaluation")))
    overall = next((row for row in evaluation["metrics"] if row.get("scope") == "overall"), {})
    step(8, f"evaluation: {os.path.join(out, 'evaluation')}  (file-level EER "
         f"{overall.get('eer', 'n/a')}, on synthetic audio)")
    print(f"\nThe report is in {run['run_uri']}/report/ — read it with pandas, pyarrow or DuckDB.")
    print(f"Its page (open it in a browser): {run['run_uri']}/index.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
