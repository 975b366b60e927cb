"""Audio bytes → validated float32 mono at the target rate → fixed windows.

Decoding goes through libsndfile (``soundfile``) for WAV (8/16/24/32-bit PCM, float),
FLAC, Ogg/Vorbis, Ogg/Opus and MP3, straight from memory. Containers libsndfile does not
read (m4a/mp4/aac, …) go through an ``ffmpeg`` subprocess. Every problem with a single
file raises a narrow :class:`~spoofray.errors.InputFileError` subclass whose message names
the file, so a run records it and carries on.

The header is checked before the samples are decoded: an absurd rate or channel count or
a duration over the limit is refused without allocating the audio, so a lying or
hours-long header cannot exhaust memory.

Each decoded file also gets its band (:func:`measure_band`): ``narrow`` when (almost) no
energy lies above 4 kHz, as in an 8 kHz call, whatever rate the file is stored at.

Everything here is pure (bytes/numpy in, numpy out) and Ray-free.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import shutil
import struct
import subprocess
import tempfile

import numpy as np

from spoofray.config import AudioConfig, FeatureConfig
from spoofray.errors import (
    AudioDecodeError,
    AudioTooLongError,
    AudioTooShortError,
    InvalidAudioError,
    UnsupportedFormatError,
)

#: Extensions listed as audio inputs.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".opus")
#: Containers libsndfile cannot read at all: go straight to ffmpeg.
FFMPEG_ONLY_EXTENSIONS = frozenset(
    {".m4a", ".mp4", ".aac", ".webm", ".wma", ".amr", ".3gp", ".mka", ".mov"}
)
#: Read with libsndfile when it can, else ffmpeg; without ffmpeg this is "unsupported".
FFMPEG_PREFERRED_EXTENSIONS = FFMPEG_ONLY_EXTENSIONS | {".opus"}

MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 768_000
MAX_CHANNELS = 64

FFMPEG_INSTALL_HINT = (
    "install ffmpeg (Debian/Ubuntu: `apt-get install ffmpeg`; macOS: `brew install ffmpeg`; "
    "conda: `conda install -c conda-forge ffmpeg`; in this repo: `make system-deps`)"
)

# libsndfile open-error codes after which another decoder may still succeed: the
# container or codec is unknown to libsndfile (not: known but malformed).
_SF_UNRECOGNISED_CODES = frozenset({1, 4, 18})
# Formats whose header frame count is exact, so a shorter read means a truncated file.
_EXACT_FRAME_FORMATS = frozenset({"WAV", "WAVEX", "FLAC", "AIFF", "W64", "RF64", "CAF", "AU"})
_FFMPEG_TIMEOUT_S = 600
# libsndfile reports SF_COUNT_MAX frames when the header does not say the length.
_SF_UNKNOWN_FRAMES = 2**62

#: Band measurement: the share of energy above ``NARROW_EDGE_HZ`` (just past the 4 kHz top
#: of an 8 kHz file, clear of the resampler's transition and the window's main lobe) ...
NARROW_EDGE_HZ = 4100.0
#: ... below which a file is ``narrow``. Measured on devcorpus, trainpool and trainpool2:
#: every clip as stored lies at -50 dB or above (median -20 dB), and the same clips through
#: 8 kHz and back at -84 dB or below (median -105 dB).
NARROW_BELOW_DB = -60.0
#: The measurement's frames: 512 samples, one every 2048 (a quarter of the audio is enough
#: for a spectrum's share and keeps the cost under a tenth of one feature kind's STFT).
_BAND_FRAME, _BAND_STRIDE = 512, 2048


@dataclasses.dataclass(frozen=True)
class DecodedAudio:
    """One file's audio, validated, mono, at ``cfg.sample_rate``.

    Attributes
    ----------
    samples : np.ndarray
        float32, shape ``(n,)`` (``(channels, n)`` when loaded with ``keep_channels``).
    sample_rate_in : int
        The file's own sample rate.
    channels : int
        The file's channel count (before mix-down).
    duration_s : float
        Duration of the decoded audio, ``frames / sample_rate_in``.
    band : str
        ``wide`` or ``narrow`` (:func:`measure_band` of the mix).
    upper_band_db : float
        Energy above :data:`NARROW_EDGE_HZ` relative to the total, in dB (of the mix).
    """

    samples: np.ndarray
    sample_rate_in: int
    channels: int
    duration_s: float
    band: str = "wide"
    upper_band_db: float = 0.0


# --- decoding ------------------------------------------------------------------------------


def decode(
    data: bytes, name: str, *, max_duration_s: float | None = None
) -> tuple[np.ndarray, int]:
    """Decode encoded audio bytes at their native rate and channel count.

    Parameters
    ----------
    data : bytes
        The whole encoded file.
    name : str
        File name or URI: used for its extension and in error messages.
    max_duration_s : float, optional
        Refuse (:class:`AudioTooLongError`) when the header says the file is longer, before
        decoding it; without a trustworthy header, decode at most slightly more than this.

    Returns
    -------
    samples : np.ndarray
        float32, shape ``(channels, n)``; PCM is scaled to [-1, 1), float files are passed
        through unscaled. May be a transposed view (not C-contiguous) for multi-channel.
    sample_rate : int
        Native sample rate in Hz.

    Raises
    ------
    AudioDecodeError
        Empty, corrupt, truncated, or not audio.
    UnsupportedFormatError
        The format needs ffmpeg, which is not installed.
    InvalidAudioError
        Absurd sample rate or channel count in the header.
    AudioTooLongError
        Header duration over ``max_duration_s``.
    """
    if len(data) == 0:
        raise AudioDecodeError(
            f"{name}: file is empty (0 bytes); expected encoded audio. "
            "Re-copy or re-export the file."
        )
    ext = os.path.splitext(name)[1].lower()
    if ext in FFMPEG_ONLY_EXTENSIONS:
        return _decode_ffmpeg(data, name, max_duration_s)
    try:
        return _decode_soundfile(data, name, max_duration_s)
    except _NotRecognisedError as exc:
        sf_message = str(exc)
    if shutil.which("ffmpeg") is None:
        if ext in FFMPEG_PREFERRED_EXTENSIONS:
            raise UnsupportedFormatError(
                f"{name}: libsndfile cannot read this {ext} file ({sf_message}) and ffmpeg, "
                f"the fallback decoder, is not on PATH; {FFMPEG_INSTALL_HINT}."
            )
        raise AudioDecodeError(
            f"{name}: not decodable audio: libsndfile says {sf_message!r} (expected WAV, "
            "FLAC, Ogg or MP3 data); ffmpeg is not installed to try further. "
            "The file is corrupt or not audio."
        )
    return _decode_ffmpeg(data, name, max_duration_s, fallback_from=sf_message)


class _NotRecognisedError(Exception):
    """libsndfile does not know the container/codec (another decoder may)."""


def _check_header(name: str, sample_rate: int, channels: int) -> None:
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise InvalidAudioError(
            f"{name}: header sample rate {sample_rate} Hz is outside "
            f"[{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}] Hz; the file is corrupt or not speech "
            "audio. Re-export it at a normal rate (8-48 kHz)."
        )
    if not 1 <= channels <= MAX_CHANNELS:
        raise InvalidAudioError(
            f"{name}: header says {channels} channels, expected 1..{MAX_CHANNELS}; the file "
            "is corrupt or not a recording. Re-export it as mono or stereo."
        )


def _check_header_duration(
    name: str, frames: int, sample_rate: int, max_duration_s: float | None
) -> None:
    if max_duration_s is not None and frames > max_duration_s * sample_rate:
        raise AudioTooLongError(
            f"{name}: header says {frames / sample_rate:.1f} s, over the limit of "
            f"{max_duration_s:.1f} s (AudioConfig.max_duration_s); refused before decoding. "
            "Raise the limit or split the file."
        )


def _wav_declared_frames(data: bytes) -> int | None:
    """Frame count a RIFF/WAVE header declares for its ``data`` chunk, if it says one.

    libsndfile silently shortens a truncated WAV to what is present, so truncation is
    detected by comparing with the declared chunk size. Streaming writers put 0 or
    0xFFFFFFFF there ("unknown"): then nothing is declared.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    offset, block_align = 12, 0
    for _ in range(64):  # bounded walk: a hostile header cannot loop us
        if offset + 8 > len(data):
            return None
        chunk_id = data[offset : offset + 4]
        (size,) = struct.unpack_from("<I", data, offset + 4)
        if chunk_id == b"fmt " and offset + 22 <= len(data):
            (block_align,) = struct.unpack_from("<H", data, offset + 20)
        if chunk_id == b"data":
            if size in (0, 0xFFFFFFFF) or block_align <= 0:
                return None
            return size // block_align
        offset += 8 + size + (size & 1)
    return None


