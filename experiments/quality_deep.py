"""Deep-member quality on ../shared/data/devcorpus, with and without copy-synthesis data.

Protocol "unseen vocoders" of experiments/quality.py (train: Griffin-Lim spoofs + 70% of
LibriSpeech speakers; test: WaveNet and GAN-vocoder spoofs + held-out LibriSpeech speakers
+ every bona fide clip of LJSpeech, LibriTTS, JSUT, CSMSC). Steps, each skipped when its
output already exists under --work:

1. features (log-mel, MFCC, LFCC; the shipped feature config) of the whole devcorpus;
2. dev = a few small Griffin-Lim attacks + 25% of the training speakers, taken from the
   TRAIN side (early stopping and the shipped threshold come from it, never from test);
3. copy-synthesis corpus (Griffin-Lim and WORLD) of the TRAIN bona fide clips outside dev,
   labelled spoof, attack copysyn:<vocoder>, and its features;
4. per condition (base, copysyn) and seed: the members trained in one Ray Train run;
5. test scores per member, mean fusion and logistic fusion (fitted on dev windows): file
   EER/AUC, per-family EER, false alarms per corpus and recall at the dev-EER threshold.

  python experiments/quality_deep.py --work /tmp/quality_deep
  python experiments/quality_deep.py --work /tmp/quality_deep --benchmark-workers 1,2 --conditions ""

--benchmark-workers trains the cnn member alone on the base training set once per worker
count and records seconds per epoch and the load average (the machine may be shared).
Writes <work>/quality_deep.json, <work>/quality_deep.md and <work>/benchmark_workers.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:  # run from a checkout: spoofray, jobs/ and experiments/ importable
    sys.path.insert(0, REPO_ROOT)

from jobs import _bootstrap  # noqa: E402  (logging, absolute(), default_devcorpus())


def small_members() -> dict:
    """Members small enough for a CPU run of the whole experiment in well under an hour."""
    return {"cnn": {"filters": [16, 32, 32, 64], "dense": 32},
            "lcnn": {"width": 0.5},
            "tdnn": {"channels": [64, 64, 64, 128], "dense": 32},
            "rnn": {"units": 32},
            "mlp": {"hidden": [64, 32]}}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True, help="working folder (features, corpora, runs, results)")
    p.add_argument("--devcorpus", default=_bootstrap.default_devcorpus())
    p.add_argument("--members", default="cnn,lcnn,tdnn,rnn,mlp")
    p.add_argument("--member-params", default=json.dumps(small_members()),
                   help="JSON overrides per member (default: small members, see small_members())")
    p.add_argument("--conditions", default="base,copysyn",
                   help="base (devcorpus train only) and/or copysyn (+ copy-synthesis corpus)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--seeds", default="0", help="comma-separated training seeds")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the protocol and dev split")
    p.add_argument("--num-workers", type=int, default=1)
    p.add_argument("--cpus-per-worker", type=float, default=1.0)
    p.add_argument("--copysyn-vocoders", default="griffin_lim,world")
    p.add_argument("--perturbations", default="",
                   help="comma-separated stretch:<rate>/pitch:<semitones> for the copy-synthesis corpus")
    p.add_argument("--benchmark-workers", default="", help="e.g. 1,2: cnn epoch time per worker count")
    p.add_argument("--benchmark-epochs", type=int, default=3)
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else local Ray)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from experiments import quality
    from spoofray import dataset, storage
    from spoofray.config import FeatureConfig
    from spoofray.pipeline.extract import ExtractConfig, extract_features
    from spoofray.pipeline.runtime import init_ray
    from spoofray.training.train import DLTrainConfig, train_members

    work = _bootstrap.absolute(args.work)
    os.makedirs(work, exist_ok=True)
    timings: dict[str, float] = {}
    init_ray(args.address)
    feature_cfg = FeatureConfig(kinds=("logmel", "mfcc", "lfcc"), store_float16=True)

    def extract(manifest: str, out: str, step: str) -> None:
        if os.path.exists(os.path.join(out, dataset.MANIFEST_NAME)):
            return
        t0 = time.time()
        extract_features(ExtractConfig(input=manifest, output=out, overwrite=True, features=feature_cfg))
        timings[step] = round(time.time() - t0, 1)

    features = os.path.join(work, "features")
    extract(os.path.join(args.devcorpus, "manifest.csv"), features, "extract_devcorpus_s")
    files = quality.devcorpus_files(args.devcorpus)
    split = quality.unseen_vocoders(files, seed=args.split_seed)
    dev_attacks, dev_speakers = quality.dev_groups(files, split.train, seed=args.split_seed)
    train_files = files[files["uri"].isin(set(split.train))]
    copy_sources = train_files[(train_files["label"] == "bonafide")
                               & ~train_files["speaker"].isin(dev_speakers)]
    conditions = [c for c in args.conditions.split(",") if c]
    datasets = {"base": (os.path.join(work, "data", "base"), ())}
    if "copysyn" in conditions:
        corpus = os.path.join(work, "copysyn", "audio")
        if not os.path.exists(os.path.join(corpus, "manifest.csv")):
            storage.remove(corpus)
            t0 = time.time()
            copysyn_corpus(
                [{"uri": r.uri, "label": "bonafide", "speaker": r.speaker} for r in copy_sources.itertuples()],
                corpus, vocoders=tuple(args.copysyn_vocoders.split(",")), include_bonafide=False,
                perturbations=tuple(p for p in args.perturbations.split(",") if p), seed=args.split_seed,
                vocoder_kwargs={"griffin_lim": {"mel_inversion": "pinv"}})
            timings["copysyn_audio_s"] = round(time.time() - t0, 1)
        extract(os.path.join(corpus, "manifest.csv"), os.path.join(work, "copysyn", "features"),
                "extract_copysyn_s")
        datasets["copysyn"] = (os.path.join(work, "data", "copysyn"), (os.path.join(work, "copysyn", "features"),))
    n_windows = {}
    for name, (root, extra) in datasets.items():
        if not os.path.exists(os.path.join(root, dataset.MANIFEST_NAME)):
            quality.subset_dataset(features, split.train, root, extra=extra, rows_per_part=256)
        n_windows[name] = dataset.read_manifest(root)["counts"]["windows"]

    members = tuple(args.members.split(","))
    params = {k: v for k, v in json.loads(args.member_params).items() if k in members}

    def train_cfg(seed: int, **over) -> DLTrainConfig:
        base = dict(members=members, member_params=params, epochs=args.epochs,
                    batch_size=args.batch_size, num_workers=args.num_workers,
                    cpus_per_worker=args.cpus_per_worker, patience=args.patience, seed=seed,
                    split_by="attack", dev_groups=tuple(dev_attacks + dev_speakers),
                    dev_fraction=0.01)  # dev is exactly dev_groups (no random top-up)
        return DLTrainConfig(**{**base, **over})

    if args.benchmark_workers:
        bench = []
        for n in (int(v) for v in args.benchmark_workers.split(",")):
            cfg = train_cfg(0, members=("cnn",), member_params={"cnn": params.get("cnn", {})},
                            epochs=args.benchmark_epochs, num_workers=n, patience=args.benchmark_epochs,
                            cpus_per_worker=1.0 if n == 1 else 0.5)
            load_before = os.getloadavg()
            res = train_members(datasets["base"][0], os.path.join(work, "bench", f"workers{n}"), cfg,
                                overwrite=True)
            hist = res.summary["history"]
            bench.append({"num_workers": n, "cpus_per_worker": cfg.cpus_per_worker,
                          "tf_threads_per_worker": 1, "batch_per_worker": cfg.batch_size,
                          "steps_per_epoch": res.summary["data"]["steps_per_epoch"],
                          "n_train_windows": res.summary["data"]["n_train_windows"],
                          "train_s_per_epoch": [h["train_s"] for h in hist],
                          "epoch_s": [h["epoch_s"] for h in hist],
                          "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                          "fit_s": res.summary["timing_s"]["fit"]})
            print(json.dumps(bench[-1]))
        with open(os.path.join(work, "benchmark_workers.json"), "w") as fh:
            json.dump(bench, fh, indent=2)

    results = []
    for cond in conditions:
        for seed in (int(s) for s in args.seeds.split(",")):
            out = os.path.join(work, "runs", f"{cond}-seed{seed}")
            t0 = time.time()
            res = train_members(datasets[cond][0], out, train_cfg(seed), overwrite=True)
            run = {"condition": cond, "seed": seed, "train_wall_s": round(time.time() - t0, 1),
                   "epochs_done": res.summary["epochs_done"], "data": res.summary["data"],
                   "best_epoch": {n: m["best_epoch"] for n, m in res.summary["members"].items()},
                   "loadavg_after": os.getloadavg()}
            run["test"] = quality.score_deep_run(out, members, features, split, files)
            results.append(run)
            print(json.dumps({k: run[k] for k in ("condition", "seed", "train_wall_s")} | {
                n: {k: round(v[k], 4) for k in ("eer", "auc", "recall")} for n, v in run["test"].items()}))
            with open(os.path.join(work, "quality_deep.json"), "w") as fh:  # after every run
                json.dump(_doc(args, split, dev_attacks, dev_speakers, copy_sources, n_windows,
                               timings, results), fh, indent=2, default=_json_default)
    if results:
        with open(os.path.join(work, "quality_deep.md"), "w") as fh:
            fh.write(quality.deep_markdown(results))
        print(f"wrote {os.path.join(work, 'quality_deep.json')} and quality_deep.md")
    return 0


def copysyn_corpus(items: list[dict], corpus: str, *, n_tasks: int | None = None, **kwargs) -> str:
    """:func:`spoofray.augment.make_copysyn_corpus` in parallel Ray tasks (one sub-folder
    each), with one manifest over all of them at ``<corpus>/manifest.csv``."""
    import pandas as pd
    import ray

    from spoofray import augment, storage

    n_tasks = n_tasks or max(1, int(ray.available_resources().get("CPU", 1)))
    task = ray.remote(num_cpus=1)(augment.make_copysyn_corpus)
    chunks = [(i, items[i::n_tasks]) for i in range(n_tasks) if items[i::n_tasks]]
    ray.get([task.remote(chunk, storage.join(corpus, f"part{i}"), **kwargs) for i, chunk in chunks])
    parts = []
    for i, _ in chunks:
        part = pd.read_csv(storage.join(corpus, f"part{i}", "manifest.csv"), keep_default_na=False)
        parts.append(part.assign(path=f"part{i}/" + part["path"]))
    manifest = storage.join(corpus, "manifest.csv")
    storage.write_bytes_atomic(manifest, pd.concat(parts).to_csv(index=False).encode())
    return manifest


def _doc(args, split, dev_attacks, dev_speakers, copy_sources, n_windows, timings, results) -> dict:
    return {"args": vars(args), "protocol": split.name, "description": split.description,
            "n_train_files": len(split.train), "n_test_files": len(split.test),
            "dev_attacks": dev_attacks, "dev_speakers": dev_speakers,
            "n_copysyn_sources": len(copy_sources), "n_train_windows": n_windows,
            "timings_s": timings, "runs": results}


def _json_default(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


if __name__ == "__main__":
    sys.exit(main())
