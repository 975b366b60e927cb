"""Small generated signals and broken files for tests across the project.

Every signal is deterministic and has a known answer (frequency, peak, length), so tests
can check real behaviour against hand-computed values.
"""

from __future__ import annotations

import io
import os
import struct

import numpy as np


_CHUNK = 1 << 20  # samples per block: long signals (30-min calls) stay light on memory


def _phase(start: int, stop: int, freq: float, sr: int) -> np.ndarray:
    """Cycles of ``freq`` at samples ``start..stop``, wrapped to [0, 1), in float64 so that
    hour-long signals keep their phase exact before the float32 maths."""
    cycles = np.arange(start, stop, dtype=np.float64) * (freq / sr)
    return cycles - np.floor(cycles)


def sine(freq: float, dur: float, sr: int, *, amp: float = 0.5, phase: float = 0.0) -> np.ndarray:
    """A sine tone.

    Returns
    -------
    np.ndarray
        float32, shape ``(round(dur * sr),)``: ``amp * sin(2 pi freq t + phase)``.
    """
    n = int(round(dur * sr))
    out = np.empty(n, dtype=np.float32)
    for a in range(0, n, _CHUNK):
        b = min(n, a + _CHUNK)
        out[a:b] = amp * np.sin(2 * np.pi * _phase(a, b, freq, sr) + phase)
    return out


def chirp(f0: float, f1: float, dur: float, sr: int, *, amp: float = 0.5) -> np.ndarray:
    """A linear chirp from ``f0`` to ``f1`` Hz.

    Returns
    -------
    np.ndarray
        float32, shape ``(round(dur * sr),)``.
    """
    n = int(round(dur * sr))
    t = np.arange(n) / sr
    phase = 2 * np.pi * (f0 * t + 0.5 * (f1 - f0) / max(dur, 1e-12) * t**2)
    return (amp * np.sin(phase)).astype(np.float32)


def voiced(
    f0: float, dur: float, sr: int, *, n_harmonics: int = 20, amp: float = 0.5
) -> np.ndarray:
    """A harmonic "voiced" tone: harmonics of ``f0`` with 1/k amplitudes, below Nyquist.

    Returns
    -------
    np.ndarray
        float32, shape ``(round(dur * sr),)``, peak ``amp`` (to float32 rounding).
    """
    n = int(round(dur * sr))
    out = np.zeros(n, dtype=np.float32)
    harmonics = [k for k in range(1, n_harmonics + 1) if k * f0 < sr / 2]
    for a in range(0, n, _CHUNK):
        b = min(n, a + _CHUNK)
        theta = (2 * np.pi * _phase(a, b, f0, sr)).astype(np.float32)
        two_cos = 2 * np.cos(theta)
        # sin(k theta) by the Chebyshev recurrence: one multiply-add per harmonic, no sin.
        previous, current = np.zeros_like(theta), np.sin(theta)
        block = out[a:b]
        for k in range(1, harmonics[-1] + 1 if harmonics else 1):
            if k in harmonics:
                block += current / k
            previous, current = current, two_cos * current - previous
    peak = float(np.max(np.abs(out))) if n else 0.0
    if peak > 0:
        out *= amp / peak
    return out


