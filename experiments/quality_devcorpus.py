"""Development quality numbers on ../shared/data/devcorpus (writes a table for docs/quality.md).

For each generalisation protocol of experiments/quality.py (unseen vocoders, unseen corpora):
extract features once, sweep the sklearn ensemble with Ray Tune on the TRAIN files only
(folds grouped by attack), refit the best, and score the TEST files with the model's own
threshold (the EER point of its out-of-fold training scores, never tuned on test).

  python experiments/quality_devcorpus.py --work /tmp/quality --num-samples 12
"""

from __future__ import annotations

import argparse
import json
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:  # run from a checkout: spoofray, jobs/ and experiments/ importable
    sys.path.insert(0, REPO_ROOT)

from jobs import _bootstrap  # noqa: E402  (logging, absolute(), default_devcorpus())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True, help="working folder (features, sweeps, results)")
    p.add_argument("--devcorpus", default=_bootstrap.default_devcorpus())
    p.add_argument("--num-samples", type=int, default=12, help="sweep trials per protocol")
    p.add_argument("--protocols", default="unseen-vocoders,unseen-corpora")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from experiments import quality
    from spoofray import dataset, storage
    from spoofray.config import FeatureConfig
    from spoofray.models.ml import design_matrix, load_ensemble
    from spoofray.pipeline.extract import ExtractConfig, extract_features
    from spoofray.pipeline.runtime import init_ray
    from spoofray.training.tune import TuneMLConfig, run_sweep

    work = os.path.abspath(args.work)
    init_ray()
    features = os.path.join(work, "features")
    if not os.path.exists(os.path.join(features, dataset.MANIFEST_NAME)):
        extract_features(ExtractConfig(
            input=os.path.join(args.devcorpus, "manifest.csv"), output=features, overwrite=True,
            features=FeatureConfig(kinds=("stats", "mfcc", "lfcc"), store_float16=True)))
    files = quality.devcorpus_files(args.devcorpus)
    space = os.path.join(_bootstrap.REPO_ROOT, "tune_spaces", "voting_ensemble.yaml")

    results = {}
    for name in args.protocols.split(","):
        split = quality.PROTOCOLS[name](files)
        train_ds = os.path.join(work, name, "train_features")
        storage.remove(train_ds)
        quality.subset_dataset(features, split.train, train_ds)
        sweep = os.path.join(work, name, "sweep")
        run_sweep(TuneMLConfig(space=space, output=sweep, dataset=train_ds, group_by="attack",
                               n_splits=4, num_samples=args.num_samples, seed=args.seed,
                               overwrite=True, verbose=0))
        sidecar = json.load(open(os.path.join(sweep, "model", "member.json")))
        model = load_ensemble(os.path.join(sweep, "model", "ensemble.skops"))
        table = dataset.read_table(features)
        windows = table.to_pandas(types_mapper=None)[["uri", "label", "attack"]]
        test_mask = windows["uri"].isin(set(split.test)).to_numpy()
        feats = {k: dataset.tensor_column(table, k)[test_mask] for k in ("stats", "mfcc", "lfcc")}
        proba = model.predict_proba(design_matrix(feats, sidecar["inputs"]))[:, 1]
        scored = quality.file_scores(windows[test_mask].reset_index(drop=True), proba)
        res = quality.evaluate_split(scored, files, sidecar["threshold"])
        res.update(protocol=name, description=split.description, n_train_files=len(split.train),
                   n_test_files=len(split.test), inputs=sidecar["inputs"],
                   oof_train_eer=sidecar["oof_metrics"]["eer"], threshold=sidecar["threshold"])
        results[name] = res
        print(json.dumps({k: res[k] for k in ("protocol", "eer", "auc", "oof_train_eer",
                                             "per_family_eer", "bonafide_false_alarm_by_corpus")},
                         indent=2))
    with open(os.path.join(work, "quality_ml.json"), "w") as fh:
        json.dump(results, fh, indent=2)
    print(f"wrote {os.path.join(work, 'quality_ml.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
