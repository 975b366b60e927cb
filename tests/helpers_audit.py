"""Test helpers of the nightly-audit tests: small real bundles and small real archives.

A bundle here is a real skops sklearn member (trained on synthetic log-mel windows) assembled
by the real :func:`assemble_bundle`; an archive is real WAV files from
:mod:`spoofray.testing`, written to a local folder or uploaded to moto's S3 server.
"""

from __future__ import annotations

import functools
import io
import os

import numpy as np

from spoofray import testing
from spoofray.config import AudioConfig, FeatureConfig
from spoofray.models.assemble import AssembleConfig, assemble_bundle

#: 1-s windows and 16 mel bands: featurizing a 1-s file costs milliseconds.
AUDIT_CFG = FeatureConfig(audio=AudioConfig(window_s=1.0, hop_s=1.0), kinds=("logmel",),
                          n_mels=16, n_mfcc=13)
SR = 16_000


@functools.lru_cache(maxsize=None)
def _trained(seed: int):
    from tests.test_bundle import synthetic_features, train_ml

    feats, y = synthetic_features(AUDIT_CFG, 40, seed=seed)
    return train_ml(feats, y, inputs=("logmel_pooled",))


def make_bundle(work_dir, version: str, *, seed: int = 0, output: str | None = None) -> str:
    """A real bundle named ``audit`` with the given version; returns its URI."""
    from tests.test_bundle import save_ml_member

    member = save_ml_member(_trained(seed), os.path.join(work_dir, f"member-{version}"),
                            AUDIT_CFG, inputs=("logmel_pooled",), threshold=0.5)
    made = assemble_bundle(AssembleConfig(
        members=(member,), name="audit", version=version,
        output=output or os.path.join(work_dir, f"bundle-{version}")))
    return made["uri"]


def wav_bytes(kind: str, value: float, dur: float = 1.0) -> bytes:
    """A short WAV: ``kind`` is ``voiced`` (f0 = value), ``sine`` (freq = value) or
    ``noise`` (amplitude = value)."""
    import soundfile as sf

    if kind == "voiced":
        x = testing.voiced(value, dur, SR)
    elif kind == "sine":
        x = testing.sine(value, dur, SR)
    else:
        x = testing.white_noise(dur, SR, amp=value, seed=int(value * 1000))
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
