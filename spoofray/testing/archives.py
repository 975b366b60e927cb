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
