"""The Whisper front-end: the CTranslate2 file reader, Whisper's log-mel, the numpy encoder
checked against ctranslate2 itself, and the 'whisper' feature kind."""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest

from spoofray import features, whisper
from spoofray.config import AudioConfig, FeatureConfig
from spoofray.errors import ConfigError
from spoofray.models import ml

SR = 16_000


def _ct2_file(path, variables: dict[str, np.ndarray], *, version=6, spec="WhisperSpec") -> bytes:
    """A CTranslate2 model file written byte by byte as its layout says."""

    def text(s: str) -> bytes:
        return struct.pack("<H", len(s) + 1) + s.encode() + b"\0"

    blob = struct.pack("<I", version) + text(spec) + struct.pack("<II", 3, len(variables))
    ids = {"float32": 0, "int8": 1, "int16": 2, "int32": 3, "float16": 4}
    for name, arr in variables.items():
        blob += text(name) + struct.pack("<B", arr.ndim)
        blob += b"".join(struct.pack("<I", d) for d in arr.shape)
        blob += struct.pack("<BI", ids[arr.dtype.name], arr.nbytes) + arr.tobytes()
    blob += struct.pack("<I", 0)
    path.write_bytes(blob)
    return blob


def test_reads_the_variables_under_a_prefix_with_their_shapes_and_dtypes(tmp_path):
    a = np.arange(6, dtype=np.float16).reshape(2, 3)
    b = np.array([7, -1], np.int16)
    blob = _ct2_file(tmp_path / "m.bin", {"encoder/a": a, "decoder/x": np.zeros(4, np.float32),
                                          "encoder/b": b})
    out = whisper.read_ct2_variables(tmp_path / "m.bin", sha256=hashlib.sha256(blob).hexdigest())
    assert sorted(out) == ["a", "b"]
    assert out["a"].dtype == np.float16 and out["a"].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert out["b"].tolist() == [7, -1]


def test_a_file_that_is_not_the_pinned_one_is_refused_by_hash(tmp_path):
    _ct2_file(tmp_path / "m.bin", {"encoder/a": np.zeros(2, np.float32)})
    with pytest.raises(whisper.ModelFileError, match="sha256 .*expected 1a5afae0"):
        whisper.read_ct2_variables(tmp_path / "m.bin")


@pytest.mark.parametrize("kwargs, message", [
    ({"version": 5}, "version 5 and spec 'WhisperSpec'"),
    ({"spec": "TransformerSpec"}, "spec 'TransformerSpec'"),
])
def test_another_kind_of_ct2_file_is_refused(tmp_path, kwargs, message):
    _ct2_file(tmp_path / "m.bin", {"encoder/a": np.zeros(2, np.float32)}, **kwargs)
    with pytest.raises(whisper.ModelFileError, match=message):
        whisper.read_ct2_variables(tmp_path / "m.bin", sha256=None)


def test_a_truncated_file_says_where_it_ends(tmp_path):
    blob = _ct2_file(tmp_path / "m.bin", {"encoder/a": np.zeros(100, np.float32)})
    (tmp_path / "m.bin").write_bytes(blob[:200])
    with pytest.raises(whisper.ModelFileError, match="'encoder/a' runs past the end"):
        whisper.read_ct2_variables(tmp_path / "m.bin", sha256=None)