def _decode_soundfile(
    data: bytes, name: str, max_duration_s: float | None
) -> tuple[np.ndarray, int]:
    import soundfile as sf

    try:
        handle = sf.SoundFile(io.BytesIO(data))
    except sf.LibsndfileError as exc:
        if exc.code in _SF_UNRECOGNISED_CODES:
            raise _NotRecognisedError(exc.error_string) from exc
        raise AudioDecodeError(
            f"{name}: corrupt or truncated audio: libsndfile cannot open it "
            f"({exc.error_string}); expected a complete audio file. Re-copy or re-export it."
        ) from exc
    except (sf.SoundFileError, RuntimeError, ValueError) as exc:
        raise AudioDecodeError(
            f"{name}: not decodable audio ({exc}); re-copy or re-export the file."
        ) from exc
    with handle:
        sample_rate, channels, frames = handle.samplerate, handle.channels, handle.frames
        _check_header(name, sample_rate, channels)
        if frames >= _SF_UNKNOWN_FRAMES:  # e.g. a streamed FLAC: the header has no length
            samples = _read_unknown_length(handle, name, sample_rate, max_duration_s)
            return samples.T, sample_rate
        declared = _wav_declared_frames(data) if handle.format in ("WAV", "WAVEX") else None
        # A WAV header's own claim counts too: hours declared are refused as too long even
        # when the bytes behind them are missing.
        _check_header_duration(name, max(frames, declared or 0), sample_rate, max_duration_s)
        if declared is not None and declared > frames:
            raise AudioDecodeError(
                f"{name}: truncated WAV: header declares {declared} frames, the file "
                f"holds {frames}; re-copy the complete file."
            )
        try:
            # (frames, channels); soundfile clips the request to the frames present.
            samples = handle.read(frames, dtype="float32", always_2d=True)
        except (sf.SoundFileError, RuntimeError) as exc:
            raise _read_error(name, handle.format, exc) from exc
        # Only where the header's count is exact: MP3 lengths are estimates, and an Ogg's
        # comes from its last page, so a shorter read there is no evidence of damage.
        if handle.format in _EXACT_FRAME_FORMATS and samples.shape[0] < frames:
            raise AudioDecodeError(
                f"{name}: truncated {handle.format} audio: header says {frames} frames, "
                f"only {samples.shape[0]} decode; re-copy the complete file."
            )
    return samples.T, sample_rate


