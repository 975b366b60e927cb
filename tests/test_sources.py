"""Listing and labels on real files: local folders, moto's S3 over HTTP, the devcorpus."""

from __future__ import annotations

import csv
import dataclasses
import logging
import os
import threading
from pathlib import Path

import pandas as pd
import pytest

from spoofray.errors import LabelError, SourceError
from spoofray.sources import (
    AUDIO_EXTENSIONS,
    AudioItem,
    list_audio,
    normalize_label,
    read_asvspoof_protocol,
    read_manifest,
    resolve_inputs,
)
from spoofray.storage import filesystem

# Relative path -> (label, attack) expected from the folder layout. Contents differ in
# length so that size_bytes is checked per file.
LABELLED_TREE = {
    "real/a.wav": ("bonafide", None),
    "fake/griffinlim/b.FLAC": ("spoof", "griffinlim"),
    "fake/c.wav": ("spoof", None),
    "corpus_x/spoof/melgan/deeper/d.ogg": ("spoof", "melgan"),
    "corpus_x/Bona-Fide/e.mp3": ("bonafide", None),
    "spoof/tts1/bonafide/f.wav": ("spoof", "tts1"),  # the first label folder wins
    "unlabelled/g.opus": (None, None),
    "real.m4a": (None, None),  # a file's own name is not a label folder
}
IGNORED_FILES = ("notes.txt", "real/readme.md", ".hidden.wav", ".cache/x.wav", "fake/.y.wav")


def _write(root: Path, rel: str, size: int) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x01" * size)
    return path


def _make_tree(root: Path) -> dict[str, int]:
    sizes = {}
    for i, rel in enumerate([*LABELLED_TREE, *IGNORED_FILES]):
        sizes[rel] = 100 + i
        _write(root, rel, sizes[rel])
    return sizes


def _expected_items(root_uri: str, sizes: dict[str, int]) -> list[AudioItem]:
    return sorted(
        (
            AudioItem(uri=f"{root_uri}/{rel}", label=label, attack=attack, size_bytes=sizes[rel])
            for rel, (label, attack) in LABELLED_TREE.items()
        ),
        key=lambda item: item.uri,
    )


def _upload(local_root: Path, s3_uri: str) -> None:
    fs, base = filesystem(s3_uri)
    for path in local_root.rglob("*"):
        if path.is_file():
            fs.pipe(f"{base}/{path.relative_to(local_root).as_posix()}", path.read_bytes())


# --- folders and prefixes ----------------------------------------------------------------


def test_folder_listing_labels_attacks_sizes_and_skips(tmp_path, caplog):
    sizes = _make_tree(tmp_path)
    with caplog.at_level(logging.INFO, logger="spoofray.sources"):
        items = list_audio(str(tmp_path))
    assert items == _expected_items(str(tmp_path), sizes)
    # notes.txt and readme.md are counted; hidden files are not reported at all.
    assert "skipped 2 non-audio file(s)" in caplog.text
    assert resolve_inputs(tmp_path) == items  # path-like input, same dispatch


def test_s3_prefix_listing_matches_local(tmp_path, s3_bucket):
    sizes = _make_tree(tmp_path)
    _upload(tmp_path, f"{s3_bucket}/data")
    fs, _ = filesystem(s3_bucket)
    fs.pipe(f"{s3_bucket[5:]}/data2/not_below_prefix.wav", b"x")  # a sibling prefix

    remote = resolve_inputs(f"{s3_bucket}/data/")
    local = list_audio(str(tmp_path))
    assert remote == _expected_items(f"{s3_bucket}/data", sizes)
    assert [dataclasses.replace(i, uri=i.uri.replace(f"{s3_bucket}/data", str(tmp_path)))
            for i in remote] == local

    with pytest.raises(SourceError, match=f"no such file or folder: {s3_bucket}/missing"):
        resolve_inputs(f"{s3_bucket}/missing")


