"""Tiny archives of real WAV files in a local folder or below an ``s3://`` prefix (the
nightly-audit tests: files added, changed and broken between nights).
"""

from __future__ import annotations

import io
import os

import numpy as np

from spoofray.testing import signals

SR = 16_000


def wav_bytes(kind: str, value: float, dur: float = 1.0) -> bytes:
    """A short WAV: ``kind`` is ``voiced`` (f0 = value), ``sine`` (freq = value) or
    ``noise`` (amplitude = value)."""
    import soundfile as sf

    if kind == "voiced":
        x = signals.voiced(value, dur, SR)
    elif kind == "sine":
        x = signals.sine(value, dur, SR)
    else:
        x = signals.white_noise(dur, SR, amp=value, seed=int(value * 1000))
    buf = io.BytesIO()
    sf.write(buf, np.asarray(x, np.float32), SR, format="WAV", subtype="PCM_16")
    return buf.getvalue()


#: A small archive in two top-level folders plus one file that is not audio.
ARCHIVE = {
    "calls/a.wav": ("voiced", 110.0), "calls/b.wav": ("voiced", 160.0),
    "calls/c.wav": ("sine", 440.0), "calls/d.wav": ("noise", 0.1),
    "voicemail/e.wav": ("voiced", 210.0), "voicemail/f.wav": ("sine", 880.0),
    "voicemail/g.wav": ("noise", 0.3),
}
BROKEN = "voicemail/broken.wav"


def put(root: str, rel: str, data: bytes) -> str:
    """Write one file below a local folder or ``s3://`` prefix; returns its URI."""
    from spoofray import storage

    uri = storage.join(root, rel)
    if storage.is_remote(root):
        fs, path = storage.filesystem(uri)
        fs.pipe(path, data)
    else:
        os.makedirs(os.path.dirname(uri), exist_ok=True)
        with open(uri, "wb") as fh:
            fh.write(data)
    return uri


def make_archive(root: str) -> dict[str, str]:
    """:data:`ARCHIVE` plus :data:`BROKEN` below ``root``; returns ``{rel: uri}``."""
    out = {rel: put(root, rel, wav_bytes(*spec)) for rel, spec in ARCHIVE.items()}
    out[BROKEN] = put(root, BROKEN, b"this is not audio\n" * 20)
    return out


def write_many_clips(root, n_files: int, *, seed: int, duration_range_s: tuple[float, float],
                     files_per_folder: int, n_harmonics: int) -> str:
    """``n_files`` distinct short voiced clips at 8 kHz under ``real/gNN/`` and ``fake/gNN/``
    (alternating), plus one broken ``fake/broken.wav``: an archive big enough for faults
    to strike mid-run. Returns ``root`` as a string."""
    from pathlib import Path

    root = Path(root)
    rng = np.random.default_rng(seed)
    for i in range(n_files):
        folder = root / ("real" if i % 2 else "fake") / f"g{i // files_per_folder:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        dur = float(rng.uniform(*duration_range_s))
        x = signals.voiced(float(rng.uniform(80, 300)), dur, 8000, n_harmonics=n_harmonics)
        x += signals.white_noise(dur, 8000, amp=0.02, seed=i)[: len(x)]
        signals.write_wav(folder / f"c{i:04d}.wav", x, 8000)
    (root / "fake" / "broken.wav").write_bytes(b"RIFF, not audio")
    return str(root)


#: The devcorpus clips :func:`make_spliced_calls` builds from (paths in its manifest).
SPLICE_SPEAKER = "LS2609"
SPLICE_INSERT = "ljspeech/spoof/espnet_tacotron2.v1_GL/LJ049-0041_1db6a29fa1.flac"


def make_spliced_calls(folder: str | os.PathLike, devcorpus: str | os.PathLike
                       ) -> dict[str, object]:
    """Real long recordings with a generated insert, written as WAV into ``folder`` (a
    test's temporary folder; nothing of the devcorpus is copied anywhere else):

    ``call.wav``          ~90 s of one LibriSpeech speaker (ten clips), as recorded
    ``call_spliced.wav``  the same with one generated LJSpeech clip (Tacotron 2 +
                          Griffin-Lim, ~7 s) inserted after the fifth clip
    ``two_sided.wav``     a two-channel call: channel 0 the first five clips, channel 1
                          the next five with the insert in the middle (zero-padded to
                          one length)

    Returns
    -------
    dict
        ``uris`` (name → path), ``insert`` (name → (channel or None, start_s, end_s) of
        the insert).
    """
    import pandas as pd
    import soundfile as sf

    root = os.fspath(devcorpus)
    m = pd.read_csv(os.path.join(root, "manifest.csv"))
    clips = [sf.read(os.path.join(root, p), dtype="float32")[0]
             for p in sorted(m.loc[m["speaker"] == SPLICE_SPEAKER, "path"])][:10]
    insert = sf.read(os.path.join(root, SPLICE_INSERT), dtype="float32")[0]
    before = np.concatenate(clips[:5])
    out = os.fspath(folder)
    os.makedirs(out, exist_ok=True)
    uris = {"call.wav": signals.write_wav(os.path.join(out, "call.wav"),
                                          np.concatenate(clips), SR),
            "call_spliced.wav": signals.write_wav(
                os.path.join(out, "call_spliced.wav"),
                np.concatenate([before, insert, *clips[5:]]), SR)}
    side_a = before
    half = len(clips[5]) + len(clips[6])
    side_b = np.concatenate([*clips[5:7], insert, *clips[7:]])
    n = max(len(side_a), len(side_b))
    two = np.zeros((2, n), np.float32)
    two[0, :len(side_a)], two[1, :len(side_b)] = side_a, side_b
    uris["two_sided.wav"] = signals.write_wav(os.path.join(out, "two_sided.wav"), two, SR)
    spans = {"call_spliced.wav": (None, len(before) / SR, (len(before) + len(insert)) / SR),
             "two_sided.wav": (1, half / SR, (half + len(insert)) / SR)}
    return {"uris": uris, "insert": spans}
