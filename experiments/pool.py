"""The labelled pool the generalisation experiments use: devcorpus + trainpool, one table.

Every clip gets the units that leave-one-source-out holds out together:

* ``source`` — the repository (demo page) a clip came from. Bona fide clips of a paired
  demo page share it with the spoofs made from them, so a held-out source takes the
  voices, words and recording channel of its spoofs with it.
* ``family`` — the generator family (``voc``, ``tts``, ``vc``, ``codec``, ``s2st``,
  ``anon``, and for devcorpus ``tts-gl``/``tts-wavenet``/``voc-gan``), ``-`` for bona fide.
* ``shippable`` — False for rows whose licence rules out a shipped model: research-only
  (EMO-DB, the Urdu and YouTube talk-show clips) and non-commercial (DAPS, CC BY-NC).

Audio never moves: :func:`link_root` makes a folder with symbolic links to the two corpora
so that one manifest with relative paths covers both (manifests refuse paths that leave
their folder).
"""

from __future__ import annotations

import os

import pandas as pd

SHARED = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
CORPORA = ("devcorpus", "trainpool")
#: Kept out of every recipe choice: scored once by the chosen recipe (issue #27).
LOCKBOX = "trainpool2"


def family_of(attack: str) -> str:
    """Generator family of an attack name of either corpus (``-`` for bona fide)."""
    if attack in ("-", "") or pd.isna(attack):
        return "-"
    if attack.startswith("espnet:"):
        return "tts-wavenet" if "WNV" in attack else "tts-gl"
    if attack.startswith("pwg:"):
        return "voc-gan"
    return attack.split(":", 1)[0]


def _not_shippable(row: pd.Series) -> bool:
    text = str(row["license"]).lower()
    return "research" in text or row["corpus"] == "daps"


def load_pool(shared: str = SHARED, corpora: tuple[str, ...] = CORPORA) -> pd.DataFrame:
    """One row per clip of ``corpora`` (default: the two training corpora; ``(LOCKBOX,)``
    for the lockbox).

    Columns: ``path`` (relative to :func:`link_root`'s folder), ``label``, ``attack``,
    ``speaker``, ``group``, ``corpus``, ``source``, ``family``, ``license``, ``shippable``,
    ``duration_s``, ``dataset``.
    """
    frames = []
    for name in corpora:
        m = pd.read_csv(os.path.join(shared, name, "manifest.csv"), keep_default_na=False)
        m["dataset"] = name
        m["source"] = m["source"].str.split("@").str[0].str.removeprefix("github:")
        m["path"] = name + "/" + m["path"]
        extra_csv = os.path.join(shared, name, "extra.csv")
        if os.path.exists(extra_csv):
            extra = pd.read_csv(extra_csv, keep_default_na=False)
            extra["path"] = name + "/" + extra["path"]
            m = m.merge(extra[["path", "pair_id"]], on="path", how="left")
        else:
            m["pair_id"] = ""
        frames.append(m)
    pool = pd.concat(frames, ignore_index=True)
    pool["family"] = pool["attack"].map(family_of)
    pool["shippable"] = ~pool.apply(_not_shippable, axis=1)
    # Group-aware folds keep a bona fide utterance with every copy made of it.
    pair = pool["pair_id"].fillna("").astype(str)
    pool["group"] = pool["source"] + "/" + pair.where(pair != "", pool["utt_id"])
    return pool[["path", "label", "attack", "speaker", "group", "corpus", "source", "family",
                 "license", "shippable", "duration_s", "dataset"]]


def link_root(folder: str, shared: str = SHARED) -> str:
    """``folder`` with one symbolic link per corpus; returns the folder."""
    os.makedirs(folder, exist_ok=True)
    for name in (*CORPORA, LOCKBOX):
        link = os.path.join(folder, name)
        if not os.path.islink(link):
            os.symlink(os.path.join(shared, name), link)
    return folder


def write_manifest(rows: pd.DataFrame, path: str) -> str:
    """A manifest ``extract_features`` / ``score_archive`` read (paths relative to it)."""
    rows[["path", "label", "attack", "speaker", "group"]].to_csv(path, index=False)
    return path