def test_symlink_loop_finishes_and_lists_each_file_once(tmp_path):
    _write(tmp_path, "a/x.wav", 10)
    os.symlink(tmp_path, tmp_path / "a" / "loop")  # a/loop -> root: a cycle
    os.symlink(tmp_path / "a", tmp_path / "b")  # a second way into a/
    os.symlink(tmp_path / "nowhere.wav", tmp_path / "dangling.wav")

    result: list = []
    worker = threading.Thread(target=lambda: result.append(list_audio(str(tmp_path))),
                              daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive(), "list_audio did not finish on a symlink loop"
    assert result[0] == [
        AudioItem(uri=str(tmp_path / "a" / "x.wav"), size_bytes=10),
        AudioItem(uri=str(tmp_path / "dangling.wav"), size_bytes=None),
    ]


def test_single_audio_file_is_one_item(tmp_path):
    path = _write(tmp_path, "clip.WAV", 321)
    assert resolve_inputs(str(path)) == [AudioItem(uri=str(path), size_bytes=321)]


def test_audio_item_to_dict():
    item = AudioItem(uri="s3://b/k.wav", label="spoof", attack="A07", speaker="LA_0001",
                     group="g", size_bytes=5)
    assert item.to_dict() == {"uri": "s3://b/k.wav", "label": "spoof", "attack": "A07",
                              "speaker": "LA_0001", "group": "g", "size_bytes": 5}


# --- manifests -----------------------------------------------------------------------------

MANIFEST_ROWS = [
    # path, label, attack, speaker, group, corpus (ignored)
    ("clips/b.flac", "Genuine", "-", "0012", "", "x"),
    ("clips/a.wav", "fake", "tts-1", "0013", "g1", "x"),
    ("./other/c.wav", "", "", "", "-", "y"),
    ("clips/missing.wav", "spoof", "vc", "0014", "g2", "y"),
]


def _manifest_fixture(root: Path) -> list[AudioItem]:
    _write(root, "clips/a.wav", 11)
    _write(root, "clips/b.flac", 22)
    _write(root, "other/c.wav", 33)
    frame = pd.DataFrame(MANIFEST_ROWS,
                         columns=["path", "label", "attack", "speaker", "group", "corpus"])
    frame.to_csv(root / "manifest.csv", index=False)
    frame.to_parquet(root / "manifest.parquet", index=False)
    return [
        AudioItem(f"{root}/clips/a.wav", "spoof", "tts-1", "0013", "g1", 11),
        AudioItem(f"{root}/clips/b.flac", "bonafide", None, "0012", None, 22),
        AudioItem(f"{root}/clips/missing.wav", "spoof", "vc", "0014", "g2", None),
        AudioItem(f"{root}/other/c.wav", None, None, None, None, 33),
    ]


@pytest.mark.parametrize("name", ["manifest.csv", "manifest.parquet"])
def test_manifest_local(tmp_path, name):
    expected = _manifest_fixture(tmp_path)
    assert read_manifest(str(tmp_path / name)) == expected
    assert resolve_inputs(str(tmp_path / name)) == expected


def test_manifest_absolute_path_inside_root_is_accepted(tmp_path):
    _write(tmp_path, "a.wav", 7)
    (tmp_path / "m.csv").write_text(f"path\n{tmp_path / 'a.wav'}\n")
    assert read_manifest(str(tmp_path / "m.csv")) == [
        AudioItem(uri=str(tmp_path / "a.wav"), size_bytes=7)
    ]


def test_manifest_on_s3_relative_and_absolute_uris(tmp_path, s3_bucket):
    expected = _manifest_fixture(tmp_path)
    _upload(tmp_path, f"{s3_bucket}/set")
    fs, _ = filesystem(s3_bucket)
    fs.pipe(f"{s3_bucket[5:]}/elsewhere/z.wav", b"z" * 44)
    frame = pd.read_parquet(tmp_path / "manifest.parquet")
    frame.loc[len(frame)] = [f"{s3_bucket}/elsewhere/z.wav", "real", "-", "s9", "g9", "z"]
    fs.pipe(f"{s3_bucket[5:]}/set/with_abs.parquet", frame.to_parquet(index=False))

    local_root = str(tmp_path)
    as_s3 = [dataclasses.replace(i, uri=i.uri.replace(local_root, f"{s3_bucket}/set"))
             for i in expected]
    assert resolve_inputs(f"{s3_bucket}/set/manifest.csv") == as_s3
    extra = AudioItem(f"{s3_bucket}/elsewhere/z.wav", "bonafide", None, "s9", "g9", 44)
    assert read_manifest(f"{s3_bucket}/set/with_abs.parquet") == sorted(
        [*as_s3, extra], key=lambda i: i.uri)

    # A protocol on S3: the audio root defaults to the protocol's prefix.
    fs.pipe(f"{s3_bucket[5:]}/set/proto.txt",
            b"SPK clips/a - A9 spoof\nSPK gone - - bonafide\nSPK clips/b - - bonafide\n")
    assert resolve_inputs(f"{s3_bucket}/set/proto.txt", protocol_ext=".wav") == [
        AudioItem(f"{s3_bucket}/set/clips/a.wav", "spoof", "A9", "SPK", None, 11),
        AudioItem(f"{s3_bucket}/set/clips/b.wav", "bonafide", None, "SPK", None, None),
        AudioItem(f"{s3_bucket}/set/gone.wav", "bonafide", None, "SPK", None, None),
    ]


# --- ASVspoof protocols --------------------------------------------------------------------


def test_protocol_layouts_2019_2021_and_asvspoof5(tmp_path):
    for name in ("LA_T_1", "LA_T_2", "DF_E_3", "T_0004", "T_0005", "sub/dir/utt6"):
        _write(tmp_path / "flac", f"{name}.flac", 10)
    (tmp_path / "proto.txt").write_text(
        "# comment lines and blank lines are ignored\n"
        "LA_0079 LA_T_1 - - bonafide\n"
        "\n"
        "LA_0080 LA_T_2 - A01 spoof\n"
        "LA_0043 DF_E_3 nocodec asvspoof A12 spoof notrim eval traditional_vocoder - - - -\n"
        "T_4850 T_0004 F - - - AC3 A05 spoof -\n"
        "T_1263 T_0005 M - - - - bonafide bonafide -\n"
        "SPK sub/dir/utt6 - - BONAFIDE\n"
    )
    flac = tmp_path / "flac"
    got = read_asvspoof_protocol(str(tmp_path / "proto.txt"), str(flac))
    assert got == sorted([
        AudioItem(str(flac / "LA_T_1.flac"), "bonafide", None, "LA_0079", None, 10),
        AudioItem(str(flac / "LA_T_2.flac"), "spoof", "A01", "LA_0080", None, 10),
        AudioItem(str(flac / "DF_E_3.flac"), "spoof", "A12", "LA_0043", None, 10),
        AudioItem(str(flac / "T_0004.flac"), "spoof", "A05", "T_4850", None, 10),
        AudioItem(str(flac / "T_0005.flac"), "bonafide", None, "T_1263", None, 10),
        AudioItem(str(flac / "sub/dir/utt6.flac"), "bonafide", None, "SPK", None, 10),
    ], key=lambda i: i.uri)
    # resolve_inputs defaults the audio root to the protocol's folder: files are missing
    # there, and are kept with no size so that they become error rows downstream.
    default_root = resolve_inputs(str(tmp_path / "proto.txt"))
    assert [i.uri for i in default_root] == sorted(
        i.uri.replace("/flac/", "/") for i in got)
    assert all(i.size_bytes is None for i in default_root)


# --- devcorpus ------------------------------------------------------------------------------


def test_devcorpus_manifest_protocol_and_folder_agree(devcorpus):
    with open(devcorpus / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    label_of = {str(devcorpus / r["path"]): r["label"] for r in rows}

    manifest = resolve_inputs(str(devcorpus / "manifest.csv"))
    assert len(manifest) == len(rows) == 998
    assert {i.uri: i.label for i in manifest} == label_of
    assert all(i.size_bytes and i.size_bytes > 0 for i in manifest)

    protocol = resolve_inputs(str(devcorpus / "protocol.txt"))
    assert len(protocol) == 998
    assert {(i.uri, i.label) for i in protocol} == {(i.uri, i.label) for i in manifest}

    # The folders are laid out <corpus>/<label>/..., so a plain listing labels them too.
    assert {i.uri: i.label for i in list_audio(str(devcorpus))} == label_of


# --- errors ---------------------------------------------------------------------------------


def _setup(files: dict[str, str | bytes]):
    def make(root: Path) -> None:
        for rel, content in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
    return make


ERROR_CASES = [
    # (files, call, error type, fragments of the message; {root} is the tmp folder)
    ({}, lambda r: resolve_inputs(f"{r}/nope"), SourceError,
     ["no such file or folder: {root}/nope"]),
    ({"d/notes.md": "x", "d/.hidden.wav": "x"}, lambda r: resolve_inputs(f"{r}/d"),
     SourceError, ["no audio files under {root}/d", " ".join(AUDIO_EXTENSIONS)]),
    ({"f.xyz": "x"}, lambda r: resolve_inputs(f"{r}/f.xyz"), SourceError,
     ["cannot tell what {root}/f.xyz is"]),
    ({"a.wav": "x"}, lambda r: list_audio(f"{r}/a.wav"), SourceError,
     ["expects a folder", "{root}/a.wav"]),
    ({"m.csv": "file,label\na.wav,spoof\n"}, lambda r: read_manifest(f"{r}/m.csv"),
     SourceError, ["{root}/m.csv", "no 'path' column", "['file', 'label']"]),
    ({"m.csv": "path,label\n"}, lambda r: read_manifest(f"{r}/m.csv"), SourceError,
     ["{root}/m.csv has no rows"]),
    ({"m.csv": ""}, lambda r: read_manifest(f"{r}/m.csv"), SourceError,
     ["{root}/m.csv is empty"]),
    ({"m.parquet": b"not parquet"}, lambda r: read_manifest(f"{r}/m.parquet"), SourceError,
     ["cannot read manifest {root}/m.parquet as Parquet"]),
    ({"sub/m.csv": "path\nok.wav\n../../x.wav\n"}, lambda r: resolve_inputs(f"{r}/sub/m.csv"),
     SourceError, ["row 2", "'../../x.wav'", "outside {root}/sub"]),
    ({"sub/m.csv": "path\n/etc/passwd\n"}, lambda r: read_manifest(f"{r}/sub/m.csv"),
     SourceError, ["row 1", "'/etc/passwd'", "outside"]),
    ({"m.csv": "path\nhttp://host/a.wav\n"}, lambda r: read_manifest(f"{r}/m.csv"),
     SourceError, ["row 1", "unsupported scheme"]),
    ({"m.csv": "path\na.wav\n\"\"\n"}, lambda r: read_manifest(f"{r}/m.csv"), SourceError,
     ["row 2", "empty path"]),
    ({"m.csv": "path\na.wav\nb.wav\n./a.wav\n"}, lambda r: read_manifest(f"{r}/m.csv"),
     SourceError, ["row 3", "'./a.wav'", "same file as row 1"]),
    ({"m.csv": "path,label\na.wav,maybe\n"}, lambda r: read_manifest(f"{r}/m.csv"),
     LabelError, ["{root}/m.csv row 1", "'maybe'", "genuine", "fake"]),
    ({"p.txt": "S U1 - - bonafide\nS U2 - A01 unknown\n"},
     lambda r: read_asvspoof_protocol(f"{r}/p.txt", str(r)), SourceError,
     ["{root}/p.txt line 2", "SPEAKER UTT_ID - ATTACK KEY", "'S U2 - A01 unknown'"]),
    ({"p.txt": "S U1\n"}, lambda r: resolve_inputs(f"{r}/p.txt"), SourceError,
     ["line 1", "expected"]),
    ({"p.txt": "# only a comment\n\n"}, lambda r: resolve_inputs(f"{r}/p.txt"), SourceError,
     ["{root}/p.txt has no trial lines"]),
    ({"p.txt": "S U1 - - bonafide\nS U2 - - spoof\nS U1 - A1 spoof\n"},
     lambda r: resolve_inputs(f"{r}/p.txt"), SourceError,
     ["line 3", "'U1' already listed on line 1"]),
    ({"p.txt": "S ../U1 - - bonafide\n"}, lambda r: resolve_inputs(f"{r}/p.txt"),
     SourceError, ["line 1", "outside {root}"]),
]


@pytest.mark.parametrize("files, call, error, fragments", ERROR_CASES)
def test_errors(tmp_path, files, call, error, fragments):
    _setup(files)(tmp_path)
    with pytest.raises(error) as info:
        call(tmp_path)
    assert type(info.value) is error
    for fragment in fragments:
        assert fragment.format(root=tmp_path) in str(info.value)


# --- labels ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        ("bonafide", "bonafide"), ("Genuine", "bonafide"), ("REAL", "bonafide"),
        ("bona-fide", "bonafide"), ("Bona_Fide", "bonafide"), (" bonafide ", "bonafide"),
        ("spoof", "spoof"), ("FAKE", "spoof"), ("Spoofed", "spoof"), ("synthetic", "spoof"),
        (None, None), ("", None), ("-", None), (float("nan"), None), (pd.NA, None),
    ],
)
def test_normalize_label(value, expected):
    assert normalize_label(value) == expected


@pytest.mark.parametrize("value", ["bona fide", "human", "0", 1, True, "spoof!"])
def test_normalize_label_rejects_unknown(value):
    with pytest.raises(LabelError) as info:
        normalize_label(value, where="m.csv row 4")
    message = str(info.value)
    assert message.startswith("m.csv row 4: ")
    assert repr(value) in message
    assert "bonafide, genuine, real" in message and "spoof, fake" in message
