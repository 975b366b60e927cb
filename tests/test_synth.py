"""spoofray.testing.synth: the demo archive's layout, labels, determinism and artefacts."""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
from collections import Counter

import numpy as np
import pytest

from spoofray import audio, errors
from spoofray.config import AudioConfig
from spoofray.testing import synth

CFG = AudioConfig()


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> synth.DemoArchive:
    return synth.make_demo_archive(tmp_path_factory.mktemp("demo"), seed=0)


def tree_digest(root) -> dict[str, str]:
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def native_mono(archive: synth.DemoArchive, item: synth.DemoItem) -> tuple[np.ndarray, int]:
    with open(os.path.join(archive.root, item.path), "rb") as fh:
        x, sr = audio.decode(fh.read(), item.path)
    return audio.to_mono(x), sr


def test_module_docstring_says_the_audio_is_synthetic():
    assert "synthetic and only demonstrates the pipeline" in synth.__doc__


def test_counts_and_manifest_account_for_every_file(archive):
    assert archive.counts["bonafide"] == 16 and archive.counts["spoof"] == 16
    assert archive.counts["attack:griffinlim"] == 8 and archive.counts["attack:sinusoidal"] == 8
    assert archive.counts["broken"] == len(archive.broken) == 9
    assert archive.counts["files"] == len(archive.items) == 41

    with open(archive.manifest_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(synth.MANIFEST_COLUMNS)
    assert [r["path"] for r in rows] == [i.path for i in archive.items]
    on_disk = {p for p in tree_digest(archive.root) if p != "manifest.csv"}
    assert on_disk == {r["path"] for r in rows}  # every file listed, every listed file exists
    assert {r["label"] for r in rows} == {"bonafide", "spoof"}


def test_layout_follows_label_and_attack(archive):
    for item in archive.items:
        parts = item.path.split("/")
        if item.expected_error is not None:
            assert parts[0] == "broken"
        elif item.label == "bonafide":
            assert parts[0] == "bonafide" and item.attack == "-"
        else:
            assert parts[:2] == ["spoof", item.attack] and item.attack in synth.ATTACKS
        assert item.group == item.speaker


def test_every_speaker_has_both_classes_and_every_attack(archive):
    seen = {(i.speaker, i.attack) for i in archive.good_items}
    speakers = {i.speaker for i in archive.good_items}
    assert len(speakers) == 4
    for speaker in speakers:
        assert {(speaker, "-"), *((speaker, a) for a in synth.ATTACKS)} <= seen


def test_formats_rates_and_channels_are_balanced_between_classes(archive):
    def mix(label):
        return Counter(
            (i.format, i.sample_rate, i.channels) for i in archive.good_items if i.label == label
        )

    assert mix("bonafide") == mix("spoof")
    formats = {i.format for i in archive.good_items}
    assert {"wav", "flac", "ogg", "mp3"} <= formats
    assert ("m4a" in formats) == (shutil.which("ffmpeg") is not None)
    assert {i.sample_rate for i in archive.good_items} == set(synth.SAMPLE_RATES)
    assert {i.channels for i in archive.good_items} == {1, 2}
    assert all(1.0 <= i.duration_s <= 12.0 for i in archive.good_items)


def test_good_files_load_with_their_stated_facts(archive):
    for item in archive.good_items:
        with open(os.path.join(archive.root, item.path), "rb") as fh:
            decoded = audio.load(fh.read(), item.path, CFG)
        assert decoded.sample_rate_in == item.sample_rate, item.path
        assert decoded.channels == item.channels, item.path
        # Lossy codecs add up to a few frames of priming/padding.
        assert decoded.duration_s == pytest.approx(item.duration_s, abs=0.06), item.path
        assert 0.05 < np.max(np.abs(decoded.samples)) <= 1.0


def test_broken_files_raise_their_expected_errors(archive):
    for path, error_name in archive.broken.items():
        with open(os.path.join(archive.root, path), "rb") as fh:
            data = fh.read()
        with pytest.raises(errors.InputFileError) as info:
            audio.load(data, path, CFG)
        assert type(info.value).__name__ == error_name, (path, str(info.value))


def pairs(archive, attack):
    """(bona fide, spoof) items made from the same utterance."""
    by_stem = {
        os.path.basename(i.path): i for i in archive.good_items if i.label == "bonafide"
    }
    return [
        (by_stem[os.path.basename(i.path)], i) for i in archive.good_items if i.attack == attack
    ]


def test_griffinlim_keeps_the_magnitude_but_not_the_waveform(archive):
    for bona, spoof in pairs(archive, "griffinlim"):
        x, sr = native_mono(archive, bona)
        y, _ = native_mono(archive, spoof)
        n = min(len(x), len(y))
        x, y = x[:n], y[:n]
        log_mag_x = np.log(np.abs(synth._stft(x, 512, 128)) + 1e-4)
        log_mag_y = np.log(np.abs(synth._stft(y, 512, 128)) + 1e-4)
        assert np.corrcoef(log_mag_x.ravel(), log_mag_y.ravel())[0, 1] > 0.85, spoof.path
        assert abs(np.corrcoef(x, y)[0, 1]) < 0.5, spoof.path


def test_sinusoidal_vocoder_leaves_nothing_above_8khz(archive):
    checked = 0
    for bona, spoof in pairs(archive, "sinusoidal"):
        if spoof.sample_rate < 44_100 or spoof.format == "mp3":  # mp3 low-passes both
            continue
        energy = []
        for item in (bona, spoof):
            x, sr = native_mono(archive, item)
            power = np.abs(np.fft.rfft(x)) ** 2
            energy.append(power[np.fft.rfftfreq(len(x), 1 / sr) > 8_500].sum() / power.sum())
        assert energy[1] < 0.01 * energy[0], (spoof.path, energy)
        checked += 1
    assert checked >= 2


def test_same_seed_gives_byte_identical_archives_and_another_seed_does_not(tmp_path):
    kwargs = dict(n_bonafide=8, n_spoof=4, duration_range_s=(1.0, 1.5))
    first = synth.make_demo_archive(tmp_path / "a", seed=5, **kwargs)
    second = synth.make_demo_archive(tmp_path / "b", seed=5, **kwargs)
    other = synth.make_demo_archive(tmp_path / "c", seed=6, broken=False, **kwargs)
    digest_a, digest_b = tree_digest(first.root), tree_digest(second.root)
    assert len(digest_a) == 8 + 4 + 9 + 1
    assert digest_a == digest_b
    assert first.items == second.items
    # Formats of all 8 kinds, including Ogg (random stream serials) and float WAV (PEAK time).
    assert {i.subtype for i in first.good_items} >= {"VORBIS", "FLOAT", "PCM_24"}
    digest_c = tree_digest(other.root)
    shared = set(digest_c) & set(digest_a) - {"manifest.csv"}
    assert shared and all(digest_a[p] != digest_c[p] for p in shared)


def test_bad_duration_range_is_refused(tmp_path):
    with pytest.raises(ValueError, match="duration_range_s"):
        synth.make_demo_archive(tmp_path, duration_range_s=(3.0, 2.0))