def _read_error(name: str, fmt: str, exc: Exception) -> AudioDecodeError:
    return AudioDecodeError(
        f"{name}: corrupt or truncated {fmt} audio: decoding failed after the header "
        f"({exc}); re-copy or re-export the file."
    )


def _read_unknown_length(
    handle, name: str, sample_rate: int, max_duration_s: float | None
) -> np.ndarray:
    """Read a file whose header gives no length, block by block, stopping just past the
    duration limit (bounded memory).

    ``SoundFile.read`` cannot be used: after every read soundfile seeks to the new
    position, and libsndfile cannot seek in a FLAC stream of unknown length once the
    end is reached. So this calls libsndfile's ``sf_readf_float`` on the open handle.
    """
    import soundfile as sf

    cap = None if max_duration_s is None else int(max_duration_s * sample_rate) + 1
    channels, block_frames = handle.channels, 1 << 16
    blocks, total = [], 0
    while cap is None or total <= cap:
        block = np.empty((block_frames, channels), dtype=np.float32)
        got = sf._snd.sf_readf_float(handle._file, sf._ffi.cast("float *", block.ctypes.data),
                                     block_frames)  # fmt: skip
        code = sf._snd.sf_error(handle._file)
        if code:
            message = sf._ffi.string(sf._snd.sf_error_number(code)).decode(errors="replace")
            raise _read_error(name, handle.format, RuntimeError(message))
        if got <= 0:
            break
        blocks.append(block[:got])
        total += got
    if not blocks:
        return np.zeros((0, channels), dtype=np.float32)
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)


