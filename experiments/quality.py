"""Generalisation protocols for development quality numbers (``docs/quality.md``), used by
the experiment drivers next to this file (not installed with spoofray).

A protocol splits a labelled feature dataset into train and test *files* so that what the
product will meet in the wild — unseen vocoders, unseen speakers, unseen corpora — is what
the test side holds. A random split of windows from the same recordings is never used.

Protocols take a file table with columns ``uri``, ``label``, ``attack``, ``speaker`` and
``corpus`` (the devcorpus manifest has them; ``corpus`` may be any coarse source column).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from spoofray import dataset, metrics, storage

#: Vocoder families by attack name: the unit held out by attack-disjoint protocols.
VOCODER_FAMILIES: dict[str, Callable[[str], bool]] = {
    "griffin-lim": lambda a: "GL" in a,
    "wavenet": lambda a: "WNV" in a,
    "gan (pwg/melgan/hifigan/wavegan)": lambda a: a.startswith("pwg:"),
}


def vocoder_family(attack: str | None) -> str | None:
    if attack is None or attack == "-" or (isinstance(attack, float) and np.isnan(attack)):
        return None
    for family, test in VOCODER_FAMILIES.items():
        if test(attack):
            return family
    return "other"


@dataclasses.dataclass(frozen=True)
class Split:
    """Train and test file URIs of one protocol, and what it holds out."""

    name: str
    description: str
    train: tuple[str, ...]
    test: tuple[str, ...]


def _speaker_holdout(files: pd.DataFrame, fraction: float, seed: int) -> set[str]:
    speakers = sorted(files["speaker"].dropna().unique())
    rng = np.random.default_rng(seed)
    n = max(1, int(round(fraction * len(speakers))))
    return set(rng.choice(speakers, size=n, replace=False))


def unseen_vocoders(files: pd.DataFrame, *, seed: int = 0, bonafide_test_fraction: float = 0.3
                    ) -> Split:
    """Train on Griffin-Lim spoofs only; test on neural vocoders (WaveNet, GAN family).

    Bona fide: LibriSpeech speakers split speaker-disjointly; every bona fide clip of the
    other corpora (LJSpeech, LibriTTS, JSUT, CSMSC) goes to test, because those voices are
    the trap — a model that learned "LJSpeech voice = spoof" flags them.
    """
    family = files["attack"].map(vocoder_family)
    is_spoof = files["label"] == "spoof"
    libri = files["corpus"] == "librispeech"
    held_speakers = _speaker_holdout(files[~is_spoof & libri], bonafide_test_fraction, seed)
    test_bona = ~is_spoof & (~libri | files["speaker"].isin(held_speakers))
    test_spoof = is_spoof & (family != "griffin-lim")
    test = test_bona | test_spoof
    return Split("unseen-vocoders",
                 "train: Griffin-Lim spoofs + 70% of LibriSpeech speakers; test: WaveNet and "
                 "GAN-vocoder spoofs + held-out LibriSpeech speakers + all non-LibriSpeech bona fide",
                 tuple(files.loc[~test, "uri"]), tuple(files.loc[test, "uri"]))


def unseen_corpora(files: pd.DataFrame, *, test_corpora: Sequence[str] = ("libritts", "jsut", "csmsc")
                   ) -> Split:
    """Train on LJSpeech/LibriSpeech; test on corpora never seen (other voices, languages)."""
    test = files["corpus"].isin(test_corpora)
    return Split("unseen-corpora",
                 f"train: LJSpeech + LibriSpeech; test: {', '.join(test_corpora)} (both classes)",
                 tuple(files.loc[~test, "uri"]), tuple(files.loc[test, "uri"]))


PROTOCOLS = {"unseen-vocoders": unseen_vocoders, "unseen-corpora": unseen_corpora}


def devcorpus_files(root: str) -> pd.DataFrame:
    """The devcorpus manifest as a file table: absolute ``uri``, ``attack`` None for bona fide."""
    import os

    files = pd.read_csv(os.path.join(root, "manifest.csv"))
    files["uri"] = [os.path.join(root, p) for p in files["path"]]
    files["attack"] = files["attack"].where(files["attack"] != "-", None)
    return files


def subset_dataset(root: str, uris: Sequence[str], out: str, *, extra: Sequence[str] = (),
                   rows_per_part: int | None = None) -> int:
    """Write the windows of ``uris`` from dataset ``root`` as a new dataset at ``out``.

    ``extra`` names further datasets (same feature config) whose windows are all added,
    e.g. a copy-synthesis corpus; ``rows_per_part`` cuts the output into several Parquet
    parts (Ray Data streams them block by block). Returns the number of windows written.
    The manifest is copied with updated counts, so the subset is a complete dataset for
    the training jobs.
    """
    import json

    import pyarrow as pa
    import pyarrow.compute as pc

    table = dataset.read_table(root)
    keep = table.filter(pc.is_in(table.column("uri"), value_set=pa.array(list(uris))))
    want = dataset.feature_config_of(root).config_hash()
    for other in extra:
        if dataset.feature_config_of(other).config_hash() != want:
            raise ValueError(f"dataset {other} was made with another feature config than {root}")
        keep = pa.concat_tables([keep, dataset.read_table(other).select(keep.column_names)
                                 .cast(keep.schema)])
    # Rows in (uri, window) order: the trained model must not depend on how extraction
    # happened to cut the files into parts (the shipped bundle is rebuilt deterministically).
    keep = keep.sort_by([("uri", "ascending"), ("window_index", "ascending")])
    step = rows_per_part or max(1, keep.num_rows)
    for start in range(0, max(1, keep.num_rows), step):
        part = keep.slice(start, step)
        dataset.write_part(out, dataset.FEATURES_DIR,
                           dataset.part_key([*uris, *extra, str(start)]), part)
    manifest = dataset.read_manifest(root)
    n_files = len(set(keep.column("uri").to_pylist()))
    manifest["input"] = f"subset of {root} ({len(set(uris))} files)" + (
        f" + all of {', '.join(extra)}" if extra else "")
    manifest["counts"] = {"files_listed": n_files, "windows": keep.num_rows}
    storage.write_bytes_atomic(storage.join(out, dataset.MANIFEST_NAME),
                               json.dumps(manifest, indent=2).encode())
    return keep.num_rows


def dev_groups(files: pd.DataFrame, train_uris: Sequence[str], *, n_attacks: int = 3,
               speaker_fraction: float = 0.25, max_attack_share: float = 0.2, seed: int = 0
               ) -> tuple[list[str], list[str]]:
    """Attacks and bona fide speakers of the TRAIN side to hold out as the deep members' dev.

    Dev is where early stopping and the shipped threshold (its EER point) come from, so
    it is attack- and speaker-disjoint from what the members fit. Attacks holding more
    than ``max_attack_share`` of the training spoofs are never taken (on the devcorpus,
    one Griffin-Lim system has 495 of 540 files: taking it would leave almost nothing to
    train on). Returns ``(attacks, speakers)``, sorted; pass both as ``dev_groups``.
    """
    train = files[files["uri"].isin(set(train_uris))]
    spoof = train[train["label"] == "spoof"]
    counts = spoof["attack"].value_counts()
    small = sorted(counts[counts <= max_attack_share * len(spoof)].index)
    rng = np.random.default_rng(seed)
    attacks = sorted(rng.choice(small, size=min(n_attacks, len(small)), replace=False).tolist())
    speakers = sorted(train.loc[train["label"] == "bonafide", "speaker"].dropna().unique())
    n = max(1, int(round(speaker_fraction * len(speakers))))
    return attacks, sorted(rng.choice(speakers, size=n, replace=False).tolist())


def file_threshold_at_eer(windows: pd.DataFrame, scores: np.ndarray) -> tuple[float, float]:
    """``(threshold, eer)`` at the EER point of FILE scores (mean window score per file),
    as the model bundle chooses its threshold on dev data."""
    per_file = file_scores(windows, scores)
    eer, threshold = metrics.compute_eer((per_file["label"] == "spoof").to_numpy(int),
                                         per_file["score"].to_numpy())
    return float(threshold), float(eer)


def file_scores(windows: pd.DataFrame, window_scores: np.ndarray) -> pd.DataFrame:
    """Mean window score per file (the report's ``spoof_score``), with the file's label."""
    from spoofray import scoring

    codes, uris = pd.factorize(windows["uri"], sort=True)
    first = windows.groupby("uri", sort=True)[["label", "attack"]].first()
    return pd.DataFrame({"uri": uris, "label": first["label"].to_numpy(),
                         "attack": first["attack"].to_numpy(),
                         "score": scoring.file_scores(np.asarray(window_scores), codes)})


def evaluate_split(scored: pd.DataFrame, files: pd.DataFrame, threshold: float) -> dict[str, Any]:
    """Pooled EER/AUC, per-attack EER, per-family EER and the trap false-alarm rates.

    ``scored`` is :func:`file_scores` output for the test files; ``threshold`` the model's own
    decision threshold (chosen on training data, never on test).
    """
    joined = scored.merge(files[["uri", "corpus"]], on="uri", how="left")
    labels = (joined["label"] == "spoof").to_numpy(int)
    result = metrics.evaluate(labels, joined["score"].to_numpy(), threshold=threshold,
                              attacks=joined["attack"].fillna("-").to_numpy())
    family = joined["attack"].map(vocoder_family)
    result["per_family_eer"] = {}
    for fam in sorted(family.dropna().unique()):
        sel = (labels == 0) | (family == fam).to_numpy()
        result["per_family_eer"][fam] = metrics.compute_eer(labels[sel],
                                                            joined["score"].to_numpy()[sel])[0]
    result["bonafide_false_alarm_by_corpus"] = {}
    for corpus, grp in joined[labels == 0].groupby("corpus"):
        result["bonafide_false_alarm_by_corpus"][corpus] = {
            "n": int(len(grp)), "false_alarms": int((grp["score"] >= threshold).sum())}
    return result


# --- deep members ------------------------------------------------------------------------

#: Metrics kept per scorer in :func:`score_deep_run` results.
_KEEP = ("eer", "auc", "threshold", "recall", "false_alarm_rate", "n_bonafide", "n_spoof",
         "per_family_eer", "bonafide_false_alarm_by_corpus")


def score_deep_run(run_dir: str, members: Sequence[str], features_root: str, split: Split,
                   files: pd.DataFrame, *, batch_size: int = 256) -> dict[str, dict[str, Any]]:
    """Test metrics of every member of a :func:`spoofray.training.train.train_members` run
    and of two fusions: ``mean`` (equal weights) and ``logistic`` (fitted on dev windows).

    Every scorer's threshold is the EER point of its FILE-level dev scores (what the bundle
    ships); nothing is chosen on test. Returns ``{scorer: metrics}`` with :data:`_KEEP` keys
    plus ``dev_eer_file``.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from spoofray.models import dl
    from spoofray.models.fusion import fit_logistic_fusion, mean_fusion

    dev = pd.read_parquet(storage.join(run_dir, "dev_scores.parquet"))
    table = dataset.read_table(features_root)
    table = table.filter(pc.is_in(table.column("uri"), value_set=pa.array(list(split.test))))
    windows = table.select(["uri", "window_index", "label", "attack"]).to_pandas()
    inputs: dict[str, np.ndarray] = {}
    test: dict[str, np.ndarray] = {}
    for name in members:
        path = storage.join(run_dir, "members", f"{name}.keras")
        kind = dl.read_sidecar(path)["input"]
        if kind not in inputs:
            inputs[kind] = dataset.tensor_column(table, kind)
        model = dl.load_member(path)
        test[name] = model.predict(inputs[kind], batch_size=batch_size, verbose=0)[:, 0]
    dev_labels = (dev["label"] == "spoof").to_numpy(int)
    dev_s = {n: dev[n].to_numpy(np.float64) for n in members}
    fusions = {"mean": mean_fusion(members), "logistic": fit_logistic_fusion(dev_s, dev_labels)}
    for fname, fusion in fusions.items():
        dev_s[f"fused_{fname}"] = fusion.apply({n: dev_s[n] for n in members})
        test[f"fused_{fname}"] = fusion.apply({n: test[n] for n in members})
    out: dict[str, dict[str, Any]] = {}
    for name, scores in test.items():
        threshold, dev_eer = file_threshold_at_eer(dev, dev_s[name])
        res = evaluate_split(file_scores(windows, scores), files, threshold)
        out[name] = {k: res[k] for k in _KEEP} | {"dev_eer_file": dev_eer}
        if name == "fused_logistic":
            out[name]["fusion"] = fusions["logistic"].to_dict()
    return out


