"""spoofray.audio on generated signals with hand-checked answers."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from spoofray import audio, errors, testing
from spoofray.config import AudioConfig, FeatureConfig
from spoofray.errors import ConfigError

HAS_FFMPEG = shutil.which("ffmpeg") is not None and shutil.which("ffprobe") is not None
needs_ffmpeg = pytest.mark.skipif(not HAS_FFMPEG, reason="ffmpeg not installed (make system-deps)")
CFG = AudioConfig()


def encode(x: np.ndarray, sr: int, fmt: str, subtype: str) -> bytes:
    """``x`` (n,) or (channels, n) -> encoded bytes through libsndfile."""
    buf = io.BytesIO()
    sf.write(buf, x.T if x.ndim == 2 else x, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def dominant_hz(x: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * sr / len(x))


# --- decode: round trips ------------------------------------------------------------------

# subtype -> max abs error of one PCM quantisation step (float formats are exact in float32).
LOSSLESS = [
    ("WAV", "PCM_U8", 1 / 128),
    ("WAV", "PCM_16", 1 / 2**15),
    ("WAV", "PCM_24", 1 / 2**23),
    ("WAV", "PCM_32", 1 / 2**31 + 1e-7),  # float32 itself has 24 bits of mantissa
    ("WAV", "FLOAT", 0.0),
    ("WAV", "DOUBLE", 6e-8),  # float64 -> float32 rounding
    ("FLAC", "PCM_16", 1 / 2**15),
    ("FLAC", "PCM_24", 1 / 2**23),
]


@pytest.mark.parametrize("fmt,subtype,tol", LOSSLESS, ids=[f"{f}-{s}" for f, s, _ in LOSSLESS])
def test_lossless_round_trip_within_one_quantisation_step(fmt, subtype, tol):
    x = testing.chirp(100, 4000, 0.5, 16_000, amp=0.9)
    samples, sr = audio.decode(encode(x, 16_000, fmt, subtype), f"x.{fmt.lower()}")
    assert sr == 16_000
    assert samples.dtype == np.float32 and samples.shape == (1, len(x))
    assert np.max(np.abs(samples[0] - x)) <= tol


LOSSY = [("OGG", "VORBIS", "ogg", 16_000), ("MP3", "MPEG_LAYER_III", "mp3", 16_000),
         ("OGG", "OPUS", "opus", 48_000)]  # fmt: skip


@pytest.mark.parametrize("fmt,subtype,ext,sr", LOSSY, ids=[e for *_, e, _ in LOSSY])
def test_lossy_round_trip_keeps_frequency_level_and_length(fmt, subtype, ext, sr):
    x = testing.sine(440.0, 1.0, sr, amp=0.5)
    samples, sr_out = audio.decode(encode(x, sr, fmt, subtype), f"tone.{ext}")
    assert sr_out == sr and samples.shape[0] == 1
    # Codec delay/padding: at most ~ two MP3 frames either way.
    assert abs(samples.shape[1] - len(x)) <= 2 * 1152
    mid = samples[0, sr // 4 : 3 * sr // 4]
    assert abs(dominant_hz(mid, sr) - 440.0) <= 2.0
    rms = float(np.sqrt(np.mean(mid**2)))
    assert rms == pytest.approx(0.5 / np.sqrt(2), rel=0.1)


def test_stereo_decodes_channel_first_with_left_first():
    left, right = testing.sine(300, 0.5, 8_000), testing.sine(700, 0.5, 8_000, amp=0.25)
    samples, sr = audio.decode(encode(np.stack([left, right]), 8_000, "WAV", "FLOAT"), "s.wav")
    assert sr == 8_000 and samples.shape == (2, 4_000)
    np.testing.assert_array_equal(samples[0], left)
    np.testing.assert_array_equal(samples[1], right)


@needs_ffmpeg
def test_m4a_decodes_through_ffmpeg(tmp_path):
    x = testing.sine(1000.0, 1.0, 44_100)
    testing.write_wav(tmp_path / "in.wav", np.stack([x, x]), 44_100)
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(tmp_path / "in.wav"),
                    "-c:a", "aac", str(tmp_path / "out.m4a")], check=True)  # fmt: skip
    samples, sr = audio.decode((tmp_path / "out.m4a").read_bytes(), "clip.m4a")
    assert sr == 44_100 and samples.shape[0] == 2
    assert abs(samples.shape[1] - 44_100) <= 2 * 1024  # AAC priming/padding frames
    assert abs(dominant_hz(samples[0, 11_025:33_075], 44_100) - 1000.0) <= 2.0
    with pytest.raises(errors.AudioTooLongError, match="refused before decoding"):
        audio.load((tmp_path / "out.m4a").read_bytes(), "clip.m4a", AudioConfig(max_duration_s=0.5))


def test_m4a_without_ffmpeg_names_ffmpeg_and_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty PATH: no ffmpeg to be found
    with pytest.raises(errors.UnsupportedFormatError) as info:
        audio.decode(b"\0\0\0\x20ftypM4A " + bytes(200), "calls/a.m4a")
    message = str(info.value)
    assert "calls/a.m4a" in message and "ffmpeg" in message and "apt-get install ffmpeg" in message


@pytest.mark.parametrize("path_has_ffmpeg", [True, False])
def test_non_audio_is_a_decode_error_with_or_without_ffmpeg(path_has_ffmpeg, monkeypatch, tmp_path):
    if path_has_ffmpeg and not HAS_FFMPEG:
        pytest.skip("ffmpeg not installed (make system-deps)")
    if not path_has_ffmpeg:
        monkeypatch.setenv("PATH", str(tmp_path))
    for name, data in [("notes.wav", b"plain text, no audio\n" * 30),
                       ("noise.flac", np.random.default_rng(1).bytes(3000))]:  # fmt: skip
        with pytest.raises(errors.AudioDecodeError, match=name):
            audio.decode(data, name)


# --- mix-down and resampling ---------------------------------------------------------------


def test_to_mono_is_the_channel_mean():
    x = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, -1.0]], dtype=np.float32)
    np.testing.assert_array_equal(audio.to_mono(x), [2.0, 2.0, 1.0])


def test_to_mono_of_one_channel_is_a_view():
    x = np.arange(5, dtype=np.float32)[None, :]
    mono = audio.to_mono(x)
    assert mono.shape == (5,) and np.shares_memory(mono, x)


def test_resample_1khz_sine_44k1_to_16k_keeps_frequency_and_peak():
    x = testing.sine(1000.0, 1.0, 44_100, amp=0.5)
    y = audio.resample(x, 44_100, 16_000)
    assert y.dtype == np.float32 and abs(len(y) - 16_000) <= 1
    middle = y[1_000:15_000]  # away from the filter's edge transients
    assert np.max(np.abs(middle)) == pytest.approx(0.5, rel=0.01)
    # 1 s at 16 kHz: FFT bins are 1 Hz apart.
    assert dominant_hz(y[:16_000], 16_000) == pytest.approx(1000.0, abs=1.0)


def test_resample_removes_content_above_the_new_nyquist():
    x = testing.sine(7000.0, 1.0, 44_100, amp=0.5)  # above 4 kHz, the Nyquist of 8 kHz
    y = audio.resample(x, 44_100, 8_000)
    assert np.max(np.abs(y[500:-500])) < 0.01


def test_resample_same_rate_returns_input_unchanged():
    x = testing.sine(100.0, 0.1, 16_000)
    assert audio.resample(x, 16_000, 16_000) is x


# --- load: the whole step ------------------------------------------------------------------


def test_load_stereo_44k1_gives_mono_16k_and_file_facts():
    x = testing.sine(1000.0, 2.0, 44_100, amp=0.4)
    data = encode(np.stack([x, 0.5 * x]), 44_100, "FLAC", "PCM_16")
    decoded = audio.load(data, "a.flac", CFG)
    assert decoded.sample_rate_in == 44_100 and decoded.channels == 2
    assert decoded.duration_s == pytest.approx(2.0)
    assert decoded.samples.dtype == np.float32 and abs(len(decoded.samples) - 32_000) <= 1
    # mean of L = x and R = x / 2 is 0.75 x: peak 0.3
    assert np.max(np.abs(decoded.samples[2_000:-2_000])) == pytest.approx(0.3, rel=0.01)


def test_opposite_phase_stereo_mixes_to_silence_and_is_refused():
    x = testing.sine(500.0, 1.0, 16_000)
    data = encode(np.stack([x, -x]), 16_000, "WAV", "FLOAT")
    with pytest.raises(errors.InvalidAudioError, match="silence"):
        audio.load(data, "phase.wav", CFG)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_refused(bad):
    x = testing.sine(200.0, 0.5, 16_000)
    x[123] = bad
    with pytest.raises(errors.InvalidAudioError, match="NaN or infinite"):
        audio.load(encode(x, 16_000, "WAV", "FLOAT"), "bad.wav", CFG)


def test_float_wav_above_full_scale_passes_through_unscaled():
    x = testing.sine(200.0, 0.5, 16_000, amp=2.0)
    decoded = audio.load(encode(x, 16_000, "WAV", "FLOAT"), "loud.wav", CFG)
    assert np.max(np.abs(decoded.samples)) == pytest.approx(2.0, rel=1e-3)


def test_duration_limits_are_config_driven():
    data = encode(testing.sine(300.0, 0.5, 16_000), 16_000, "WAV", "PCM_16")
    assert audio.load(data, "x.wav", AudioConfig(min_duration_s=0.5)).duration_s == 0.5
    with pytest.raises(errors.AudioTooShortError, match="x.wav"):
        audio.load(data, "x.wav", AudioConfig(min_duration_s=0.6))
    with pytest.raises(errors.AudioTooLongError, match="x.wav"):
        audio.load(data, "x.wav", AudioConfig(max_duration_s=0.4))


def test_file_size_limit():
    data = encode(testing.sine(300.0, 0.5, 16_000), 16_000, "WAV", "PCM_16")
    with pytest.raises(errors.AudioTooLongError, match="bytes"):
        audio.load(data, "big.wav", AudioConfig(max_file_bytes=len(data) - 1))


def test_broken_files_raise_their_expected_errors(tmp_path):
    expected = testing.make_broken_files(tmp_path)
    assert len(expected) >= 7
    for name, error_name in expected.items():
        with pytest.raises(errors.InputFileError) as info:
            audio.load((tmp_path / name).read_bytes(), name, CFG)
        assert type(info.value).__name__ == error_name, (name, str(info.value))
        assert name in str(info.value)


@pytest.mark.parametrize(
    "rate,channels", [(500, 1), (800_000, 1), (16_000, 65)], ids=["500Hz", "800kHz", "65ch"]
)
def test_absurd_rate_or_channel_count_is_refused(rate, channels):
    n_frames = 200
    data = testing.wav_header(sample_rate=rate, channels=channels, bits=16, n_frames=n_frames)
    data += np.full(n_frames * channels, 1000, dtype="<i2").tobytes()
    with pytest.raises(errors.InvalidAudioError, match="odd.wav"):
        audio.load(data, "odd.wav", CFG)


# --- refusing long files from the header -------------------------------------------------


def test_wav_header_claiming_five_hours_is_refused_as_too_long():
    # 44 bytes that claim 5 h at 16 kHz: refused from the header, nothing to decode.
    data = testing.wav_header(sample_rate=16_000, channels=1, bits=16, n_frames=16_000 * 18_000)
    with pytest.raises(errors.AudioTooLongError, match="refused before decoding"):
        audio.load(data, "long.wav", CFG)


def flac_metadata_end(data: bytes) -> int:
    offset = 4  # after b"fLaC"
    while True:
        is_last, length = data[offset] & 0x80, int.from_bytes(data[offset + 1 : offset + 4], "big")
        offset += 4 + length
        if is_last:
            return offset


def test_long_flac_is_refused_from_its_header_without_decoding():
    data = bytearray(encode(testing.voiced(120.0, 3.0, 16_000), 16_000, "FLAC", "PCM_16"))
    # Destroy every audio frame: decoding it would fail.
    start = flac_metadata_end(bytes(data))
    data[start:] = np.random.default_rng(0).bytes(len(data) - start)
    with pytest.raises(errors.AudioDecodeError):
        audio.load(bytes(data), "ruined.flac", CFG)  # the corruption is real ...
    with pytest.raises(errors.AudioTooLongError, match="refused before decoding"):
        audio.load(bytes(data), "ruined.flac", AudioConfig(max_duration_s=2.0))  # ... never read


def test_flac_header_lying_about_ten_hours_is_refused():
    data = bytearray(encode(testing.voiced(120.0, 1.0, 16_000), 16_000, "FLAC", "PCM_16"))
    # STREAMINFO starts at byte 8; bytes 18..26 hold rate(20) channels(3) bits(5) total(36).
    (packed,) = struct.unpack_from(">Q", data, 18)
    packed = (packed & ~((1 << 36) - 1)) | (16_000 * 36_000)
    struct.pack_into(">Q", data, 18, packed)
    with pytest.raises(errors.AudioTooLongError, match="liar.flac"):
        audio.load(bytes(data), "liar.flac", CFG)


def test_flac_without_a_length_in_its_header_is_read_to_the_end():
    # Streamed FLAC encoders write total_samples = 0 ("unknown"); libsndfile then reports
    # an unbounded frame count and the decoder must read block by block.
    x = testing.voiced(120.0, 3.0, 16_000)
    data = bytearray(encode(x, 16_000, "FLAC", "PCM_16"))
    (packed,) = struct.unpack_from(">Q", data, 18)
    struct.pack_into(">Q", data, 18, packed & ~((1 << 36) - 1))
    samples, sr = audio.decode(bytes(data), "stream.flac")
    assert sr == 16_000 and samples.shape == (1, 48_000)
    assert np.max(np.abs(samples[0] - x)) <= 1 / 2**15
    assert audio.load(bytes(data), "stream.flac", CFG).duration_s == pytest.approx(3.0)
    with pytest.raises(errors.AudioTooLongError, match="stream.flac"):
        audio.load(bytes(data), "stream.flac", AudioConfig(max_duration_s=1.0))


# --- load_path -----------------------------------------------------------------------------


def test_load_path_local_and_missing(tmp_path):
    path = testing.write_wav(tmp_path / "a.wav", testing.sine(440.0, 0.5, 8_000), 8_000)
    decoded = audio.load_path(path, CFG)
    assert decoded.sample_rate_in == 8_000 and abs(len(decoded.samples) - 8_000) <= 1
    missing = str(tmp_path / "nope.wav")
    with pytest.raises(errors.FileReadError, match="nope.wav"):
        audio.load_path(missing, CFG)
    with pytest.raises(errors.AudioTooLongError):
        audio.load_path(path, AudioConfig(max_file_bytes=100))


def test_load_path_reads_s3(s3_bucket):
    from spoofray import storage

    data = encode(testing.sine(440.0, 0.5, 16_000), 16_000, "FLAC", "PCM_16")
    uri = f"{s3_bucket}/calls/a.flac"
    storage.write_bytes_atomic(uri, data)
    assert audio.load_path(uri, CFG).duration_s == pytest.approx(0.5)
    with pytest.raises(errors.FileReadError, match="missing.flac"):
        audio.load_path(f"{s3_bucket}/missing.flac", CFG)


# --- windows -------------------------------------------------------------------------------


def test_windows_hand_computed_small_case():
    cfg = AudioConfig(sample_rate=10, window_s=0.4, hop_s=0.2)  # W = 4, H = 2
    x = np.arange(1, 8, dtype=np.float32)  # n = 7 -> 1 + ceil(3 / 2) = 3 windows
    windows, start_s, end_s = audio.frame_windows(x, cfg)
    np.testing.assert_array_equal(windows, [[1, 2, 3, 4], [3, 4, 5, 6], [5, 6, 7, 0]])
    np.testing.assert_allclose(start_s, [0.0, 0.2, 0.4])
    np.testing.assert_allclose(end_s, [0.4, 0.6, 0.7])


@pytest.mark.parametrize(
    "n,expected_count,expected_ends",
    [
        (16_000, 1, [1.0]),  # shorter than a window: one padded window
        (64_000, 1, [4.0]),  # exactly one window
        (64_001, 2, [4.0, 64_001 / 16_000]),  # one sample more: a second window
        (160_000, 4, [4.0, 6.0, 8.0, 10.0]),  # 10 s: 1 + ceil(6 / 2)
    ],
)
def test_windows_default_config(n, expected_count, expected_ends):
    windows, start_s, end_s = audio.frame_windows(np.ones(n, np.float32), CFG)
    assert windows.shape == (expected_count, 64_000) and windows.dtype == np.float32
    np.testing.assert_allclose(start_s, 2.0 * np.arange(expected_count))
    np.testing.assert_allclose(end_s, expected_ends)
    assert windows.sum() == pytest.approx(sum(min(64_000, n - 32_000 * i)
                                              for i in range(expected_count)))  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(min_value=0, max_value=400),
    w=st.integers(min_value=1, max_value=60),
    hop_fraction=st.floats(min_value=0.01, max_value=1.0),
)
def test_windows_properties(n, w, hop_fraction):
    h = max(1, min(w, int(round(w * hop_fraction))))
    cfg = AudioConfig(sample_rate=100, window_s=w / 100, hop_s=h / 100)
    assert (cfg.window_samples, cfg.hop_samples) == (w, h)
    x = np.arange(1, n + 1, dtype=np.float32)  # non-zero, so padding is visible
    windows, start_s, end_s = audio.frame_windows(x, cfg)

    count = 1 if n <= w else 1 + int(np.ceil((n - w) / h))
    assert count == audio.window_count(n, cfg)
    assert windows.shape == (count, w) and windows.flags["C_CONTIGUOUS"]
    starts = np.arange(count) * h
    np.testing.assert_allclose(start_s, starts / 100)
    np.testing.assert_allclose(end_s, np.minimum(starts + w, n) / 100)
    # Every sample is in some window, at its place; everything past the end is zero.
    covered = np.zeros(n, bool)
    for i, start in enumerate(starts):
        real = max(0, min(w, n - start))
        np.testing.assert_array_equal(windows[i, :real], x[start : start + real])
        assert not windows[i, real:].any()
        covered[start : start + real] = True
    assert covered.all()
    # No window is all padding (the last one starts inside the audio).
    assert n == 0 or starts[-1] < n


def test_windows_reject_multichannel():
    with pytest.raises(ValueError, match="mono"):
        audio.frame_windows(np.zeros((2, 100), np.float32), CFG)


# --- the generated signals themselves --------------------------------------------------------


def test_testing_signals_have_their_stated_frequency_and_peak():
    assert dominant_hz(testing.sine(250.0, 1.0, 8_000), 8_000) == pytest.approx(250.0, abs=1)
    assert np.max(np.abs(testing.voiced(150.0, 1.0, 16_000, amp=0.7))) == pytest.approx(0.7)
    assert dominant_hz(testing.voiced(150.0, 1.0, 16_000), 16_000) == pytest.approx(150, abs=1)
    noise = testing.white_noise(1.0, 16_000, amp=0.1, seed=3)
    assert np.std(noise) == pytest.approx(0.1, rel=0.05)
    np.testing.assert_array_equal(noise, testing.white_noise(1.0, 16_000, amp=0.1, seed=3))
    c = testing.chirp(100.0, 1000.0, 1.0, 8_000)
    assert dominant_hz(c[:1000], 8_000) < dominant_hz(c[-1000:], 8_000)


def test_write_wav_float_has_no_timestamp(tmp_path):
    # libsndfile stamps float WAVs with the time in a PEAK chunk; write_wav zeroes it so
    # generated files are byte-identical from run to run.
    x = testing.sine(300.0, 0.2, 16_000)
    data = open(testing.write_wav(tmp_path / "a.wav", x, 16_000, "FLOAT"), "rb").read()
    peak = data.index(b"PEAK")
    assert data[peak + 12 : peak + 16] == b"\0\0\0\0"
    raw = io.BytesIO()
    sf.write(raw, x, 16_000, format="WAV", subtype="FLOAT")
    assert raw.getvalue()[peak + 12 : peak + 16] != b"\0\0\0\0"  # libsndfile's own stamp
    samples, _ = audio.decode(data, "a.wav")
    np.testing.assert_array_equal(samples[0], x)


def test_repeat_padding_fills_a_short_clip_with_its_own_audio():
    cfg = AudioConfig(sample_rate=10, window_s=1.0, hop_s=0.5, pad="repeat")
    windows, start, end = audio.frame_windows(np.arange(1, 5, dtype=np.float32), cfg)
    np.testing.assert_array_equal(windows, [[1, 2, 3, 4, 1, 2, 3, 4, 1, 2]])
    np.testing.assert_array_equal(end, [0.4])  # the audio covered, not the padding


def test_repeat_padding_repeats_the_last_windows_own_audio():
    cfg = AudioConfig(sample_rate=4, window_s=1.0, hop_s=0.5, pad="repeat")
    windows, _, _ = audio.frame_windows(np.arange(1, 8, dtype=np.float32), cfg)  # 7 samples
    np.testing.assert_array_equal(windows, [[1, 2, 3, 4], [3, 4, 5, 6], [5, 6, 7, 5]])


def test_trim_cuts_quiet_edges_and_says_where_the_audio_starts():
    cfg = AudioConfig(sample_rate=1000, trim_db=40.0)
    tone = np.sin(2 * np.pi * 50 * np.arange(300) / 1000).astype(np.float32)
    quiet = np.full(200, 1e-4, np.float32)  # -77 dB against the tone
    x = np.concatenate([quiet, tone, quiet[:100]])
    kept, first = audio.trim_silence(x, cfg)
    assert first == 200 and len(kept) == 300
    np.testing.assert_array_equal(kept, tone)
    assert audio.trim_silence(x, AudioConfig(sample_rate=1000))[1] == 0


@pytest.mark.parametrize("kwargs, error", [({"pad": "mirror"}, "pad must be one of"),
                                           ({"trim_db": 0.0}, r"trim_db must be None or a number > 0, got 0.0")])
def test_bad_pad_and_trim_settings_are_refused(kwargs, error):
    with pytest.raises(ConfigError, match=error):
        AudioConfig(**kwargs)


def test_new_audio_settings_at_their_defaults_keep_old_config_hashes():
    # Datasets and bundles made before pad/trim_db existed must keep their identity.
    assert "pad" not in AudioConfig().to_dict() and "trim_db" not in AudioConfig().to_dict()
    assert FeatureConfig().config_hash() == FeatureConfig.from_dict(
        FeatureConfig().to_dict()).config_hash()
    changed = FeatureConfig(audio=AudioConfig(pad="repeat", trim_db=40.0))
    assert changed.to_dict()["audio"]["pad"] == "repeat"
    assert changed.config_hash() != FeatureConfig().config_hash()
    assert FeatureConfig.from_dict(changed.to_dict()) == changed


def test_trimmed_windows_keep_times_of_the_original_file(tmp_path):
    from spoofray.featurize import featurize_file

    sr = 16_000
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(3 * sr) / sr)).astype(np.float32)
    x = np.concatenate([np.full(sr, 1e-5, np.float32), tone])  # 1 s near-silence, 3 s tone
    path = tmp_path / "late.wav"
    sf.write(path, x, sr)
    cfg = FeatureConfig(audio=AudioConfig(trim_db=40.0, pad="repeat"), kinds=("logmel",))
    result = featurize_file({"uri": str(path)}, cfg)
    assert result.status == "ok" and result.duration_s == pytest.approx(4.0)
    np.testing.assert_allclose(result.start_s, [1.0])
    np.testing.assert_allclose(result.end_s, [4.0])