def white_noise(dur: float, sr: int, *, amp: float = 0.1, seed: int = 0) -> np.ndarray:
    """Gaussian white noise with standard deviation ``amp``, clipped to [-1, 1].

    Returns
    -------
    np.ndarray
        float32, shape ``(round(dur * sr),)``.
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(int(round(dur * sr)), dtype=np.float32)
    x *= amp
    return np.clip(x, -1.0, 1.0, out=x)


def write_wav(path: str | os.PathLike, x: np.ndarray, sr: int, subtype: str = "PCM_16") -> str:
    """Write ``x`` as WAV (any soundfile subtype: PCM_U8, PCM_16, PCM_24, PCM_32, FLOAT, DOUBLE).

    Parameters
    ----------
    x : np.ndarray
        Shape ``(n,)`` mono or ``(channels, n)`` (spoofray's layout).

    Returns
    -------
    str
        The path written.
    """
    import soundfile as sf

    data = np.asarray(x)
    if data.ndim == 2:
        data = data.T  # soundfile wants (n, channels)
    buf = io.BytesIO()
    sf.write(buf, data, sr, format="WAV", subtype=subtype)
    with open(os.fspath(path), "wb") as fh:
        fh.write(zero_wav_peak_timestamp(buf.getvalue()))
    return os.fspath(path)


def zero_wav_peak_timestamp(data: bytes) -> bytes:
    """Zero the timestamp libsndfile writes into a float WAV's ``PEAK`` chunk.

    Makes float WAV output byte-identical from run to run; other files pass unchanged.
    """
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return data
    out, offset = bytearray(data), 12
    while offset + 8 <= len(out):
        (size,) = struct.unpack_from("<I", out, offset + 4)
        if out[offset : offset + 4] == b"PEAK" and offset + 16 <= len(out):
            out[offset + 12 : offset + 16] = b"\0\0\0\0"  # after the version field
            break
        if out[offset : offset + 4] == b"data":
            break
        offset += 8 + size + (size & 1)
    return bytes(out)


def make_broken_files(directory: str | os.PathLike, *, seed: int = 0) -> dict[str, str]:
    """Write one file per failure mode into ``directory``.

    Returns
    -------
    dict[str, str]
        File name → the class name of the :class:`~spoofray.errors.InputFileError` that
        :func:`spoofray.audio.load` raises for it under the default ``AudioConfig``.
    """
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(seed)
    expected: dict[str, str] = {}

    def put(name: str, data: bytes, error: str) -> None:
        with open(os.path.join(directory, name), "wb") as fh:
            fh.write(data)
        expected[name] = error

    put("zero_bytes.wav", b"", "AudioDecodeError")

    good = os.path.join(directory, ".good.tmp.wav")
    write_wav(good, voiced(150.0, 1.0, 16_000), 16_000, "PCM_16")
    with open(good, "rb") as fh:
        wav = fh.read()
    os.remove(good)
    # Cut in the middle of the samples: the header still declares the full length.
    put("truncated.wav", wav[: len(wav) // 2], "AudioDecodeError")
    # Cut inside the header itself.
    put("truncated_header.wav", wav[:20], "AudioDecodeError")
    put("text.wav", b"This is a text file, not audio.\n" * 20, "AudioDecodeError")
    put("random.flac", rng.bytes(4096), "AudioDecodeError")

    nan = voiced(150.0, 0.5, 16_000)
    nan[1000:1010] = np.nan
    write_wav(os.path.join(directory, "nan_float.wav"), nan, 16_000, "FLOAT")
    expected["nan_float.wav"] = "InvalidAudioError"

    write_wav(os.path.join(directory, "silent.wav"), np.zeros(16_000, np.float32), 16_000)
    expected["silent.wav"] = "InvalidAudioError"

    # A valid header with no samples at all.
    write_wav(os.path.join(directory, "no_frames.wav"), np.zeros(0, np.float32), 16_000)
    expected["no_frames.wav"] = "InvalidAudioError"

    # 50 ms: under the default AudioConfig.min_duration_s of 0.1 s.
    write_wav(os.path.join(directory, "too_short.wav"), sine(440.0, 0.05, 16_000), 16_000)
    expected["too_short.wav"] = "AudioTooShortError"
    return expected


def wav_header(
    *, sample_rate: int, channels: int, bits: int, n_frames: int, fmt_tag: int = 1
) -> bytes:
    """A canonical 44-byte RIFF/WAVE header (no samples) declaring ``n_frames`` frames.

    For building hostile inputs: a header that claims hours of audio, absurd rates, etc.
    """
    block_align = channels * bits // 8
    data_bytes = min(n_frames * block_align, 0xFFFFFFFE)
    return (
        b"RIFF"
        + struct.pack("<I", min(36 + data_bytes, 0xFFFFFFFF))
        + b"WAVEfmt "
        + struct.pack(
            "<IHHIIHH", 16, fmt_tag, channels, sample_rate, sample_rate * block_align,
            block_align, bits,
        )  # fmt: skip
        + b"data"
        + struct.pack("<I", data_bytes)
    )