def deep_markdown(runs: Sequence[Mapping[str, Any]]) -> str:
    """One Markdown table row per (condition, seed, scorer) of :func:`score_deep_run`."""
    head = ("| condition | seed | scorer | test EER | AUC | EER WaveNet | EER GAN | dev EER | "
            "threshold | recall | FA all bona fide | FA LJSpeech |\n|" + "---|" * 12 + "\n")
    rows = []
    for run in runs:
        for name, m in run["test"].items():
            fam = m["per_family_eer"]
            fa = m["bonafide_false_alarm_by_corpus"]
            lj = fa.get("ljspeech", {"false_alarms": 0, "n": 0})
            n_fa = sum(v["false_alarms"] for v in fa.values())
            rows.append(
                f"| {run['condition']} | {run['seed']} | {name} | {100 * m['eer']:.1f}% | "
                f"{m['auc']:.3f} | {100 * fam.get('wavenet', float('nan')):.1f}% | "
                f"{100 * fam.get('gan (pwg/melgan/hifigan/wavegan)', float('nan')):.1f}% | "
                f"{100 * m['dev_eer_file']:.1f}% | {m['threshold']:.3f} | {100 * m['recall']:.0f}% | "
                f"{n_fa} / {m['n_bonafide']} | {lj['false_alarms']} / {lj['n']} |")
    return head + "\n".join(rows) + "\n"