def _ffmpeg_tools(name: str) -> tuple[str, str]:
    ffmpeg, ffprobe = shutil.which("ffmpeg"), shutil.which("ffprobe")
    if ffmpeg is None or ffprobe is None:
        missing = "ffmpeg" if ffmpeg is None else "ffprobe (part of ffmpeg)"
        raise UnsupportedFormatError(
            f"{name}: decoding this format needs {missing}, which is not on PATH; "
            f"{FFMPEG_INSTALL_HINT}."
        )
    return ffmpeg, ffprobe


def _probe_float(value: object) -> float | None:
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _decode_ffmpeg(
    data: bytes, name: str, max_duration_s: float | None, fallback_from: str | None = None
) -> tuple[np.ndarray, int]:
    ffmpeg, ffprobe = _ffmpeg_tools(name)
    why_not_sf = f"; libsndfile said {fallback_from!r}" if fallback_from else ""
    ext = os.path.splitext(name)[1].lower()
    # A real file (not a pipe): mp4/m4a with the index at the end need to seek.
    with tempfile.TemporaryDirectory(prefix="spoofray-ffmpeg-") as tmp:
        path = os.path.join(tmp, "input" + (ext if ext.isascii() and len(ext) <= 8 else ""))
        with open(path, "wb") as fh:
            fh.write(data)
        probe_cmd = [
            ffprobe, "-v", "error", "-select_streams", "a:0", "-of", "json",
            "-show_entries", "stream=channels,sample_rate,duration:format=duration", path,
        ]  # fmt: skip
        try:
            probe = subprocess.run(
                probe_cmd, capture_output=True, timeout=_FFMPEG_TIMEOUT_S, check=False
            )
            info = json.loads(probe.stdout or b"{}")
        except (subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
            raise AudioDecodeError(f"{name}: ffprobe could not read the file ({exc})") from exc
        streams = info.get("streams") or []
        sample_rate = int(_probe_float(streams[0].get("sample_rate")) or 0) if streams else 0
        channels = int(streams[0].get("channels") or 0) if streams else 0
        if probe.returncode != 0 or not streams or sample_rate <= 0 or channels <= 0:
            detail = probe.stderr.decode(errors="replace").replace(path, name).strip()
            detail = detail[-300:] or "no audio stream"
            raise AudioDecodeError(
                f"{name}: not decodable audio: ffprobe finds no usable audio stream "
                f"({detail}){why_not_sf}. The file is corrupt or not audio."
            )
        _check_header(name, sample_rate, channels)
        duration = _probe_float(streams[0].get("duration"))
        if duration is None:
            duration = _probe_float((info.get("format") or {}).get("duration"))
        if duration is not None:
            _check_header_duration(name, int(duration * sample_rate), sample_rate, max_duration_s)
        # Native rate and channel count, forced, so the byte stream matches the probe.
        cmd = [ffmpeg, "-nostdin", "-v", "error", "-i", path, "-map", "0:a:0", "-vn",
               "-ac", str(channels), "-ar", str(sample_rate), "-c:a", "pcm_f32le",
               "-f", "f32le"]  # fmt: skip
        if max_duration_s is not None:
            # Cap the output so an unknown or lying duration cannot exhaust memory; the
            # extra second lets the caller see that the limit was exceeded.
            cmd += ["-t", f"{max_duration_s + 1.0:.3f}"]
        try:
            run = subprocess.run(
                [*cmd, "pipe:1"], capture_output=True, timeout=_FFMPEG_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise AudioDecodeError(
                f"{name}: ffmpeg did not finish decoding in {_FFMPEG_TIMEOUT_S} s"
            ) from exc
    if run.returncode != 0:
        detail = run.stderr.decode(errors="replace").replace(path, name).strip()[-300:]
        raise AudioDecodeError(
            f"{name}: corrupt or truncated audio: ffmpeg failed ({detail}){why_not_sf}. "
            "Re-copy or re-export the file."
        )
    usable = len(run.stdout) - len(run.stdout) % (4 * channels)
    if usable == 0 and fallback_from is not None:
        raise AudioDecodeError(
            f"{name}: not decodable audio: ffmpeg decodes no samples{why_not_sf}. "
            "The file is corrupt or not audio."
        )
    # bytearray: a writable buffer, so callers may modify the samples in place.
    flat = np.frombuffer(bytearray(run.stdout[:usable]), dtype="<f4")
    return flat.reshape(-1, channels).T, sample_rate


# --- mix-down, resampling, windows ---------------------------------------------------------


def to_mono(x: np.ndarray) -> np.ndarray:
    """Mix down to mono: the mean of the channels.

    Parameters
    ----------
    x : np.ndarray
        Shape ``(channels, n)`` (or already ``(n,)``).

    Returns
    -------
    np.ndarray
        float32, shape ``(n,)``; a view (no copy) when there is one channel.
    """
    if x.ndim == 1:
        return x
    if x.ndim != 2:
        raise ValueError(f"to_mono expects (channels, n) or (n,), got shape {x.shape}")
    if x.shape[0] == 1:
        return x[0]
    return x.mean(axis=0, dtype=np.float32)


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample mono audio with soxr (``HQ`` quality).

    Parameters
    ----------
    x : np.ndarray
        Shape ``(n,)``.
    sr_in, sr_out : int
        Rates in Hz.

    Returns
    -------
    np.ndarray
        float32, shape ``(round(n * sr_out / sr_in),)`` (± 1); ``x`` itself when the rates
        are equal.
    """
    if sr_in == sr_out:
        return x
    import soxr

    x = np.ascontiguousarray(x, dtype=np.float32)
    return soxr.resample(x, sr_in, sr_out, quality="HQ")


def window_count(n_samples: int, cfg: AudioConfig) -> int:
    """Number of windows :func:`frame_windows` makes from ``n_samples`` samples.

    ``1`` if ``n <= W`` else ``1 + ceil((n - W) / H)`` with ``W``/``H`` the window/hop in
    samples at ``cfg.sample_rate``.
    """
    w, h = cfg.window_samples, cfg.hop_samples
    if n_samples <= w:
        return 1
    return 1 + -(-(n_samples - w) // h)


def trim_silence(x: np.ndarray, cfg: AudioConfig) -> tuple[np.ndarray, int]:
    """Cut leading and trailing audio quieter than ``cfg.trim_db`` below the loudest frame.

    Frames are 20 ms, not overlapping. Returns the kept audio and the index of its first
    sample in ``x`` (``(x, 0)`` when ``cfg.trim_db`` is None).
    """
    if cfg.trim_db is None:
        return x, 0
    frame = max(1, int(round(0.02 * cfg.sample_rate)))
    n_frames = -(-len(x) // frame)
    padded = np.zeros(n_frames * frame, np.float32)
    padded[: len(x)] = x
    energy = np.mean(padded.reshape(n_frames, frame).astype(np.float64) ** 2, axis=1)
    loud = np.flatnonzero(energy >= energy.max() * 10.0 ** (-cfg.trim_db / 10.0))
    start, stop = loud[0] * frame, min(len(x), (loud[-1] + 1) * frame)
    return x[start:stop], int(start)


def frame_windows(
    x: np.ndarray, cfg: AudioConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut mono audio into fixed windows; the last partial window is padded (``cfg.pad``).

    Parameters
    ----------
    x : np.ndarray
        Shape ``(n,)``, at ``cfg.sample_rate``.
    cfg : AudioConfig
        Window and hop lengths.

    Returns
    -------
    windows : np.ndarray
        float32, shape ``(n_windows, cfg.window_samples)``, C-contiguous.
    start_s : np.ndarray
        float64, shape ``(n_windows,)``: window ``i`` starts at ``i * H / sr``.
    end_s : np.ndarray
        float64, shape ``(n_windows,)``: ``min(start + W, n) / sr`` (the audio, not the
        padding, that the window covers).
    """
    if x.ndim != 1:
        raise ValueError(f"frame_windows expects mono audio of shape (n,), got {x.shape}")
    w, h, sr = cfg.window_samples, cfg.hop_samples, cfg.sample_rate
    n = x.shape[0]
    count = window_count(n, cfg)
    windows = np.empty((count, w), dtype=np.float32)
    # Full windows straight from a strided view of x (one copy, no padded temporary) ...
    full = 0 if n < w else min(count, (n - w) // h + 1)
    if full:
        windows[:full] = np.lib.stride_tricks.sliding_window_view(x, w)[::h][:full]
    # ... then the few partial windows at the end, padded.
    for i in range(full, count):
        real = n - i * h
        if cfg.pad == "repeat":
            windows[i] = np.resize(x[i * h :], w)  # np.resize repeats the audio
        else:
            windows[i, :real] = x[i * h :]
            windows[i, real:] = 0.0
    starts = np.arange(count, dtype=np.int64) * h
    return windows, starts / sr, np.minimum(starts + w, n) / sr


def upper_band_db(x: np.ndarray, sr: int) -> float:
    """Energy above :data:`NARROW_EDGE_HZ` relative to the total energy, in dB.

    Hann-windowed frames of 512 samples, one every 2048; clamped to [-150, 0] dB (-150 for
    audio with nothing above the edge, or a rate whose Nyquist is below it).
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"upper_band_db expects mono audio of shape (n,), got {x.shape}")
    if len(x) < _BAND_FRAME:
        x = np.pad(x, (0, _BAND_FRAME - len(x)))
    frames = np.lib.stride_tricks.sliding_window_view(x, _BAND_FRAME)[::_BAND_STRIDE]
    power = np.square(np.abs(np.fft.rfft(frames * _band_window(), axis=1))).sum(axis=0)
    upper = power[np.fft.rfftfreq(_BAND_FRAME, 1.0 / sr) >= NARROW_EDGE_HZ].sum()
    total = float(power.sum())
    if total <= 0.0 or upper <= total * 1e-15:
        return -150.0
    return float(min(0.0, 10.0 * math.log10(upper / total)))


def _band_window() -> np.ndarray:
    return np.hanning(_BAND_FRAME).astype(np.float32)


def measure_band(x: np.ndarray, sr: int) -> tuple[str, float]:
    """``(band, upper_band_db)`` of mono audio: ``narrow`` when the energy above
    :data:`NARROW_EDGE_HZ` is under :data:`NARROW_BELOW_DB` of the total, else ``wide``."""
    db = upper_band_db(x, sr)
    return ("narrow" if db < NARROW_BELOW_DB else "wide"), db


# --- the whole step --------------------------------------------------------------------------


def load(data: bytes, name: str, cfg: AudioConfig, *, keep_channels: bool = False
         ) -> DecodedAudio:
    """Decode, validate, mix down and resample one file.

    Parameters
    ----------
    data : bytes
        The encoded file.
    name : str
        File name or URI (extension and error messages).
    cfg : AudioConfig
        Target rate and limits.
    keep_channels : bool
        Keep a multi-channel file's channels apart (each resampled) instead of mixing them
        down; the checks (finite samples, not digital silence) are still on the mix.

    Returns
    -------
    DecodedAudio
        ``samples`` float32 of shape ``(n,)`` at ``cfg.sample_rate``; ``(channels, n)``
        with ``keep_channels`` and more than one channel; the band of the mix.

    Raises
    ------
    AudioDecodeError, UnsupportedFormatError
        Not decodable (see :func:`decode`).
    AudioTooLongError
        Larger than ``cfg.max_file_bytes`` or longer than ``cfg.max_duration_s``.
    AudioTooShortError
        Shorter than ``cfg.min_duration_s``.
    InvalidAudioError
        No samples, NaN/Inf samples, digital silence, absurd rate or channel count.
    """
    if len(data) > cfg.max_file_bytes:
        raise AudioTooLongError(
            f"{name}: {len(data)} bytes, over the limit of {cfg.max_file_bytes} bytes "
            "(AudioConfig.max_file_bytes); raise the limit or split the file."
        )
    x, sr = decode(data, name, max_duration_s=cfg.max_duration_s)
    channels, n = x.shape
    if n == 0:
        raise InvalidAudioError(
            f"{name}: no audio samples after decoding (a valid header with empty data); "
            "expected at least some audio. Re-export the file."
        )
    duration = n / sr
    if duration > cfg.max_duration_s:
        raise AudioTooLongError(
            f"{name}: {duration:.1f} s of audio, over the limit of {cfg.max_duration_s:.1f} s "
            "(AudioConfig.max_duration_s); raise the limit or split the file."
        )
    mono = to_mono(x)
    # max/min propagate NaN and keep Inf: two passes, no temporary array.
    hi, lo = float(mono.max()), float(mono.min())
    if not (math.isfinite(hi) and math.isfinite(lo)):
        raise InvalidAudioError(
            f"{name}: audio contains NaN or infinite sample values; expected finite samples. "
            "The file was written by a broken process: re-export it."
        )
    if duration < cfg.min_duration_s:
        raise AudioTooShortError(
            f"{name}: {duration:.3f} s of audio, shorter than the minimum "
            f"{cfg.min_duration_s} s (AudioConfig.min_duration_s); too little to judge."
        )
    peak = max(hi, -lo)
    if peak < cfg.silence_peak:
        raise InvalidAudioError(
            f"{name}: digital silence: peak amplitude {peak:.3g} after mix-down to mono is "
            f"below {cfg.silence_peak:.3g} (AudioConfig.silence_peak); nothing to judge. "
            "Check the recording (or opposite-phase stereo channels)."
        )
    if keep_channels and channels > 1:
        samples = np.stack([resample(np.ascontiguousarray(c), sr, cfg.sample_rate) for c in x])
    else:
        samples = resample(mono, sr, cfg.sample_rate)
    if samples.size == 0:
        raise AudioTooShortError(f"{name}: no samples left after resampling {n} samples")
    band, db = measure_band(to_mono(samples), cfg.sample_rate)
    return DecodedAudio(samples=samples, sample_rate_in=sr, channels=channels, duration_s=duration,
                        band=band, upper_band_db=db)


def load_path(uri: str, cfg: AudioConfig) -> DecodedAudio:
    """:func:`load` a local path or ``s3://`` URI (size checked before reading).

    Raises
    ------
    FileReadError
        The file cannot be read (missing, permissions, not a regular file, storage fault).
    """
    # The one reader of input files (regular files only, size limit, storage retries);
    # imported here so that decoding alone never loads the storage layer (fsspec).
    from spoofray.reader import read_item_bytes

    data = read_item_bytes({"uri": uri}, FeatureConfig(audio=cfg))
    return load(data, uri, cfg)
