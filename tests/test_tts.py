"""Training spoofs that say a clip's words: Whisper tiny.en's transcript (ctranslate2) and
the offline TTS engines, real models end to end; make_spoofs --tts on a real local Ray."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pandas as pd
import pytest

from spoofray import transcribe
from spoofray.augment import CopysynConfig, tts
from spoofray.errors import ConfigError
from spoofray.pipeline.make_spoofs import MakeSpoofsConfig, make_spoofs
from spoofray.testing import write_wav

pytest.importorskip("ctranslate2")
SENTENCE = "The quick brown fox jumps over the lazy dog."


def _installed(engine: str) -> bool:
    try:
        tts.check_available(engine)
    except tts.GeneratorUnavailableError:
        return False
    return True


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


def test_whisper_tokens_decode_to_text_special_tokens_dropped():
    # Byte-level BPE: "Ġ" is the space byte, "Ã©" the two UTF-8 bytes of "é".
    assert transcribe.decode_tokens(["ĠThe", "Ġquick", "<|endoftext|>"]) == "The quick"
    assert transcribe.decode_tokens(["ĠA", "Ġcaf", "Ã©", "."]) == "A café."
    assert transcribe.decode_tokens([]) == ""


def test_a_transcript_is_trusted_only_with_words_confidence_and_speech():
    assert transcribe.Transcript("Hello there.", -0.2, 0.05).usable
    assert not transcribe.Transcript("", -0.1, 0.0).usable
    assert not transcribe.Transcript("You", -3.5, 0.05).usable  # below Whisper's -1
    assert not transcribe.Transcript("you", -0.7, 0.95).usable  # a silent window


def test_noise_and_silence_get_no_trusted_transcript():
    rng = np.random.default_rng(0)
    assert not transcribe.transcribe(0.1 * rng.standard_normal(32_000).astype(np.float32),
                                     16_000).usable
    assert not transcribe.transcribe(np.zeros(16_000, np.float32), 16_000).usable


def test_espeak_ipa_maps_to_kokoro_letters():
    # Diphthongs become Kokoro's one-letter symbols, r its ɹ, the tie marks go.
    assert tts.kokoro_phonemes("bɹˈa^ʊn fˈɑːks") == "bɹˈWn fˈɑːks"
    assert tts.kokoro_phonemes("lˈe^ɪzi ˌo^ʊvɚ d^ʒˈʌmps") == "lˈAzi ˌOvəɹ ʤˈʌmps"


@pytest.mark.parametrize("engine", tts.TTS_ENGINES)
def test_each_engine_says_the_words_whisper_hears_back(engine):
    if not _installed(engine):
        pytest.skip(f"{engine} is not installed ({tts.REQUIREMENTS[engine]})")
    y, sr, voice = tts.synthesize(SENTENCE, engine, np.random.default_rng(3))
    assert y.dtype == np.float32 and y.ndim == 1 and voice
    assert 1.5 < len(y) / sr < 8.0, len(y) / sr  # nine words at a speaking rate
    heard = _words(transcribe.transcribe(y, sr).text)
    # espeak-ng's formant voices are the hardest to hear; the neural ones come back whole.
    need = 0.5 if engine == "espeak" else 0.8
    assert len(heard & _words(SENTENCE)) >= need * len(_words(SENTENCE)), heard


def test_voices_and_speeds_are_drawn_from_the_generator():
    if not _installed("flite"):
        pytest.skip("flite is not installed")
    voices = {tts.synthesize("Hello.", "flite", np.random.default_rng(s))[2] for s in range(6)}
    assert len(voices) >= 4
    again = [tts.synthesize("Hello.", "flite", np.random.default_rng(1))[2] for _ in range(2)]
    assert again[0] == again[1]


def test_unknown_or_missing_engines_are_refused_before_any_work(monkeypatch, tmp_path):
    with pytest.raises(ConfigError, match="unknown TTS engine 'festival'"):
        CopysynConfig(vocoders=(), tts=("festival",))
    with pytest.raises(ConfigError, match="makes no spoofs"):
        CopysynConfig(vocoders=(), tts=())
    monkeypatch.setenv("PATH", str(tmp_path))  # no flite, no espeak-ng on it
    with pytest.raises(tts.GeneratorUnavailableError, match="flite.*apt-get install flite"):
        CopysynConfig(vocoders=(), tts=("flite",)).check_runnable()


@pytest.mark.skipif(not (shutil.which("flite") and shutil.which("espeak-ng")),
                    reason="needs flite and espeak-ng (make system-deps)")
def test_make_spoofs_tts_says_each_clips_words_and_skips_clips_without_words(ray_session,
                                                                             tmp_path):
    sr = 16_000
    calls = tmp_path / "calls"
    calls.mkdir()
    # A "real" talker (flite's slt voice stands in for a recording) and a noise clip.
    speech, speech_sr, _ = tts.synthesize(SENTENCE, "flite", np.random.default_rng(4))
    write_wav(calls / "talk.wav", speech, speech_sr)
    write_wav(calls / "hiss.wav",
              0.05 * np.random.default_rng(0).standard_normal(2 * sr).astype(np.float32), sr)
    pd.DataFrame({"path": ["talk.wav", "hiss.wav"], "label": ["bonafide", "bonafide"],
                  "speaker": ["ann", "bob"]}).to_csv(calls / "manifest.csv", index=False)
    result = make_spoofs(MakeSpoofsConfig(
        input=str(calls / "manifest.csv"), output=str(tmp_path / "out"), items_per_task=1,
        copysyn=CopysynConfig(vocoders=(), tts=("espeak",), channels=("none", "noise:20"))))
    # talk: bona fide + its espeak copy, through 2 channels; hiss: bona fide only.
    assert result["counts"]["files_written"] == 6
    rows = pd.read_csv(result["manifest"], keep_default_na=False)
    spoof = rows[rows["label"] == "spoof"]
    assert len(spoof) == 2 and set(spoof["attack"]) == {"tts:espeak"}
    assert spoof["speaker"].str.startswith("tts:espeak:").all()
    assert (spoof["group"] == str(calls / "talk.wav")).all()  # stays with its source
    assert (spoof["license"] == tts.LICENSES["espeak"]).all()
    talk = rows[rows["group"] == str(calls / "talk.wav")]
    assert len(_words(talk["text"].iloc[0]) & _words(SENTENCE)) >= 7, talk["text"].iloc[0]
    hiss = rows[rows["group"] == str(calls / "hiss.wav")]
    assert hiss["label"].tolist() == ["bonafide", "bonafide"] and (hiss["text"] == "").all()
