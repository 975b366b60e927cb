"""Leave-one-source-out quality of a training recipe, through the production path only.

    python experiments/generalisation.py --work /tmp/gen                 # the shipped recipe (SHIPPED)
    python experiments/generalisation.py --work /tmp/gen --recipe no-trim --seed 1
    python experiments/generalisation.py --work /tmp/gen --ship          # also build spoofray-base
    python experiments/generalisation.py --work /tmp/gen --lofo          # + leave-one-family-out

Data: devcorpus + trainpool (``pool.py``). Folds hold out one source repository at a time
(a demo page takes its bona fide clips with it; the three tiny real-only sources form one
fold), so every test clip comes from a recording setup, a speaker set and generators that
no training clip shares. For each fold:

1. training rows: the other folds' clips (recipe: licence filter, per-(source, label) cap)
   plus their channel copies and copy-syntheses;
2. ``run_sweep`` with the recipe's constant search space → member; ``assemble_bundle``;
3. ``score_archive`` on the held-out clips and the 8 kHz telephone copies of its bona fide
   clips → report.

Then every fold's threshold is set by ``assemble.threshold_from_reports`` on the OTHER
folds' reports (a false-alarm budget on real speech, never fitted on the fold it is applied
to), and ``reports.evaluate_report`` measures each fold at it; pooled numbers come from the
same evaluation of all fold reports together. Nothing here computes a score, a fusion or a
threshold itself.

``--lofo`` adds leave-one-family-out folds (:func:`leave_one_family_out`): per spoof family,
a bundle that saw neither that family nor any clip of the sources holding it.

Writes ``<work>/<recipe>-seed<seed>/results.json`` and ``results.md`` (the tables of
docs/quality.md). Steps already done in ``--work`` are reused.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pool as pool_mod  # noqa: E402

#: Version of the bundle ``--ship`` puts into the package, and the recipe it is trained with.
SHIPPED_VERSION = "1.2.0"
SHIPPED = "banded"
#: The three tiny real-only sources are one fold.
SMALL_REAL = {"CorentinJ/Real-Time-Voice-Cloning", "Uberi/speech_recognition",
              "voxserv/audio_quality_testing_samples"}
#: 8 kHz channels (G.711 in numpy; GSM by ffmpeg, ~1 s a clip, so a sixth of them).
TELEPHONE = ("telephone:mulaw", "telephone:alaw", "telephone:mulaw+noise:30",
             "telephone:alaw+rawboost:3", "telephone:mulaw+gain:random", "telephone:gsm")
#: Other channels: codecs, RawBoost, noise, reverberation, level.
OTHER_CHANNELS = ("codec:mp3:32k", "codec:opus:16k", "rawboost:1", "rawboost:3",
                  "noise:15", "reverb:0.4", "gain:random+rawboost:2", "rawboost:1+noise:25")
#: Telephone files (8 kHz, written as files and read back like user input): a codec of
#: telephone.TELEPHONE_FILE_CODECS, the telephone band-pass or only the resampler's
#: low-pass, and a 16 kHz effect before (none, noise, level, RawBoost).
TELFILE_CODECS = ("mulaw", "alaw", "pcm16", "gsm", "opus", "mulaw-ffmpeg")
TELFILE_EFFECTS = ("none", "noise:30", "gain:random", "rawboost:3", "none", "noise:20")


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str
    pad: str = "repeat"
    trim_db: float | None = 40.0
    inputs: tuple[str, ...] = ("lfcc_dynamics", "stats")
    members: tuple[tuple[str, object], ...] = (("weight_lr", 1.0), ("lr__C", 0.1),
                                               ("lr__class_weight", "balanced"))
    datasets: tuple[str, ...] = ("devcorpus", "trainpool")
    channel_copies: bool = True
    #: Copy-synthesis spoofs of real clips: off in the shipped recipe, which measured better
    #: without them (docs/quality.md, ablation ``plus-copysyn``).
    copysyn_vocoders: tuple[str, ...] = ()
    #: TTS spoofs saying the words of real clips (``make_spoofs --tts``): engines of
    #: ``spoofray.augment.tts``; made of the same ``copysyn_sources`` clips.
    tts_engines: tuple[str, ...] = ()
    copysyn_sources: int = 100
    shippable_only: bool = True
    cap_per_source_label: int = 150
    target_false_alarm_rate: float = 0.01
    #: FeatureConfig overrides, e.g. a sub-band filterbank: ``(("fmin", 4000.0),)``.
    feature_overrides: tuple[tuple[str, object], ...] = ()
    #: A narrowband member (its inputs; none: one member judges every band): trained on
    #: the telephone files and telephone copies of the training clips, it judges the files
    #: measured narrow, the first member the wide ones.
    narrow_inputs: tuple[str, ...] = ()
    #: The narrowband member's estimators (default: ``members``).
    narrow_members: tuple[tuple[str, object], ...] = ()
    #: Whether the 16 kHz telephone copies also train the wideband member (with a
    #: narrowband member they are mostly judged narrow, so they are its data).
    wide_telephone: bool = True
    #: A second wideband member (its inputs; none: no second member), trained on the same
    #: rows, mean-fused with the first at equal weight.
    fused_inputs: tuple[str, ...] = ()
    #: The second wideband member's estimators (default: ``members``).
    fused_members: tuple[tuple[str, object], ...] = ()


def kinds_of(inputs: tuple[str, ...]) -> tuple[str, ...]:
    """The feature kinds model inputs are computed from, in FEATURE_KINDS order."""
    from spoofray.config import ordered_kinds
    from spoofray.models.ml import INPUTS

    return ordered_kinds(INPUTS[i] for i in inputs)


BASE = Recipe("base")
RECIPES = {r.name: r for r in (
    BASE,
    dataclasses.replace(BASE, name="no-trainpool", datasets=("devcorpus",)),
    dataclasses.replace(BASE, name="no-channel", channel_copies=False),
    dataclasses.replace(BASE, name="plus-copysyn",
                        copysyn_vocoders=("griffin_lim", "world", "hifigan")),
    dataclasses.replace(BASE, name="no-trim", pad="zeros", trim_db=None),
    dataclasses.replace(BASE, name="pooled-inputs", inputs=("lfcc_pooled", "stats")),
    dataclasses.replace(BASE, name="plus-hgb", members=BASE.members + (
        ("weight_hgb", 1.0), ("hgb__class_weight", "balanced"), ("hgb__max_iter", 150))),
    # Sub-band members: the LFCC filterbank over 4-8 kHz only (where vocoders leave most
    # artefacts, and where telephone speech has nothing) or over 0-4 kHz only.
    dataclasses.replace(BASE, name="subband-high", feature_overrides=(("fmin", 4000.0),)),
    dataclasses.replace(BASE, name="subband-low", feature_overrides=(("fmax", 4000.0),)),
    dataclasses.replace(BASE, name="subband-high-no-stats", inputs=("lfcc_dynamics",),
                        feature_overrides=(("fmin", 4000.0),)),
    dataclasses.replace(BASE, name="lfcc-40", feature_overrides=(("n_lfcc", 40),)),
    dataclasses.replace(BASE, name="plus-mfcc", inputs=BASE.inputs + ("mfcc_dynamics",)),
    dataclasses.replace(BASE, name="no-stats", inputs=("lfcc_dynamics",)),
    dataclasses.replace(BASE, name="lr-c-0.01", members=(
        ("weight_lr", 1.0), ("lr__C", 0.01), ("lr__class_weight", "balanced"))),
    dataclasses.replace(BASE, name="lr-c-1", members=(
        ("weight_lr", 1.0), ("lr__C", 1.0), ("lr__class_weight", "balanced"))),
    dataclasses.replace(BASE, name="cap-300", cap_per_source_label=300),
    # subband-high-no-stats (1.1.0) for wideband files, and a narrowband member on the
    # telephone band for files measured narrow (8 kHz calls).
    dataclasses.replace(BASE, name="banded", inputs=("lfcc_dynamics",),
                        feature_overrides=(("fmin", 4000.0),),
                        narrow_inputs=("lfcc_narrow_dynamics",)),
)}
RECIPES["banded-no-wide-tel"] = dataclasses.replace(RECIPES["banded"], name="banded-no-wide-tel",
                                                   wide_telephone=False)
# Whisper tiny.en encoder states (pooled mean + std per window) for wideband files, the
# banded recipe's LFCC narrowband member for narrow ones.
for _name, _inputs in (("whisper-l2", ("whisper_l2",)),
                       ("whisper-all", tuple(f"whisper_l{k}" for k in range(5)))):
    RECIPES[_name] = dataclasses.replace(RECIPES["banded"], name=_name, inputs=_inputs,
                                         wide_telephone=False)
RECIPES["banded-plus-tts"] = dataclasses.replace(
    RECIPES["banded"], name="banded-plus-tts", tts_engines=("piper", "kokoro", "flite"),
    copysyn_sources=200)
# The LFCC member and the whisper-l2 member side by side for wideband files, mean-fused.
RECIPES["banded-fused-whisper"] = dataclasses.replace(
    RECIPES["banded-no-wide-tel"], name="banded-fused-whisper", fused_inputs=("whisper_l2",))
# Its Whisper member regularised ten times harder: that member alone saturates (more than
# 1 % of unseen real files at P(spoof) = 1.0), and the fused score inherits it.
RECIPES["banded-fused-whisper-c0.01"] = dataclasses.replace(
    RECIPES["banded-fused-whisper"], name="banded-fused-whisper-c0.01", fused_members=(
        ("weight_lr", 1.0), ("lr__C", 0.01), ("lr__class_weight", "balanced")))
RECIPES["banded-narrow-hgb"] = dataclasses.replace(
    RECIPES["banded"], name="banded-narrow-hgb", narrow_members=BASE.members + (
        ("weight_hgb", 1.0), ("hgb__class_weight", "balanced"), ("hgb__max_iter", 150)))


#: What each recipe changes against ``base`` (the ablation table's second column).
ABOUT = {
    "base": "reference: LR on full-band (0-8 kHz) LFCC dynamics + DEEP-VOICE stats, trim 40 dB, "
            "repeat-pad, channel copies, devcorpus + trainpool, shippable rows, cap 150 per "
            "(source, label); spoofray-base 1.0.0",
    "no-trainpool": "devcorpus only",
    "no-channel": "no codec/telephone/RawBoost/noise/reverb copies in training (run against "
                  "plus-copysyn)",
    "plus-copysyn": "+ 300 copy-synthesis spoofs of real clips (Griffin-Lim, WORLD, HiFi-GAN)",
    "no-trim": "no silence trim, zero-padded last window (run against plus-copysyn)",
    "pooled-inputs": "LFCC mean + std over frames instead of the channel-blind dynamics (run "
                     "against plus-copysyn)",
    "plus-hgb": "+ HistGradientBoosting member (equal weight)",
    "subband-high": "LFCC filterbank over 4-8 kHz only (sub-band member)",
    "subband-low": "LFCC filterbank over 0-4 kHz only (sub-band member)",
    "subband-high-no-stats": "LFCC filterbank over 4-8 kHz only, DEEP-VOICE stats retired; "
                             "shipped as spoofray-base 1.1.0",
    "lfcc-40": "40 LFCC instead of 20",
    "plus-mfcc": "+ MFCC dynamics input",
    "no-stats": "LFCC dynamics only (DEEP-VOICE stats retired)",
    "lr-c-0.01": "LR C = 0.01 (stronger regularisation)",
    "lr-c-1": "LR C = 1 (weaker regularisation)",
    "cap-300": "cap 300 per (source, label)",
    "banded": "subband-high-no-stats for wideband files + a narrowband member (LFCC dynamics "
              "over 0.3-3.4 kHz, trained on 8 kHz telephone files of both classes) for files "
              "measured narrow; shipped as spoofray-base 1.2.0",
    "banded-no-wide-tel": "banded without the 16 kHz telephone copies in the wideband member's "
                          "training (the control for the whisper recipes)",
    "whisper-l2": "Whisper tiny.en encoder, block 2's output (mean + std per window), LR, for "
                  "wideband files; banded's LFCC narrowband member; no telephone copies in the "
                  "wideband member's training",
    "whisper-all": "as whisper-l2 with all five encoder states (block input, blocks 1-4)",
    "banded-plus-tts": "banded + TTS spoofs of 200 real training clips (their Whisper "
                       "transcripts said by Piper, Kokoro-82M and flite with drawn voices; "
                       "clips whose transcript Whisper does not trust get none), wideband "
                       "member only, no channel copies of them",
    "banded-fused-whisper": "banded-no-wide-tel with a second wideband member, whisper-l2's "
                            "(LR on Whisper block 2 mean + std), mean-fused with the LFCC "
                            "member at equal weight",
    "banded-fused-whisper-c0.01": "banded-fused-whisper, its Whisper member's LR with C = 0.01 "
                                  "(the LFCC member's stays 0.1)",
    "banded-narrow-hgb": "banded, its narrowband member with a HistGradientBoosting estimator "
                         "beside the LR (equal weight)",
}


def fold_of(source: str) -> str:
    return "misc-real" if source in SMALL_REAL else source


# --- data ----------------------------------------------------------------------------------


def _channel_copy(args: tuple[str, str, str, int]) -> str | None:
    import soundfile as sf

    from spoofray import augment

    src, dst, spec, seed = args
    if os.path.exists(dst):
        return None
    y, sr = sf.read(src, dtype="float32")
    out = augment.apply_channel(y if y.ndim == 1 else y.mean(axis=1), sr, spec,
                                np.random.default_rng(seed))
    peak = float(np.max(np.abs(out)))
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    sf.write(dst + ".tmp.flac", out * (0.999 / peak) if peak > 0.999 else out, sr,
             subtype="PCM_16")
    os.replace(dst + ".tmp.flac", dst)
    return None


def channel_copies(root: str, clips: pd.DataFrame, kinds: tuple[str, ...]) -> pd.DataFrame:
    """Copies of clips with the label kept: ``telephone`` (8 kHz) and/or ``channel`` (other).

    Each clip's channel is drawn from a hash of its path, so a copy is the same file
    whichever subset asked for it.
    """
    rows, jobs = [], []
    for row in clips.itertuples(index=False):
        stem = os.path.splitext(row.path)[0]
        seed = int(hashlib.sha256(row.path.encode()).hexdigest()[:8], 16)
        for kind in kinds:
            specs = TELEPHONE if kind == "telephone" else OTHER_CHANNELS
            spec = specs[seed % len(specs)]
            rel = f"aug/{kind}/{stem}.flac"
            jobs.append((os.path.join(root, row.path), os.path.join(root, rel), spec, seed))
            rows.append({**row._asdict(), "path": rel, "role": kind, "channel": spec,
                         "origin": row.path})
    started = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(max_workers=os.cpu_count() or 2) as ex:
        list(ex.map(_channel_copy, jobs, chunksize=16))
    print(f"channel copies: {len(jobs)} files in {time.perf_counter() - started:.0f} s")
    return pd.DataFrame(rows, columns=[*clips.columns])


def _telephone_file(args: tuple[str, str, str, str, bool, int]) -> None:
    import soundfile as sf

    from spoofray import augment, telephone

    src, dst, codec, effect, band_pass, seed = args
    if os.path.exists(dst):
        return
    y, sr = sf.read(src, dtype="float32")
    y = y if y.ndim == 1 else y.mean(axis=1)
    if effect != "none":
        y = augment.apply_channel(y, sr, effect, np.random.default_rng(seed))
    peak = float(np.max(np.abs(y)))
    data, _ = telephone.telephone_file(y * (0.99 / peak) if peak > 0.99 else y, sr, codec,
                                       band_pass=band_pass)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    with open(dst + ".tmp", "wb") as fh:
        fh.write(data)
    os.replace(dst + ".tmp", dst)


def telephone_files(root: str, clips: pd.DataFrame) -> pd.DataFrame:
    """An 8 kHz telephone file of every clip, label kept (role ``telfile``; ``channel``
    names codec, band-pass and effect), drawn from a hash of its path like
    :func:`channel_copies`."""
    from spoofray import telephone

    rows, jobs = [], []
    for row in clips.itertuples(index=False):
        stem = os.path.splitext(row.path)[0]
        seed = int(hashlib.sha256(row.path.encode()).hexdigest()[:8], 16)
        codec = TELFILE_CODECS[seed % len(TELFILE_CODECS)]
        effect = TELFILE_EFFECTS[(seed // 7) % len(TELFILE_EFFECTS)]
        band_pass = (seed // 11) % 3 != 0
        rel = f"aug/telfile/{stem}{telephone.TELEPHONE_FILE_CODECS[codec][0]}"
        jobs.append((os.path.join(root, row.path), os.path.join(root, rel), codec, effect,
                     band_pass, seed))
        rows.append({**row._asdict(), "path": rel, "role": "telfile",
                     "channel": f"{codec}{'' if band_pass else '+fullband'}+{effect}",
                     "origin": row.path, "codec": codec})
    started = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(max_workers=os.cpu_count() or 2) as ex:
        list(ex.map(_telephone_file, jobs, chunksize=16))
    print(f"telephone files: {len(jobs)} files in {time.perf_counter() - started:.0f} s")
    return pd.DataFrame(rows, columns=[*clips.columns, "codec"])


def copy_syntheses(root: str, clips: pd.DataFrame, recipe: Recipe, seed: int) -> pd.DataFrame:
    """Copy-synthesis and TTS spoofs of some bona fide clips, through ``make_spoofs`` (Ray)."""
    from spoofray import augment, sources
    from spoofray.pipeline.make_spoofs import MakeSpoofsConfig, make_spoofs

    name = "-".join((*recipe.copysyn_vocoders, *(f"tts_{e}" for e in recipe.tts_engines)))
    if tuple(recipe.datasets) != pool_mod.CORPORA:
        name += "-from-" + "+".join(recipe.datasets)
    out = os.path.join(root, "aug", f"copysyn-{name}")
    bona = clips[clips["label"] == "bonafide"]
    picked = bona.sample(n=min(recipe.copysyn_sources, len(bona)), random_state=seed)
    manifest = os.path.join(out, "manifest.csv")
    if not os.path.exists(manifest):
        items = [sources.AudioItem(uri=os.path.join(root, r.path), label="bonafide",
                                   speaker=r.speaker, group=r.group)
                 for r in picked.itertuples(index=False)]
        make_spoofs(MakeSpoofsConfig(
            input=root, output=out, resume=os.path.exists(out),
            copysyn=augment.CopysynConfig(vocoders=recipe.copysyn_vocoders,
                                          tts=recipe.tts_engines, include_bonafide=False,
                                          seed=seed)), items=items)
    made = pd.read_csv(manifest, keep_default_na=False)
    # Copies take their source's fold through the group (a group never spans sources).
    by_group = pool_mod.load_pool().drop_duplicates("group").set_index("group")
    made["path"] = os.path.relpath(out, root) + "/" + made["path"]
    made_license = made["license"]  # the TTS engine's, empty for copy-syntheses
    for col in ("corpus", "source", "license", "shippable", "dataset"):
        made[col] = made["group"].map(by_group[col])
    made["license"] = [f"{src}; speech made by {eng}" if eng else src
                       for src, eng in zip(made["license"], made_license)]
    made["family"] = ["tts-made" if a.startswith("tts:") else "copysyn" for a in made["attack"]]
    made["role"] = "copysyn"
    return made


def extract(root: str, rows: pd.DataFrame, work: str, recipe: Recipe,
            kinds: tuple[str, ...]) -> str:
    """The feature dataset of ``rows`` (kinds ``kinds``, the recipe's other settings) in
    ``work``, extracted once."""
    from spoofray import dataset
    from spoofray.config import AudioConfig, FeatureConfig
    from spoofray.pipeline.extract import ExtractConfig, extract_features

    name = f"features-pad{recipe.pad}-trim{recipe.trim_db}-{'-'.join(kinds)}"
    name += "".join(f"-{k}{v}" for k, v in recipe.feature_overrides)
    # Keyed by the rows too: a recipe with more rows (TTS spoofs) must not reuse a dataset
    # that lacks them (training takes the rows a dataset has, silently).
    name += "-" + hashlib.sha1("\n".join(sorted(rows["path"])).encode()).hexdigest()[:10]
    out = os.path.join(work, name)
    if os.path.exists(os.path.join(out, dataset.MANIFEST_NAME)):
        return out
    manifest = pool_mod.write_manifest(rows, os.path.join(root, f"extract-{name}.csv"))
    extract_features(ExtractConfig(input=manifest, output=out, overwrite=True, features=FeatureConfig(
        audio=AudioConfig(pad=recipe.pad, trim_db=recipe.trim_db),
        kinds=kinds, store_float16=True, **dict(recipe.feature_overrides))))
    return out


# --- one fold ------------------------------------------------------------------------------


def _sweep(features: str, rows: pd.DataFrame, work: str, inputs: tuple[str, ...],
           estimators: tuple[tuple[str, object], ...], seed: int, member: str) -> str:
    """``run_sweep`` of the recipe's constant space on ``rows`` → the sweep folder."""
    import yaml

    from spoofray.training.tune import TuneMLConfig, run_sweep
    from quality import subset_dataset

    suffix = "" if member == "ml" else f"-{member}"
    train_ds = os.path.join(work, f"train_features{suffix}")
    shutil.rmtree(train_ds, ignore_errors=True)
    subset_dataset(features, rows["uri"].tolist(), train_ds)
    space = os.path.join(work, f"space{suffix}.yaml")
    members = {f"weight_{m}": 0.0 for m in ("rf", "hgb", "svc", "knn", "dt")}
    members.update(dict(estimators))
    with open(space, "w") as fh:
        yaml.safe_dump({"inputs": list(inputs), **members}, fh)
    sweep = os.path.join(work, f"sweep{suffix}")
    run_sweep(TuneMLConfig(space=space, output=sweep, dataset=train_ds, group_by="group",
                           n_splits=2, num_samples=1, seed=seed, overwrite=True, verbose=0,
                           member_name=member))
    shutil.rmtree(train_ds, ignore_errors=True)
    return sweep


def train_bundle(features: str, train: pd.DataFrame, work: str, recipe: Recipe, seed: int,
                 *, name: str, version: str, threshold_reports: tuple[str, ...] = (),
                 evaluation: dict | None = None, narrow_train: pd.DataFrame | None = None,
                 narrow_features: str | None = None) -> str:
    from spoofray.models.assemble import AssembleConfig, assemble_bundle

    bundle = os.path.join(work, "bundle")
    if os.path.exists(os.path.join(bundle, "bundle.json")):
        return bundle
    sweeps = [_sweep(features, train, work, recipe.inputs, recipe.members, seed, "ml")]
    wide_members: tuple[str, ...] = ("ml",)
    if recipe.fused_inputs:
        sweeps.append(_sweep(features, train, work, recipe.fused_inputs,
                             recipe.fused_members or recipe.members, seed, "ml_fused"))
        wide_members += ("ml_fused",)
    bands: dict[str, tuple[str, ...]] = {}
    if recipe.narrow_inputs:
        sweeps.append(_sweep(narrow_features, narrow_train, work, recipe.narrow_inputs,
                             recipe.narrow_members or recipe.members, seed, "ml_narrow"))
        bands = {"wide": wide_members, "narrow": ("ml_narrow",)}
    assemble_bundle(AssembleConfig(
        members=tuple(sweeps), name=name, version=version, output=bundle, overwrite=True,
        threshold_rule="false_alarm_rate" if threshold_reports else "eer",
        target_false_alarm_rate=recipe.target_false_alarm_rate,
        threshold_reports=threshold_reports, evaluation=evaluation or {}, bands=bands))
    return bundle


def score(bundle: str, rows: pd.DataFrame, root: str, out: str, run_id: str) -> str:
    from spoofray.pipeline.score import ScoreConfig, score_archive

    run = os.path.join(out, f"run_id={run_id}")
    if os.path.exists(os.path.join(run, "_SUCCESS")):
        return run
    shutil.rmtree(out, ignore_errors=True)
    manifest = pool_mod.write_manifest(rows, os.path.join(root, f"score-{run_id}.csv"))
    score_archive(ScoreConfig(input=manifest, bundle=bundle, output=out, run_id=run_id,
                              plots=False))
    return run


# --- evaluation ----------------------------------------------------------------------------


def evaluate(report: str, labels: pd.DataFrame, root: str, out: str, threshold: float,
             tag: str, band: str | None = None) -> dict:
    """``evaluate_report`` of ``report`` restricted to ``labels``' rows (and to the rows
    judged as ``band``), at ``threshold``."""
    from spoofray.reports import EvaluateConfig, evaluate_report

    # Manifests name audio below their own folder: the labels live in the data root.
    name = f"labels-{abs(hash((report, tag))):x}.csv"
    manifest = pool_mod.write_manifest(labels, os.path.join(root, name))
    result = evaluate_report(EvaluateConfig(report=report, output=os.path.join(out, tag),
                                            labels=manifest, threshold=threshold, band=band))
    return {"overall": result["metrics"][0], "counts": result["counts"]}


def evaluate_bands(report: str, labels: pd.DataFrame, root: str, out: str,
                   thresholds: dict, tag: str) -> dict:
    """Counts and rates of ``labels``' rows, each judged at the threshold of the band that
    judged it (``thresholds``: band -> threshold; ``{None: t}`` for a bundle without bands).

    A 16 kHz telephone copy with noise added after the call has energy above 4 kHz again,
    so it is judged wideband; such copies are counted in the band that judged them.
    """
    from spoofray.errors import MetricError

    parts, judged = [], {}
    for band, threshold in thresholds.items():
        try:
            part = _rates(evaluate(report, labels, root, out, threshold, f"{tag}-{band}",
                                   band=band))
        except MetricError:  # no labelled row of this band
            continue
        parts.append(part)
        judged[str(band)] = part["n_bonafide"] + part["n_spoof"]
    return {**_counts(parts), "files_by_band": judged}


def _rates(ev: dict) -> dict:
    m = ev["overall"]
    return {k: m.get(k) for k in ("eer", "auc", "recall", "false_alarm_rate", "n_bonafide",
                                  "n_spoof", "tn", "fp", "fn", "tp")}


def false_alarms_by_corpus(results: dict) -> dict[str, tuple[int, int]]:
    """``{corpus: (flagged, real files)}`` over every fold's held-out real clips.

    A corpus can sit in several folds (LibriSpeech real clips are in three): counts add up.
    """
    counts: dict[str, list[int]] = {}
    for e in results["folds"].values():
        for corpus, r in e.get("bonafide_by_corpus", {}).items():
            c = counts.setdefault(corpus, [0, 0])
            c[0] += r["fp"]
            c[1] += r["n_bonafide"]
    return {corpus: (fp, n) for corpus, (fp, n) in sorted(counts.items())}


def _counts(evs: list[dict]) -> dict:
    """False alarms and misses added up over folds (each at its own held-out threshold)."""
    fp = sum(e["fp"] or 0 for e in evs)
    tn = sum(e["tn"] or 0 for e in evs)
    tp = sum(e["tp"] or 0 for e in evs)
    fn = sum(e["fn"] or 0 for e in evs)
    return {"n_bonafide": fp + tn, "n_spoof": tp + fn, "fp": fp, "tp": tp, "tn": tn, "fn": fn,
            "false_alarm_rate": fp / (fp + tn) if fp + tn else None,
            "recall": tp / (tp + fn) if tp + fn else None}


def headline(results: dict) -> dict:
    """The numbers the model card quotes, as recorded in the shipped bundle.json."""
    folds = results["folds"]
    eers = {f: e["original"]["eer"] for f, e in folds.items() if e["original"]["eer"] is not None}
    fa = {c: fp / n for c, (fp, n) in false_alarms_by_corpus(results).items()}
    out = {"protocol": "leave-one-source-out over devcorpus + trainpool, file level",
           "recipe": results["recipe"]["name"], "seed": results["seed"],
           "pooled_eer": results["pooled"]["eer"], "pooled_auc": results["pooled"]["auc"],
           "threshold": results["shipped_threshold"],
           "target_false_alarm_rate": results["recipe"]["target_false_alarm_rate"],
           "recall_at_threshold": results["pooled"]["recall"],
           "false_alarm_rate_at_threshold": results["pooled"]["false_alarm_rate"],
           "false_alarm_rate_8khz_telephone": results["pooled_telephone_bonafide"][
               "false_alarm_rate"],
           "eer_by_held_out_source": eers, "worst_source_eer": max(eers.values()),
           "false_alarm_rate_by_real_corpus": fa}
    if "narrowband" in results:
        nb = results["narrowband"]
        out["narrowband"] = {
            "threshold": nb["shipped_threshold"], "pooled_eer": nb["pooled"]["eer"],
            "pooled_auc": nb["pooled"]["auc"],
            "recall_at_fold_thresholds": nb["held_out"]["recall"],
            "false_alarm_rate_at_fold_thresholds": nb["held_out"]["false_alarm_rate"],
            "eer_by_codec": {c: v["eer"] for c, v in nb["pooled_by_codec"].items()},
            "false_alarm_rate_by_codec": {c: v["false_alarm_rate"]
                                          for c, v in nb["held_out_by_codec"].items()},
            "false_alarm_rate_16khz_telephone_copies": nb["held_out_telephone_copies"][
                "false_alarm_rate"]}
    return out


def score_lockbox(bundle: str, root: str, out: str) -> dict:
    """Score the lockbox (trainpool2) once with ``bundle`` through ``score_archive``: its
    clips as published and an 8 kHz telephone file of each; ``evaluate_report`` at the
    bundle's own band thresholds. Singing corpora are reported apart as well as pooled."""
    with open(os.path.join(bundle, "bundle.json")) as fh:
        spec = json.load(fh)
    bands = spec.get("bands") or {}
    wide_t = bands["wide"]["threshold"] if bands else spec["threshold"]
    narrow_t = bands["narrow"]["threshold"] if bands else spec["threshold"]
    wide, narrow = ("wide", "narrow") if bands else (None, None)
    box = pool_mod.load_pool(corpora=(pool_mod.LOCKBOX,))
    box["role"], box["channel"], box["origin"] = "original", "none", box["path"]
    telfiles = telephone_files(root, box)
    report = score(bundle, pd.concat([box, telfiles.drop(columns=["codec"])]), root,
                   os.path.join(out, "report"), run_id="lockbox")
    ev_dir = os.path.join(out, "eval")
    singing = box["corpus"].str.endswith("_singing")
    result = {"bundle": bundle, "wide_threshold": wide_t, "narrow_threshold": narrow_t,
              "n_clips": int(len(box)),
              "pooled": _rates(evaluate(report, box, root, ev_dir, wide_t, "all", band=wide)),
              "speech": _rates(evaluate(report, box[~singing], root, ev_dir, wide_t, "speech",
                                        band=wide)),
              "singing": _rates(evaluate(report, box[singing], root, ev_dir, wide_t, "singing",
                                         band=wide)),
              "narrowband": _rates(evaluate(report, telfiles, root, ev_dir, narrow_t,
                                            "telfile", band=narrow)),
              "by_corpus": {}, "false_alarm_rate_by_real_corpus": {}}
    for corpus, g in box.groupby("corpus"):
        if g["label"].nunique() == 2:
            result["by_corpus"][corpus] = _rates(evaluate(report, g, root, ev_dir, wide_t,
                                                          f"corpus-{corpus}", band=wide))
        bona = g[g["label"] == "bonafide"]
        if len(bona):
            r = _rates(evaluate(report, bona, root, ev_dir, wide_t, f"bona-{corpus}", band=wide))
            result["false_alarm_rate_by_real_corpus"][corpus] = (r["fp"], r["n_bonafide"])
    bona_tel = telfiles[telfiles["label"] == "bonafide"]
    r = _rates(evaluate(report, bona_tel, root, ev_dir, narrow_t, "telfile-bona", band=narrow))
    result["false_alarm_rate_8khz"] = (r["fp"], r["n_bonafide"])
    return result


def leave_one_family_out(recipe: Recipe, clips: pd.DataFrame, usable: pd.DataFrame,
                         narrow_usable: pd.DataFrame | None, features: str,
                         narrow_features: str | None, root: str, out: str, seed: int) -> dict:
    """Leave-one-family-out folds: per spoof family F, a bundle trained without F's spoofs
    anywhere and without every clip of the sources that hold them (copies included: they
    carry their source and family); ``score_archive`` on those sources' clips and F's spoofs.

    Per family: the EER of F's spoofs against the real clips held out with them (every
    family's sources have some), and recall at the threshold that the OTHER families'
    folds set (1 % false alarms on their held-out real clips, as the LOSO folds do). No
    pooled number: a source holding two families is tested in both folds.
    """
    from spoofray.models.assemble import threshold_from_reports

    wide = "wide" if recipe.narrow_inputs else None
    spoofs = clips[clips["label"] == "spoof"]
    families = sorted(spoofs["family"].unique())
    sources_of = {fam: sorted(set(spoofs.loc[spoofs["family"] == fam, "source"]))
                  for fam in families}
    reports, tests = {}, {}
    for fam in families:
        sources = sources_of[fam]

        def held(rows: pd.DataFrame) -> pd.Series:
            return rows["source"].isin(sources) | ((rows["label"] == "spoof")
                                                   & (rows["family"] == fam))

        fwork = os.path.join(out, "lofo", fam)
        os.makedirs(fwork, exist_ok=True)
        train = usable[~held(usable)]
        bundle = train_bundle(features, train, fwork, recipe, seed,
                              name=f"lofo-{recipe.name}", version=fam,
                              narrow_train=None if narrow_usable is None else
                              narrow_usable[~held(narrow_usable)],
                              narrow_features=narrow_features)
        tests[fam] = clips[held(clips)]
        reports[fam] = score(bundle, tests[fam], root, os.path.join(fwork, "report"),
                             run_id=f"lofo-{seed}")
        print(f"lofo {fam}: train {len(train)} clips, test {len(tests[fam])}")
    result = {}
    for fam in families:
        threshold, _ = threshold_from_reports(tuple(r for f, r in reports.items() if f != fam),
                                              recipe.target_false_alarm_rate, band=wide)
        test = tests[fam]
        labels = test[(test["label"] == "bonafide") | (test["family"] == fam)]
        ev = _rates(evaluate(reports[fam], labels, root, os.path.join(out, "lofo", fam, "eval"),
                             threshold, "family", band=wide))
        result[fam] = {**ev, "threshold": threshold, "sources": sources_of[fam]}
    return result


def run(recipe: Recipe, work: str, seed: int, ship: bool,
        lockbox: bool = False, lofo: bool = False) -> dict:
    from spoofray.models.assemble import threshold_from_reports
    from spoofray.pipeline.runtime import init_ray
    from spoofray.reports import read_report

    banded = bool(recipe.narrow_inputs)
    wide, narrow = ("wide", "narrow") if banded else (None, None)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    root = pool_mod.link_root(os.path.join(work, "data"))
    clips = pool_mod.load_pool()
    clips["role"], clips["channel"], clips["origin"] = "original", "none", clips["path"]
    clips["fold"] = clips["source"].map(fold_of)
    init_ray()
    allowed = clips[clips["dataset"].isin(recipe.datasets)]
    if recipe.shippable_only:
        allowed = allowed[allowed["shippable"]]
    # Large sources would drown the rest (590 Tacotron 2 clips of one voice): a cap per
    # (source, label), drawn once.
    shuffled = allowed.sample(frac=1.0, random_state=seed)
    capped = shuffled[shuffled.groupby(["source", "label"]).cumcount()
                      < recipe.cap_per_source_label]
    parts = [capped]
    # Every bona fide clip gets a telephone copy: held out, they measure 8 kHz false alarms.
    tel = channel_copies(root, clips[clips["label"] == "bonafide"], ("telephone",))
    tel_spoof = channel_copies(root, capped[capped["label"] == "spoof"], ("telephone",))
    if recipe.channel_copies:
        tel_parts = [tel_spoof, tel[tel["origin"].isin(capped["path"])]]
        if not recipe.wide_telephone:
            tel_parts = [tel_spoof.iloc[:0], tel.iloc[:0]]
        parts += [tel_parts[0], channel_copies(root, capped, ("channel",)), tel_parts[1]]
    timings["channel_copies_s"] = time.perf_counter() - t0
    telfiles = pd.DataFrame(columns=[*clips.columns, "codec"])
    narrow_usable = None
    if banded:
        t = time.perf_counter()
        # Every clip, both classes: held out they measure narrowband EER and false alarms.
        telfiles = telephone_files(root, clips)
        telfiles["fold"] = telfiles["source"].map(fold_of)
        narrow_usable = pd.concat([telfiles[telfiles["origin"].isin(capped["path"])],
                                   tel[tel["origin"].isin(capped["path"])], tel_spoof],
                                  ignore_index=True)
        narrow_usable["fold"] = narrow_usable["source"].map(fold_of)
        timings["telephone_files_s"] = time.perf_counter() - t
    if recipe.copysyn_vocoders or recipe.tts_engines:
        t = time.perf_counter()
        parts.append(copy_syntheses(root, capped, recipe, seed=0))
        timings["copysyn_s"] = time.perf_counter() - t
    usable = pd.concat(parts, ignore_index=True)
    usable["fold"] = usable["source"].map(fold_of)
    tel["fold"] = tel["source"].map(fold_of)
    t = time.perf_counter()
    features = extract(root, usable.drop_duplicates("path"), work, recipe,
                       kinds_of(recipe.inputs + recipe.fused_inputs))
    narrow_features = None
    if banded:
        # The narrowband member's rows, with its kinds only (the same feature settings).
        narrow_features = extract(root, narrow_usable.drop(columns=["codec"]), work, recipe,
                                  kinds_of(recipe.narrow_inputs))
    timings["extract_s"] = time.perf_counter() - t
    for frame in (usable, tel, telfiles, *([] if narrow_usable is None else [narrow_usable])):
        frame["uri"] = [os.path.join(root, p) for p in frame["path"]]

    out = os.path.join(work, f"{recipe.name}-seed{seed}")
    os.makedirs(out, exist_ok=True)
    folds = sorted(clips["fold"].unique())
    reports = {}
    t = time.perf_counter()
    for fold in folds:
        fwork = os.path.join(out, "folds", fold.replace("/", "__"))
        os.makedirs(fwork, exist_ok=True)
        train = usable[usable["fold"] != fold]
        bundle = train_bundle(features, train, fwork, recipe, seed, name=f"loso-{recipe.name}",
                              version=fold.replace("/", "__"),
                              narrow_train=None if narrow_usable is None else
                              narrow_usable[narrow_usable["fold"] != fold],
                              narrow_features=narrow_features)
        test = pd.concat([clips[clips["fold"] == fold],
                          tel[(tel["fold"] == fold) & (tel["role"] == "telephone")
                              & (tel["label"] == "bonafide")],
                          telfiles[telfiles["fold"] == fold].drop(columns=["codec"])])
        reports[fold] = score(bundle, test, root, os.path.join(fwork, "report"),
                              run_id=f"fold-{seed}")
        print(f"fold {fold}: train {len(train)} clips, test {len(test)}")
    timings["folds_s"] = time.perf_counter() - t

    results = {"recipe": dataclasses.asdict(recipe), "seed": seed, "folds": {}}
    pooled_frames = []
    for fold in folds:
        others = tuple(reports[f] for f in folds if f != fold)
        threshold, _ = threshold_from_reports(others, recipe.target_false_alarm_rate, band=wide)
        held = clips[clips["fold"] == fold]
        bona_tel = tel[(tel["fold"] == fold) & (tel["role"] == "telephone")
                       & (tel["label"] == "bonafide")]
        ev_dir = os.path.join(out, "folds", fold.replace("/", "__"), "eval")
        entry = {"threshold": threshold, "n_clips": int(len(held))}
        entry["original"] = _rates(evaluate(reports[fold], held, root, ev_dir, threshold,
                                            "original", band=wide))
        narrow_t = threshold
        if banded:
            narrow_t, _ = threshold_from_reports(others, recipe.target_false_alarm_rate,
                                                 band=narrow)
            entry["narrow_threshold"] = narrow_t
            fold_tf = telfiles[telfiles["fold"] == fold]
            entry["telfile"] = _rates(evaluate(reports[fold], fold_tf, root, ev_dir, narrow_t,
                                               "telfile", band=narrow))
            for codec, g in fold_tf.groupby("codec"):
                entry.setdefault("telfile_by_codec", {})[codec] = _rates(evaluate(
                    reports[fold], g, root, ev_dir, narrow_t, f"telfile-{codec}", band=narrow))
        if len(bona_tel):
            entry["telephone_bonafide"] = evaluate_bands(
                reports[fold], bona_tel, root, ev_dir,
                {wide: threshold, narrow: narrow_t} if banded else {None: threshold},
                "telephone")
        for corpus, g in held[held["label"] == "bonafide"].groupby("corpus"):
            entry.setdefault("bonafide_by_corpus", {})[corpus] = _rates(
                evaluate(reports[fold], g, root, ev_dir, threshold, f"bona-{corpus}", band=wide))
        results["folds"][fold] = entry
        rep = read_report(reports[fold])
        rep["fold_threshold"] = threshold
        pooled_frames.append(rep)
    pooled_dir = os.path.join(out, "pooled")
    os.makedirs(pooled_dir, exist_ok=True)
    pooled = pd.concat(pooled_frames, ignore_index=True)
    pooled_report = os.path.join(pooled_dir, "report.parquet")
    pooled.to_parquet(pooled_report)
    shipped_threshold, details = threshold_from_reports(tuple(reports.values()),
                                                        recipe.target_false_alarm_rate, band=wide)
    results["shipped_threshold"] = shipped_threshold
    results["pooled"] = _rates(evaluate(pooled_report, clips, root, pooled_dir, shipped_threshold,
                                        "original", band=wide))
    shipped_narrow = shipped_threshold
    if banded:
        shipped_narrow, _ = threshold_from_reports(tuple(reports.values()),
                                                   recipe.target_false_alarm_rate, band=narrow)
        nb = {"shipped_threshold": shipped_narrow,
              "pooled": _rates(evaluate(pooled_report, telfiles, root, pooled_dir,
                                        shipped_narrow, "telfile", band=narrow)),
              "pooled_by_codec": {
                  c: _rates(evaluate(pooled_report, g, root, pooled_dir, shipped_narrow,
                                     f"telfile-{c}", band=narrow))
                  for c, g in telfiles.groupby("codec")},
              "held_out": _counts([e["telfile"] for e in results["folds"].values()]),
              "held_out_by_codec": {
                  c: _counts([e["telfile_by_codec"][c] for e in results["folds"].values()
                              if c in e.get("telfile_by_codec", {})])
                  for c in sorted(telfiles["codec"].unique())},
              "held_out_telephone_copies": _counts(
                  [e["telephone_bonafide"] for e in results["folds"].values()
                   if "telephone_bonafide" in e])}
        results["narrowband"] = nb
    results["pooled_telephone_bonafide"] = evaluate_bands(
        pooled_report, tel[(tel["role"] == "telephone") & (tel["label"] == "bonafide")], root,
        pooled_dir, {wide: shipped_threshold, narrow: shipped_narrow} if banded
        else {None: shipped_threshold}, "telephone")
    by_family = {}
    for fam, g in clips[clips["label"] == "spoof"].groupby("family"):
        ev = evaluate(pooled_report, pd.concat([g, clips[clips["label"] == "bonafide"]]), root,
                      pooled_dir, shipped_threshold, f"family-{fam}", band=wide)
        by_family[fam] = _rates(ev)
    results["pooled_by_family"] = by_family
    if lofo:
        t = time.perf_counter()
        results["lofo"] = leave_one_family_out(recipe, clips, usable, narrow_usable, features,
                                               narrow_features, root, out, seed)
        timings["lofo_s"] = time.perf_counter() - t
    if lockbox:
        # Trained on every usable row, thresholds from the fold reports: as --ship trains
        # the shipped bundle, so the lockbox measures what would ship.
        t = time.perf_counter()
        lwork = os.path.join(out, "lockbox")
        bundle = train_bundle(features, usable, lwork, recipe, seed,
                              name=f"lockbox-{recipe.name}", version="all",
                              threshold_reports=tuple(reports.values()),
                              narrow_train=narrow_usable, narrow_features=narrow_features)
        results["lockbox"] = score_lockbox(bundle, root, lwork)
        timings["lockbox_s"] = time.perf_counter() - t
    if ship:
        from spoofray.models import default

        t = time.perf_counter()
        shipped = train_bundle(features, usable, os.path.join(out, "ship"), recipe, seed,
                               name=default.NAME, version=SHIPPED_VERSION,
                               threshold_reports=tuple(reports.values()),
                               evaluation=headline(results), narrow_train=narrow_usable,
                               narrow_features=narrow_features)
        shutil.rmtree(default.FOLDER, ignore_errors=True)
        shutil.copytree(shipped, default.FOLDER)
        results["shipped_bundle"] = default.FOLDER
        timings["ship_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    results["timings"] = timings
    with open(os.path.join(out, "results.json"), "w") as fh:
        json.dump(results, fh, indent=2, default=str)
    print(json.dumps({"pooled": results["pooled"], "lofo": results.get("lofo"),
                      "telephone": results["pooled_telephone_bonafide"],
                      "narrowband": results.get("narrowband"), "lockbox": results.get("lockbox"),
                      "timings": timings},
                     indent=2, default=str))
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True)
    p.add_argument("--recipe", default=SHIPPED, choices=sorted(RECIPES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ship", action="store_true", help="also train the shipped bundle")
    p.add_argument("--lofo", action="store_true",
                   help="also run leave-one-family-out folds (a bundle per spoof family)")
    p.add_argument("--lockbox", action="store_true",
                   help="also train on every usable row and score trainpool2 once (do this "
                        "only for the recipe the folds chose)")
    args = p.parse_args(argv)
    run(RECIPES[args.recipe], os.path.abspath(args.work), args.seed, args.ship, args.lockbox,
        args.lofo)
    return 0


if __name__ == "__main__":
    sys.exit(main())
