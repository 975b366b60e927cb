"""Speech written as telephony stores it: 8 kHz files in the codecs of call recorders.

A telephone copy made in memory (band-passed, coded, resampled back to 16 kHz and saved
as 16 kHz FLAC) is not what a user scores: a real 8 kHz file is decoded at 8 kHz and
upsampled by :func:`spoofray.audio.load`, and the two differ exactly where a model looks.
So narrowband training and evaluation copies are real files, written here and read back
through ``audio.load`` like any input.

Codecs (:data:`TELEPHONE_FILE_CODECS`): 16-bit PCM, G.711 mu-law and A-law WAV, GSM 06.10
WAV (libsndfile) and Opus at 8 kHz (libsndfile), and mu-law WAV written by ffmpeg. AMR-NB
is left out: Debian's ffmpeg has no AMR-NB encoder (libopencore-amrnb decodes only).
"""

from __future__ import annotations

import io
import shutil
import subprocess

import numpy as np

from spoofray.config import TELEPHONE_BAND_HZ
from spoofray.errors import ConfigError

#: The rate of a narrowband call.
TELEPHONE_RATE = 8000
#: Codec -> (file extension, writer, libsndfile subtype or ffmpeg encoder).
TELEPHONE_FILE_CODECS = {
    "pcm16": (".wav", "soundfile", "PCM_16"),
    "mulaw": (".wav", "soundfile", "ULAW"),
    "alaw": (".wav", "soundfile", "ALAW"),
    "gsm": (".wav", "soundfile", "GSM610"),
    "opus": (".opus", "soundfile", "OPUS"),
    "mulaw-ffmpeg": (".wav", "ffmpeg", "pcm_mulaw"),
}
_FFMPEG_TIMEOUT_S = 60


def telephone_file(y: np.ndarray, sr: int, codec: str, *, band_pass: bool = True
                   ) -> tuple[bytes, str]:
    """Mono audio → the bytes of an 8 kHz telephone file, and its extension.

    Parameters
    ----------
    y : ndarray, shape (n,)
        Mono audio at ``sr`` (8 kHz or more).
    codec : one of :data:`TELEPHONE_FILE_CODECS`
    band_pass : bool
        Band-pass to the telephone band (:data:`~spoofray.config.TELEPHONE_BAND_HZ`) first,
        as a handset and the network do; without it only the resampler's low-pass (a VoIP
        leg stored as G.711).

    Raises
    ------
    CodecUnavailableError
        An ffmpeg codec and no ffmpeg on PATH.
    """
    import soundfile as sf

    from spoofray.audio import resample
    from spoofray.augment import band_limit

    if codec not in TELEPHONE_FILE_CODECS:
        raise ConfigError(f"unknown telephone file codec {codec!r}; choose from "
                          f"{list(TELEPHONE_FILE_CODECS)}")
    if sr < TELEPHONE_RATE:
        raise ValueError(f"a telephone file needs audio at 8 kHz or more, got {sr} Hz")
    y = np.asarray(y, dtype=np.float32)
    if band_pass:
        y = band_limit(y, sr, high_hz=TELEPHONE_BAND_HZ[1], low_hz=TELEPHONE_BAND_HZ[0])
    narrow = np.clip(resample(y, sr, TELEPHONE_RATE), -1.0, 1.0)
    ext, writer, subtype = TELEPHONE_FILE_CODECS[codec]
    if writer == "soundfile":
        buf = io.BytesIO()
        sf.write(buf, narrow, TELEPHONE_RATE, format="OGG" if ext == ".opus" else "WAV",
                 subtype=subtype)
        return buf.getvalue(), ext
    return _ffmpeg_file(narrow, subtype, codec), ext


def _ffmpeg_file(narrow: np.ndarray, encoder: str, codec: str) -> bytes:
    import soundfile as sf

    from spoofray.augment import CodecUnavailableError

    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise CodecUnavailableError(f"the telephone file codec {codec!r} is written by ffmpeg, "
                                    "which is not on PATH (apt-get install ffmpeg)")
    wav = io.BytesIO()
    sf.write(wav, narrow, TELEPHONE_RATE, format="WAV", subtype="FLOAT")
    cmd = [ffmpeg, "-nostdin", "-loglevel", "error", "-f", "wav", "-i", "pipe:0",
           "-ar", str(TELEPHONE_RATE), "-ac", "1", "-c:a", encoder, "-f", "wav", "pipe:1"]
    proc = subprocess.run(cmd, input=wav.getvalue(), capture_output=True,
                          timeout=_FFMPEG_TIMEOUT_S, check=False)
    if proc.returncode != 0 or not proc.stdout:
        raise RuntimeError(f"ffmpeg could not write a {codec} telephone file (exit "
                           f"{proc.returncode}): {proc.stderr.decode(errors='replace')[-300:]}")
    return proc.stdout
