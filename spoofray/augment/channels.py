"""Audio channel effects for training audio: time-stretch, pitch-shift, additive noise at a
set SNR, band-limiting, synthetic room reverberation, codec round-trips and an 8 kHz
telephone channel (ffmpeg; G.711 in numpy), level changes, silence trimmed or padded, and
RawBoost (:mod:`spoofray.augment.raw_boost`), named by specs that chain (:func:`apply_channel`)."""

from __future__ import annotations

import io
import re
import shutil
import subprocess

import numpy as np

from spoofray.augment._common import _as_float, fit_length
from spoofray.augment.raw_boost import rawboost
from spoofray.errors import ConfigError, SpoofrayError


class CodecUnavailableError(SpoofrayError, RuntimeError):
    """The ffmpeg binary (or the requested encoder) is not available."""


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
