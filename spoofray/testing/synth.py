"""A small, labelled, synthetic demo archive for smoke tests, demos and CI.

**This audio is synthetic and only demonstrates the pipeline.** Nothing trained or measured
on it says anything about real spoofing attacks or real speech.

``bonafide`` files are voice-like source-filter signals: a Rosenberg glottal pulse train
with jitter, shimmer, vibrato and intonation, through moving formant resonators, with
aspiration ("breath") noise, fricative-like noise bursts, pauses and a noise floor; each
speaker has its own f0 range, vocal-tract length (formant scale) and voice quality.
``spoof`` files are copy-syntheses of the same kind of utterances through two crude
vocoders, so there is a real artefact to learn:

``griffinlim``
    STFT magnitude kept, phase re-estimated with a few Griffin-Lim iterations (phasiness).
``sinusoidal``
    Harmonic resynthesis from the true (smoothed) f0 and STFT magnitudes at the harmonics:
    no jitter, shimmer or aspiration, band-limited to 8 kHz, flat noise in unvoiced parts.

Formats, sample rates and channel counts cycle identically in both classes so a model cannot
learn the container instead of the voice. Generation is deterministic: the same seed gives
byte-identical files (Ogg stream serials are fixed; ffmpeg is run bit-exact).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import shutil
import subprocess
import tempfile

import numpy as np

from spoofray.testing import signals

ATTACKS = ("griffinlim", "sinusoidal")
#: (extension, libsndfile subtype or codec) cycled over the items of each class.
FORMATS = (
    ("wav", "PCM_16"),
    ("flac", "PCM_16"),
    ("wav", "FLOAT"),
    ("ogg", "VORBIS"),
    ("mp3", "MPEG_LAYER_III"),
    ("flac", "PCM_24"),
    ("m4a", "aac"),
    ("wav", "PCM_24"),
)
SAMPLE_RATES = (16_000, 44_100, 22_050, 48_000, 8_000)
MANIFEST_COLUMNS = ("path", "label", "attack", "speaker", "group")

# (F1, F2, F3) of a few vowels for an adult male vocal tract, Hz; scaled per speaker.
_VOWELS = np.array(
    [[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480],
     [570, 840, 2410], [660, 1720, 2410], [490, 1350, 1690]],
    dtype=np.float64,
)  # fmt: skip
_BANDWIDTHS = (80.0, 110.0, 150.0, 250.0)
_F4 = 3500.0
_BLOCK_S = 0.005  # formant filters are updated every 5 ms


@dataclasses.dataclass(frozen=True)
class DemoItem:
    """One file of the demo archive (``path`` relative to the archive root, ``/``-separated)."""

    path: str
    label: str
    attack: str
    speaker: str
    group: str
    format: str
    subtype: str
    sample_rate: int
    channels: int
    duration_s: float
    #: Class name of the error :func:`spoofray.audio.load` raises, or None for good audio.
    expected_error: str | None = None


@dataclasses.dataclass(frozen=True)
class DemoArchive:
    """What :func:`make_demo_archive` wrote."""

    root: str
    manifest_path: str
    items: tuple[DemoItem, ...]
    #: Broken file path (relative to root) → expected error class name.
    broken: dict[str, str]
    #: ``bonafide``, ``spoof``, ``broken``, ``files`` and ``attack:<name>`` counts.
    counts: dict[str, int]

    @property
    def good_items(self) -> tuple[DemoItem, ...]:
        return tuple(i for i in self.items if i.expected_error is None)


# --- voice-like synthesis ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Speaker:
    name: str
    f0: float  # mean f0, Hz
    formant_scale: float  # shorter vocal tract -> higher formants
    jitter: float  # relative per-period f0 perturbation
    shimmer: float  # relative per-period amplitude perturbation
    breathiness: float  # aspiration noise level relative to the voiced source


def _speakers(seed: int, n: int) -> list[_Speaker]:
    rng = np.random.default_rng([seed, 7_001])
    out = []
    for k in range(n):
        low = k % 2 == 0  # alternate low- and high-pitched voices
        out.append(
            _Speaker(
                name=f"spk{k}",
                f0=float(rng.uniform(95, 135) if low else rng.uniform(175, 235)),
                formant_scale=float(rng.uniform(0.92, 1.02) if low else rng.uniform(1.08, 1.2)),
                jitter=float(rng.uniform(0.006, 0.015)),
                shimmer=float(rng.uniform(0.03, 0.08)),
                breathiness=float(rng.uniform(0.03, 0.09)),
            )
        )
    return out


@dataclasses.dataclass(frozen=True)
class _Utterance:
    """Everything random about an utterance except the sample rate it is rendered at."""

    speaker: _Speaker
    duration_s: float
    seed: tuple[int, ...]
    # Syllables: (start_s, end_s, vowel index, voiced?) — unvoiced ones are fricatives.
    syllables: tuple[tuple[float, float, int, bool], ...]
    intonation: tuple[tuple[float, float, float], ...]  # (amp, freq Hz, phase) components
    vibrato_hz: float
    peak: float


def _utterance(
    seed: int, index: int, speaker: _Speaker, duration_range_s: tuple[float, float]
) -> _Utterance:
    rng = np.random.default_rng([seed, 11_003, index])
    # Skewed towards short clips like real archives (mean ~4.1 s for 1-12 s): keeps it fast.
    low, high = duration_range_s
    duration = float(np.round(low + (high - low) * rng.random() ** 2.5, 3))
    syllables, t = [], float(rng.uniform(0.05, 0.25))  # leading silence
    while t < duration - 0.1:
        length = float(rng.uniform(0.12, 0.35))
        voiced = bool(rng.random() > 0.15)
        vowel = int(rng.integers(len(_VOWELS)))
        syllables.append((t, min(t + length, duration - 0.02), vowel, voiced))
        # Mostly short gaps between syllables, sometimes a pause.
        pause = rng.random() < 0.2
        t += length + float(rng.uniform(0.15, 0.4) if pause else rng.uniform(0.01, 0.06))
    intonation = tuple(
        (float(rng.uniform(0.03, 0.1)), float(rng.uniform(0.2, 1.5)), float(rng.uniform(0, 6.28)))
        for _ in range(3)
    )
    return _Utterance(
        speaker=speaker,
        duration_s=duration,
        seed=(seed, 13_007, index),
        syllables=tuple(syllables),
        intonation=intonation,
        vibrato_hz=float(rng.uniform(4.5, 6.5)),
        peak=float(rng.uniform(0.3, 0.9)),
    )


def _moving_average(x: np.ndarray, width: int) -> np.ndarray:
    """Centred box filter in O(n) (edges average over what exists)."""
    if width <= 1 or len(x) == 0:
        return x
    c = np.concatenate([[0.0], np.cumsum(x)])
    idx = np.arange(len(x))
    lo = np.clip(idx - width // 2, 0, len(x))
    hi = np.clip(idx - width // 2 + width, 0, len(x))
    return (c[hi] - c[lo]) / (hi - lo)


def _f0_contour(
    utt: _Utterance, sr: int, *, with_jitter: bool, rng: np.random.Generator
) -> np.ndarray:
    n = int(round(utt.duration_s * sr))
    t = np.arange(n) / sr
    rel = -0.08 * t / max(utt.duration_s, 1e-9)  # declination
    for amp, freq, phase in utt.intonation:
        rel = rel + amp * np.sin(2 * np.pi * freq * t + phase)
    rel = rel + 0.006 * np.sin(2 * np.pi * utt.vibrato_hz * t)
    if with_jitter:
        # Jitter: a random perturbation per period, held for the period, lightly smoothed.
        period = max(1, int(sr / utt.speaker.f0))
        steps = rng.normal(0.0, utt.speaker.jitter, n // period + 2)
        rel = rel + _moving_average(np.repeat(steps, period)[:n], max(1, period // 4))
    return utt.speaker.f0 * np.exp(rel)


def _rosenberg(phase_frac: np.ndarray, open_q: float = 0.45, close_q: float = 0.18) -> np.ndarray:
    """Rosenberg glottal flow pulse over one period, ``phase_frac`` in [0, 1)."""
    g = np.zeros_like(phase_frac)
    opening = phase_frac < open_q
    g[opening] = 0.5 * (1 - np.cos(np.pi * phase_frac[opening] / open_q))
    closing = (phase_frac >= open_q) & (phase_frac < open_q + close_q)
    g[closing] = np.cos(0.5 * np.pi * (phase_frac[closing] - open_q) / close_q)
    return g


def _envelopes(utt: _Utterance, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """Voiced and fricative amplitude envelopes, each ``(n,)``."""
    n = int(round(utt.duration_s * sr))
    voiced, fric = np.zeros(n), np.zeros(n)
    for start, end, _vowel, is_voiced in utt.syllables:
        a, b = int(start * sr), int(end * sr)
        if b > a:
            (voiced if is_voiced else fric)[a:b] += np.sin(np.linspace(0, np.pi, b - a)) ** 0.6
    return voiced, fric


def _formant_tracks(utt: _Utterance, times: np.ndarray, hop_s: float) -> np.ndarray:
    """F1..F4 in Hz at ``times`` (s): vowel targets, ~30 ms transitions; ``(len, 4)``."""
    targets = np.tile(_VOWELS[6], (len(times), 1))  # schwa between syllables
    for start, end, vowel, _voiced in utt.syllables:
        targets[(times >= start) & (times < end)] = _VOWELS[vowel]
    width = max(1, int(round(0.03 / hop_s)))
    tracks = [_moving_average(targets[:, k], width) for k in range(3)]
    tracks.append(np.full(len(times), _F4))
    return np.stack(tracks, axis=1) * utt.speaker.formant_scale


# --- pure-numpy STFT machinery (no scipy/librosa import: generation must stay fast) ----------


def _hann(n: int) -> np.ndarray:
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)  # periodic


def _overlap_add(chunks: np.ndarray, hop: int) -> np.ndarray:
    """Sum frames ``(F, k * hop)`` placed every ``hop`` samples -> ``((F + k - 1) * hop,)``."""
    n_frames, width = chunks.shape
    k = width // hop
    parts = chunks.reshape(n_frames, k, hop)
    out = np.zeros((n_frames + k - 1, hop), dtype=chunks.dtype)
    for c in range(k):
        out[c : c + n_frames] += parts[:, c]
    return out.ravel()


def _stft(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Centred (zero-padded) Hann STFT: ``(frames, n_fft // 2 + 1)`` complex."""
    padded = np.pad(x.astype(np.float32, copy=False), (n_fft // 2, n_fft // 2 + hop))
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]
    return np.fft.rfft(frames * _hann(n_fft), axis=1)


def _istft(spec: np.ndarray, n_fft: int, hop: int, length: int) -> np.ndarray:
    """Least-squares inverse of :func:`_stft` (window-square normalised overlap-add)."""
    win = _hann(n_fft)
    y = _overlap_add(np.fft.irfft(spec, n=n_fft, axis=1) * win, hop)
    norm = _overlap_add(np.tile(win**2, (spec.shape[0], 1)), hop)
    y = y / np.maximum(norm, 1e-8)
    return y[n_fft // 2 : n_fft // 2 + length]


def _formant_filter(x: np.ndarray, tracks_of, sr: int) -> np.ndarray:
    """Filter ``x`` through a cascade of 2-pole resonators whose centre frequencies move.

    Block-wise in the frequency domain: 20 ms Hann blocks at 50 % overlap (which sum to
    one) are zero-padded to twice their length, multiplied by the cascade's response at the
    block's formants, and overlap-added, so the resonators' ringing is kept.
    """
    block = 1 << int(np.round(np.log2(0.02 * sr)))
    hop, n_fft = block // 2, 2 * block
    n_frames = len(x) // hop + 2
    padded = np.pad(x.astype(np.float32), (hop, n_frames * hop + block - len(x) - hop))
    frames = np.lib.stride_tricks.sliding_window_view(padded, block)[::hop][:n_frames]
    spec = np.fft.rfft(frames * _hann(block), n=n_fft, axis=1)
    tracks = tracks_of((np.arange(n_frames) * hop - hop + block / 2) / sr, hop / sr)
    # z^-1 on the unit circle; complex64 throughout: this is the hot loop of generation.
    z1 = np.exp(-1j * 2 * np.pi * np.arange(spec.shape[1]) / n_fft).astype(np.complex64)
    for k, bw in enumerate(_BANDWIDTHS):
        freq = tracks[:, k : k + 1].astype(np.float32)
        r = np.float32(np.exp(-np.pi * bw / sr))
        c1, c2 = 2 * r * np.cos(2 * np.pi * freq / sr), -r * r
        response = (1 - c1 - c2) / (1 - c1 * z1 - c2 * z1 * z1)  # unit gain at DC
        spec *= np.where(freq < 0.45 * sr, response, np.complex64(1.0))
    y = _overlap_add(np.fft.irfft(spec, n=n_fft, axis=1), hop)
    return y[hop : hop + len(x)].astype(np.float64)


def _hiss(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Fricative-like noise: unit RMS, a broad band around 5.5 kHz (as far as ``sr`` allows)."""
    size = 1 << max(n - 1, 1).bit_length()  # power of two: arbitrary lengths FFT slowly
    spectrum = np.fft.rfft(rng.standard_normal(size).astype(np.float32))
    freqs = np.fft.rfftfreq(size, 1.0 / sr)
    band = np.exp(-0.5 * ((freqs - 5500.0) / 1800.0) ** 2).astype(np.float32)
    y = np.fft.irfft(spectrum * band, size)[:n].astype(np.float64)
    return y / (np.sqrt(np.mean(y**2)) + 1e-12)


def _render_voice(utt: _Utterance, sr: int) -> np.ndarray:
    """The bona fide utterance at ``sr``: float64, shape ``(n,)``, peak ``utt.peak``."""
    rng = np.random.default_rng([*utt.seed, sr])
    n = int(round(utt.duration_s * sr))
    f0 = _f0_contour(utt, sr, with_jitter=True, rng=rng)
    phase = np.cumsum(f0) / sr
    period_index = phase.astype(np.int64)
    shimmer = rng.normal(1.0, utt.speaker.shimmer, period_index[-1] + 2)[period_index]
    flow = _rosenberg(phase - period_index) * shimmer
    source = np.diff(flow, prepend=0.0)  # lip radiation: derivative of the glottal flow
    source /= np.max(np.abs(source)) + 1e-12
    # Aspiration noise, stronger while the glottis is open.
    noise = rng.standard_normal(n) * utt.speaker.breathiness * (0.4 + flow)
    voiced_env, fric_env = _envelopes(utt, sr)
    speech = _formant_filter(
        (source + noise) * voiced_env, lambda t, h: _formant_tracks(utt, t, h), sr
    )
    speech = speech / (np.max(np.abs(speech)) + 1e-12) + 0.12 * _hiss(rng, n, sr) * fric_env
    speech += 10 ** (-55 / 20) * rng.standard_normal(n)  # recording noise floor
    return speech * (utt.peak / (np.max(np.abs(speech)) + 1e-12))


def _stft_params(sr: int) -> tuple[int, int]:
    n_fft = 1 << int(np.round(np.log2(0.032 * sr)))  # ~32 ms
    return n_fft, n_fft // 4


def _griffinlim(x: np.ndarray, sr: int, seed: tuple[int, ...], n_iter: int = 8) -> np.ndarray:
    """Keep the STFT magnitude, re-estimate the phase (fast Griffin-Lim, momentum 0.99)."""
    n_fft, hop = _stft_params(sr)
    mag = np.abs(_stft(x, n_fft, hop))
    rng = np.random.default_rng([*seed, sr, 1])
    angles = np.exp(2j * np.pi * rng.random(mag.shape, dtype=np.float32))
    rebuilt = np.zeros_like(angles)
    momentum = 0.99
    for _ in range(n_iter):
        previous = rebuilt
        rebuilt = _stft(_istft(mag * angles, n_fft, hop, len(x)), n_fft, hop)
        angles = rebuilt - (momentum / (1 + momentum)) * previous
        angles /= np.abs(angles) + 1e-16
    y = _istft(mag * angles, n_fft, hop, len(x)).astype(np.float64)
    return y * (np.max(np.abs(x)) / (np.max(np.abs(y)) + 1e-12))


def _sinusoidal(utt: _Utterance, x: np.ndarray, sr: int) -> np.ndarray:
    """Harmonic copy-synthesis at <= 16 kHz from the smoothed true f0 and STFT magnitudes."""
    import soxr

    rng = np.random.default_rng([*utt.seed, sr, 2])
    inner_sr = min(sr, 16_000)
    xi = soxr.resample(x, sr, inner_sr, quality="HQ") if inner_sr != sr else x
    n = len(xi)
    n_fft, hop = _stft_params(inner_sr)
    mag = np.abs(_stft(xi, n_fft, hop))[: n // hop + 1]  # (frames, bins)
    frame_t = np.arange(mag.shape[0]) * hop
    samples = np.arange(n)
    f0 = _f0_contour(utt, inner_sr, with_jitter=False, rng=rng)  # "analysis": no jitter
    voiced_env, fric_env = _envelopes(utt, inner_sr)
    voiced_frames = voiced_env[np.minimum(frame_t, n - 1)] > 0.05
    f0_frames = f0[np.minimum(frame_t, n - 1)]
    phase = 2 * np.pi * np.cumsum(f0) / inner_sr
    scale = 2.0 / _hann(n_fft).sum()
    y = np.zeros(n)
    for k in range(1, int(0.45 * inner_sr / f0.min()) + 1):
        bins = np.clip(np.round(k * f0_frames * n_fft / inner_sr).astype(int), 0, n_fft // 2)
        amp = mag[np.arange(mag.shape[0]), bins] * scale * voiced_frames
        amp[k * f0_frames >= 0.45 * inner_sr] = 0.0
        y += np.interp(samples, frame_t, amp) * np.sin(k * phase)
    # Unvoiced parts: flat noise at the frame energy (a crude noise excitation).
    energy = np.sqrt(np.mean(mag**2, axis=1)) * scale * ~voiced_frames
    y += np.interp(samples, frame_t, energy) * rng.standard_normal(n) * (fric_env > 0.05)
    y += 10 ** (-55 / 20) * rng.standard_normal(n)
    if inner_sr != sr:
        y = soxr.resample(y, inner_sr, sr, quality="HQ")[: len(x)]
        y = np.pad(y, (0, len(x) - len(y)))
    return y * (np.max(np.abs(x)) / (np.max(np.abs(y)) + 1e-12))


def _to_channels(x: np.ndarray, channels: int, sr: int) -> np.ndarray:
    """Mono ``(n,)`` -> ``(n, channels)``; the 2nd channel is a slightly delayed, quieter copy."""
    if channels == 1:
        return x[:, None]
    delay = max(1, int(0.0004 * sr))
    right = np.concatenate([np.zeros(delay), x[:-delay]]) * 0.8
    return np.stack([x, right], axis=1)


# --- writing --------------------------------------------------------------------------------

_SF_FORMAT = {"wav": "WAV", "flac": "FLAC", "ogg": "OGG", "mp3": "MP3"}


def _ogg_crc(page: bytes) -> int:
    crc = 0
    for byte in page:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _OGG_CRC_TABLE[((crc >> 24) & 0xFF) ^ byte]
    return crc


def _ogg_table() -> list[int]:
    table = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else (r << 1)
        table.append(r & 0xFFFFFFFF)
    return table


_OGG_CRC_TABLE = _ogg_table()


def _ogg_fixed_serial(data: bytes, serial: int) -> bytes:
    """Rewrite every Ogg page's stream serial (libsndfile picks a random one) and its CRC."""
    out, pos = bytearray(), 0
    while pos + 27 <= len(data) and data[pos : pos + 4] == b"OggS":
        n_segments = data[pos + 26]
        body = sum(data[pos + 27 : pos + 27 + n_segments])
        end = pos + 27 + n_segments + body
        page = bytearray(data[pos:end])
        page[14:18] = serial.to_bytes(4, "little")
        page[22:26] = b"\0\0\0\0"
        page[22:26] = _ogg_crc(bytes(page)).to_bytes(4, "little")
        out += page
        pos = end
    return bytes(out + data[pos:])


def _encode(x: np.ndarray, sr: int, ext: str, subtype: str, serial: int) -> bytes | None:
    """Encode ``(n, channels)`` audio; None when the format needs ffmpeg and it is missing."""
    import soundfile as sf

    x = np.clip(x, -1.0, 1.0)
    if ext == "m4a":
        ffmpeg = shutil.which("ffmpeg")
        if ffmpeg is None:
            return None
        with tempfile.TemporaryDirectory(prefix="spoofray-synth-") as tmp:
            src, dst = os.path.join(tmp, "in.wav"), os.path.join(tmp, "out.m4a")
            sf.write(src, x, sr, subtype="FLOAT")
            subprocess.run(
                [ffmpeg, "-nostdin", "-v", "error", "-y", "-i", src, "-c:a", "aac", "-b:a", "96k",
                 "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:a", "+bitexact", dst],
                check=True, capture_output=True,
            )  # fmt: skip
            with open(dst, "rb") as fh:
                return fh.read()
    buf = io.BytesIO()
    sf.write(buf, x, sr, format=_SF_FORMAT[ext], subtype=subtype)
    data = buf.getvalue()
    if ext == "ogg":
        return _ogg_fixed_serial(data, serial)
    return signals.zero_wav_peak_timestamp(data) if ext == "wav" else data


def _write(root: str, rel: str, data: bytes) -> None:
    path = os.path.join(root, *rel.split("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)


def make_demo_archive(
    root: str | os.PathLike,
    *,
    seed: int = 0,
    n_bonafide: int = 16,
    n_spoof: int = 16,
    n_speakers: int = 4,
    broken: bool = True,
    duration_range_s: tuple[float, float] = (1.0, 12.0),
) -> DemoArchive:
    """Write a small labelled synthetic archive with a ``manifest.csv``.

    Layout::

        <root>/bonafide/<speaker>_u<NNN>.<ext>
        <root>/spoof/<attack>/<speaker>_u<NNN>.<ext>   copy-synthesis of utterance NNN
        <root>/broken/<name>                           one file per failure mode
        <root>/manifest.csv                            path,label,attack,speaker,group

    ``path`` is relative to ``root``; ``attack`` is ``-`` for bona fide; ``group`` is the
    speaker, so group-aware splits keep speakers and source utterances (a bona fide file
    and its spoofed copies) on one side. Broken files carry labels too, so every input is
    accounted for. m4a items are written as 16-bit WAV when ffmpeg is missing.

    Parameters
    ----------
    root : str or path
        Directory to write into (created; existing files with the same names are replaced).
    seed : int
        Same seed → byte-identical files.
    n_bonafide, n_spoof : int
        Good files per class. Spoof ``j`` is a copy of utterance ``j % max(n_bonafide, 1)``.
    n_speakers : int
        Distinct synthetic voices.
    broken : bool
        Also write the broken files of :func:`spoofray.testing.signals.make_broken_files`.
    duration_range_s : (float, float)
        Shortest and longest utterance, seconds (lower it for fast tests).

    Returns
    -------
    DemoArchive
    """
    root = os.path.abspath(os.fspath(root))
    os.makedirs(root, exist_ok=True)
    speakers = _speakers(seed, max(1, n_speakers))
    n_sources = max(n_bonafide, 1)
    if not 0.5 <= duration_range_s[0] <= duration_range_s[1]:
        raise ValueError(
            f"duration_range_s must be (low, high) with 0.5 <= low <= high, got {duration_range_s}"
        )
    utterances = [
        _utterance(seed, i, speakers[i % len(speakers)], duration_range_s) for i in range(n_sources)
    ]
    items: list[DemoItem] = []

    def emit(index: int, label: str, attack: str, utt: _Utterance) -> None:
        ext, subtype = FORMATS[index % len(FORMATS)]
        sr = SAMPLE_RATES[index % len(SAMPLE_RATES)]
        channels = 2 if index % 3 == 2 else 1
        voice = _render_voice(utt, sr)
        if attack == "griffinlim":
            voice = _griffinlim(voice, sr, utt.seed)
        elif attack == "sinusoidal":
            voice = _sinusoidal(utt, voice, sr)
        serial = (seed * 100_003 + index) % 2**32  # fixed Ogg stream serial
        data = _encode(_to_channels(voice, channels, sr), sr, ext, subtype, serial)
        if data is None:  # m4a without ffmpeg
            ext, subtype = "wav", "PCM_16"
            data = _encode(_to_channels(voice, channels, sr), sr, ext, subtype, serial)
        stem = f"{utt.speaker.name}_u{int(utt.seed[-1]):03d}"
        rel = f"bonafide/{stem}.{ext}" if label == "bonafide" else f"spoof/{attack}/{stem}.{ext}"
        _write(root, rel, data)
        items.append(
            DemoItem(rel, label, attack, utt.speaker.name, utt.speaker.name, ext, subtype,
                     sr, channels, utt.duration_s)
        )  # fmt: skip

    for i in range(n_bonafide):
        emit(i, "bonafide", "-", utterances[i])
    for j in range(n_spoof):
        # Each block of n_speakers spoofs uses one attack, so every speaker gets every attack.
        attack = ATTACKS[(j // len(speakers)) % len(ATTACKS)]
        emit(j, "spoof", attack, utterances[j % n_sources])

    broken_map: dict[str, str] = {}
    if broken:
        expected = signals.make_broken_files(os.path.join(root, "broken"), seed=seed)
        for k, (name, error) in enumerate(sorted(expected.items())):
            rel = f"broken/{name}"
            label = "bonafide" if k % 2 == 0 else "spoof"
            attack = "-" if label == "bonafide" else ATTACKS[k // 2 % len(ATTACKS)]
            spk = speakers[k % len(speakers)].name
            items.append(DemoItem(rel, label, attack, spk, spk, os.path.splitext(name)[1][1:],
                                  "", 0, 0, 0.0, expected_error=error))  # fmt: skip
            broken_map[rel] = error

    manifest_path = os.path.join(root, "manifest.csv")
    with open(manifest_path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(MANIFEST_COLUMNS)
        for item in items:
            writer.writerow([item.path, item.label, item.attack, item.speaker, item.group])

    counts = {
        "bonafide": sum(i.label == "bonafide" and i.expected_error is None for i in items),
        "spoof": sum(i.label == "spoof" and i.expected_error is None for i in items),
        "broken": len(broken_map),
        "files": len(items),
    }
    for attack in ATTACKS:
        counts[f"attack:{attack}"] = sum(
            i.attack == attack and i.expected_error is None for i in items
        )
    return DemoArchive(root, manifest_path, tuple(items), broken_map, counts)