def _reference_log_mel(x: np.ndarray) -> np.ndarray:
    """Whisper's ``log_mel_spectrogram`` written out frame by frame from its definition."""
    import librosa

    n_fft, hop = 400, 160
    padded = np.pad(x.astype(np.float64), n_fft // 2, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    n_frames = 1 + len(x) // hop
    power = np.array([np.abs(np.fft.rfft(padded[i * hop:i * hop + n_fft] * window)) ** 2
                      for i in range(n_frames)])[:-1]  # the reference drops the last frame
    mel = librosa.filters.mel(sr=SR, n_fft=n_fft, n_mels=80) @ power.T
    log_spec = np.log10(np.maximum(mel, 1e-10))
    return (np.maximum(log_spec, log_spec.max() - 8.0) + 4.0) / 4.0


def test_whisper_log_mel_follows_the_reference_definition():
    rng = np.random.default_rng(3)
    t = np.arange(SR) / SR
    x = (0.3 * np.sin(2 * np.pi * 1000 * t) + 0.01 * rng.standard_normal(SR)).astype(np.float32)
    got = features.whisper_log_mel(x[None])[0]
    assert got.shape == (80, 100)
    np.testing.assert_allclose(got, _reference_log_mel(x), atol=2e-4)
    # The 1 kHz tone is loudest in the mel band whose centre is nearest 1 kHz, and the
    # floor is 8 decades (2 units after the mapping) below the maximum.
    import librosa

    centres = librosa.mel_frequencies(n_mels=82, fmax=SR / 2)[1:-1]
    assert got[:, 50].argmax() == np.abs(centres - 1000).argmin()
    assert got.min() >= got.max() - 2.0 - 1e-6


@pytest.fixture(scope="module")
def encoder():
    try:
        return whisper.load_encoder()
    except whisper.FrontEndUnavailableError as e:
        pytest.skip(str(e))


def test_the_encoder_has_whisper_tiny_dimensions(encoder):
    assert (encoder.n_layers, encoder.n_heads, encoder.d_model, encoder.n_mels) == (4, 6, 384, 80)
    assert encoder.max_frames == 1500


def test_the_last_state_matches_ctranslate2_on_the_same_log_mel(encoder):
    ctranslate2 = pytest.importorskip("ctranslate2")
    rng = np.random.default_rng(0)
    t = np.arange(3 * SR) / SR
    chirp = 0.3 * np.sin(2 * np.pi * 220 * t * (1 + 0.3 * t)) + 0.02 * rng.standard_normal(t.size)
    mel = features.whisper_log_mel(np.stack([chirp, 0.2 * rng.standard_normal(t.size)]))
    ours = encoder.hidden_states(mel)
    assert ours.shape == (2, 5, 150, 384)
    model = ctranslate2.models.Whisper(str(whisper.model_path().parent), device="cpu",
                                       compute_type="float32", intra_threads=1)
    theirs = np.array(model.encode(ctranslate2.StorageView.from_array(mel), to_cpu=True))
    assert theirs.shape == (2, 150, 384)
    assert np.abs(ours[:, -1] - theirs).max() <= 1e-3 * np.abs(theirs).max()


def test_more_mel_frames_than_30_s_are_refused(encoder):
    with pytest.raises(ValueError, match="more than Whisper's 30 s"):
        encoder.hidden_states(np.zeros((1, 80, 3002), np.float32))


def test_the_whisper_kind_pools_each_state_over_the_window(encoder):
    cfg = FeatureConfig(audio=AudioConfig(window_s=1.0, hop_s=1.0), kinds=("lfcc", "whisper"))
    rng = np.random.default_rng(1)
    windows = (0.1 * rng.standard_normal((3, SR))).astype(np.float32)
    out = features.extract(windows, cfg)
    assert out["whisper"].shape == (3, *cfg.feature_shapes()["whisper"]) == (3, 5, 768)
    states = encoder.hidden_states(features.whisper_log_mel(windows[1:2]))[0]  # (5, 50, 384)
    np.testing.assert_allclose(out["whisper"][1, :, :384], states.mean(axis=1), rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(out["whisper"][1, :, 384:], states.std(axis=1), rtol=1e-5,
                               atol=1e-5)
    x = ml.design_matrix(out, ["whisper_l2", "lfcc_pooled"])
    assert x.shape == (3, 768 + 120)
    np.testing.assert_array_equal(x[:, :768], out["whisper"][:, 2])


def test_the_whisper_kind_needs_16_khz():
    cfg = FeatureConfig(audio=AudioConfig(sample_rate=8000), kinds=("whisper",))
    with pytest.raises(ConfigError, match="needs 16 kHz windows; cfg.audio gives 8000 Hz"):
        features.extract(np.zeros((1, cfg.audio.window_samples), np.float32), cfg)
