"""Generalisation protocols for development quality numbers (``docs/quality.md``).

A protocol splits a labelled feature dataset into train and test *files* so that what the
product will meet in the wild — unseen vocoders, unseen speakers, unseen corpora — is what
the test side holds. A random split of windows from the same recordings is never used.

Protocols take a file table with columns ``uri``, ``label``, ``attack``, ``speaker`` and
``corpus`` (the devcorpus manifest has them; ``corpus`` may be any coarse source column).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
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


def subset_dataset(root: str, uris: Sequence[str], out: str) -> int:
    """Write the windows of ``uris`` from dataset ``root`` as a new dataset at ``out``.

    Returns the number of windows written. The manifest is copied with updated counts, so
    the subset is a complete dataset for the training jobs.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    table = dataset.read_table(root)
    keep = table.filter(pc.is_in(table.column("uri"), value_set=pa.array(list(uris))))
    dataset.write_part(out, dataset.FEATURES_DIR, dataset.part_key(list(uris)), keep)
    manifest = dataset.read_manifest(root)
    manifest["input"] = f"subset of {root} ({len(set(uris))} files)"
    manifest["counts"] = {"files_listed": len(set(uris)), "windows": keep.num_rows}
    import json

    storage.write_bytes_atomic(storage.join(out, dataset.MANIFEST_NAME),
                               json.dumps(manifest, indent=2).encode())
    return keep.num_rows


def file_scores(windows: pd.DataFrame, window_scores: np.ndarray) -> pd.DataFrame:
    """Mean window score per file (the report's ``spoof_score``), with the file's label."""
    frame = windows[["uri", "label", "attack"]].assign(score=window_scores)
    return frame.groupby("uri", sort=True).agg(label=("label", "first"),
                                               attack=("attack", "first"),
                                               score=("score", "mean")).reset_index()


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
