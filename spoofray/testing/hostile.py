"""Hostile and broken inputs: a generated corpus of files no archive should be able to
crash, hang or exhaust memory with, plus bad manifests that must be refused.

Each :class:`HostileCase` says what a correct pipeline does with it: ``"ok"`` (decoded;
e.g. a FLAC named ``.wav`` is read by its content), or the class name of the
:class:`~spoofray.errors.InputFileError` its error row must carry. Everything is small on
disk (the 3 GiB file is sparse, the hours-long FLAC is a few hundred KiB) and generated in
about a second, so tests and CI can use the whole corpus.

Also here: :func:`probe_files`, which featurizes the corpus file by file in one child
process and measures time and peak memory per case. The measured outcomes go to
``docs/reliability.md`` through :mod:`spoofray.testing.reliability`.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import socket
import struct
import zipfile
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from spoofray.testing import signals

SR = 16_000


@dataclasses.dataclass(frozen=True)
class HostileCase:
    """One generated file (or the reason it could not be made here).

    Attributes
    ----------
    name : str
        Path relative to the corpus root (may hold odd characters; see ``path``).
    what : str
        One line describing the hostility, for reports.
    expect : str
        ``"ok"`` or the expected error class name.
    path : str or None
        Absolute path as listed (None when skipped).
    skip_reason : str or None
        Why the case was not created on this machine (e.g. running as root).
    """

    name: str
    what: str
    expect: str
    path: str | None = None
    skip_reason: str | None = None


@dataclasses.dataclass(frozen=True)
class ManifestCase:
    """A manifest (or protocol) that must be refused before any work starts.

    ``match`` is a regular expression the refusal message must match; ``secret`` a
    string that must NOT appear in it (a presigned URL's signature).
    """

    name: str
    what: str
    path: str
    match: str
    secret: str | None = None


# --- small byte builders -------------------------------------------------------------------


def _have_ffmpeg() -> bool:
    import shutil

    return shutil.which("ffmpeg") is not None and shutil.which("ffprobe") is not None


def _wav_bytes(x: np.ndarray, sr: int = SR, subtype: str = "PCM_16") -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, x.T if x.ndim == 2 else x, sr, format="WAV", subtype=subtype)
    return signals.zero_wav_peak_timestamp(buf.getvalue())


def _flac_bytes(x: np.ndarray, sr: int = SR) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, x, sr, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def _riff(chunks: Iterable[tuple[bytes, bytes | int, bytes]], riff_size: int | None = None
          ) -> bytes:
    """A RIFF/WAVE file from (id, declared size or body, body) chunks; sizes may lie."""
    body = b"WAVE"
    for cid, size, payload in chunks:
        declared = len(payload) if isinstance(size, bytes) else size
        body += cid + struct.pack("<I", declared & 0xFFFFFFFF) + payload
    return b"RIFF" + struct.pack("<I", (riff_size if riff_size is not None else len(body))
                                 & 0xFFFFFFFF) + body


def _fmt(tag: int = 1, channels: int = 1, rate: int = SR, bits: int = 16) -> bytes:
    align = channels * bits // 8
    return struct.pack("<HHIIHH", tag, channels, rate & 0xFFFFFFFF,
                       (rate * align) & 0xFFFFFFFF, align & 0xFFFF, bits)


def _pcm(seconds: float = 0.5, channels: int = 1) -> bytes:
    x = signals.voiced(150.0, seconds, SR)
    pcm = np.round(x * 20000).astype("<i2")
    return np.repeat(pcm, channels).tobytes()


def _streamed_flac_dc(seconds: float, sr: int = 1_000, level: float = 0.25) -> bytes:
    """A FLAC whose STREAMINFO says "length unknown" and which really holds ``seconds``
    of a constant level: libFLAC codes each constant block in a few bytes, so hours cost
    kilobytes on disk but must be decoded to be measured."""
    import soundfile as sf

    buf = io.BytesIO()
    block = np.full(sr * 60, level, dtype=np.float32)  # one minute at a time: low memory
    with sf.SoundFile(buf, "w", samplerate=sr, channels=1, format="FLAC",
                      subtype="PCM_16") as fh:
        for _ in range(int(seconds // 60)):
            fh.write(block)
    data = bytearray(buf.getvalue())
    (packed,) = struct.unpack_from(">Q", data, 18)  # rate | channels | bits | 36-bit total
    struct.pack_into(">Q", data, 18, packed & ~((1 << 36) - 1))
    return bytes(data)


def _zip_bomb(uncompressed_mib: int = 64) -> bytes:
    """A zip whose one member inflates ~1000x: harmless unless someone unpacks it."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        with zf.open("payload.bin", "w", force_zip64=True) as member:
            chunk = b"\0" * (1 << 20)
            for _ in range(uncompressed_mib):
                member.write(chunk)
    return buf.getvalue()


def _png() -> bytes:
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    raw = b"".join(b"\0" + b"\x80" * 16 for _ in range(16))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 16, 16, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


# --- the corpus ------------------------------------------------------------------------------


def make_hostile_corpus(directory: str | os.PathLike, *, seed: int = 0) -> list[HostileCase]:
    """Write the hostile corpus into ``directory`` (created) and describe every case.

    Parameters
    ----------
    directory : path-like
        An empty or new folder on a local filesystem that supports FIFOs and symlinks.
    seed : int
        Seed of the random-bytes cases.

    Returns
    -------
    list of HostileCase
        Sorted by name; cases that cannot be made here (chmod 000 as root) have
        ``path=None`` and a ``skip_reason``. Also holds a directory symlink loop
        (``loop/up -> ..``), which must not make listing recurse forever and is not a case.
    """
    root = os.path.abspath(os.fspath(directory))
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(seed)
    cases: list[HostileCase] = []

    def put(name: str, data: bytes, expect: str, what: str) -> None:
        path = os.path.join(root, name)
        with open(path, "wb") as fh:
            fh.write(data)
        cases.append(HostileCase(name, what, expect, path))

    good = _wav_bytes(signals.voiced(150.0, 1.0, SR))
    one_s_header = signals.wav_header(sample_rate=SR, channels=1, bits=16, n_frames=SR)

    # Empty and truncated.
    put("zero_bytes.wav", b"", "AudioDecodeError", "empty file (0 bytes)")
    put("one_byte.wav", b"R", "AudioDecodeError", "1 byte")
    put("riff_magic_only.wav", b"RIFF", "AudioDecodeError", "only the RIFF magic")
    put("truncated_in_header.wav", good[:20], "AudioDecodeError", "cut inside the header")
    put("header_only.wav", one_s_header, "AudioDecodeError",
        "44-byte header declaring 1 s, no samples")
    put("truncated_in_data.wav", good[: len(good) // 2], "AudioDecodeError",
        "cut half-way through the samples")
    # Header lengths far beyond the file.
    put("data_size_100mb_file_1s.wav",
        _riff([(b"fmt ", b"", _fmt()), (b"data", 100 * 2**20, _pcm(1.0))]),
        "AudioDecodeError", "data chunk declares 100 MiB (~55 min), holds 1 s")
    put("data_size_4gib.wav", _riff([(b"fmt ", b"", _fmt()), (b"data", 0xFFFFFFF0, _pcm(1.0))]),
        "AudioTooLongError", "data chunk declares 4 GiB (~37 h), holds 1 s")
    put("riff_size_4gib.wav", _riff([(b"fmt ", b"", _fmt()), (b"data", b"", _pcm(1.0))],
                                    riff_size=0xFFFFFFF0),
        "ok", "RIFF size declares 4 GiB, chunks are right (tolerated, as players do)")
    put("fmt_chunk_size_4gib.wav", _riff([(b"fmt ", 0xFFFFFF00, _fmt()), (b"data", b"", _pcm())]),
        "AudioDecodeError", "fmt chunk declares 4 GiB")
    put("junk_chunk_beyond_file.wav",
        _riff([(b"fmt ", b"", _fmt()), (b"LIST", 0x7FFFFFF0, b"INFO"), (b"data", b"", _pcm())]),
        "AudioDecodeError", "a LIST chunk before the data declares 2 GiB")
    # Hours long.
    put("ten_hours_by_header.wav",
        signals.wav_header(sample_rate=SR, channels=1, bits=16, n_frames=SR * 36_000),
        "AudioTooLongError", "44-byte header claiming 10 h")
    liar = bytearray(_flac_bytes(signals.voiced(120.0, 1.0, SR)))
    (packed,) = struct.unpack_from(">Q", liar, 18)
    struct.pack_into(">Q", liar, 18, (packed & ~((1 << 36) - 1)) | (SR * 36_000))
    put("ten_hours_by_header.flac", bytes(liar), "AudioTooLongError",
        "FLAC STREAMINFO claiming 10 h, 1 s present")
    put("four_hours_streamed.flac", _streamed_flac_dc(4.1 * 3600), "AudioTooLongError",
        "genuine 4.1 h FLAC (1 kHz constant level), length absent from the header")
    # Absurd rates, channel counts and sample formats.
    for name, fmt, what in [
        ("rate_0hz.wav", _fmt(rate=0), "sample rate 0 Hz"),
        ("rate_1hz.wav", _fmt(rate=1), "sample rate 1 Hz"),
        ("rate_4ghz.wav", _fmt(rate=0xFFFFFFFF), "sample rate 4 294 967 295 Hz"),
        ("channels_0.wav", _fmt(channels=0), "0 channels"),
        ("channels_65535.wav", _fmt(channels=65535), "65 535 channels"),
        ("bits_0.wav", _fmt(bits=0), "0 bits per sample (block align 0)"),
        ("bits_7.wav", _fmt(bits=7), "7 bits per sample (ffmpeg reads it as 8-bit PCM)"),
        ("format_tag_0x7777.wav", _fmt(tag=0x7777), "unknown WAVE format tag 0x7777"),
    ]:
        expect = {"rate_1hz.wav": "InvalidAudioError", "bits_7.wav": "ok"}.get(
            name, "AudioDecodeError")
        put(name, _riff([(b"fmt ", b"", fmt), (b"data", b"", _pcm(0.5))]), expect, what)
    put("channels_65.wav", _riff([(b"fmt ", b"", _fmt(channels=65)),
                                  (b"data", b"", _pcm(0.1, channels=65))]),
        "InvalidAudioError", "65 channels (limit 64), valid otherwise")
    # Non-finite and out-of-range float audio.
    x = signals.voiced(150.0, 0.5, SR)
    put("nan_float.wav", _wav_bytes(np.where(np.arange(x.size) == 700, np.nan, x)
                                    .astype(np.float32), subtype="FLOAT"),
        "InvalidAudioError", "32-bit float WAV with a NaN sample")
    put("inf_float.wav", _wav_bytes(np.where(np.arange(x.size) == 700, np.inf, x)
                                    .astype(np.float32), subtype="FLOAT"),
        "InvalidAudioError", "32-bit float WAV with +Inf")
    put("all_nan_double.wav", _wav_bytes(np.full(SR // 2, np.nan), subtype="DOUBLE"),
        "InvalidAudioError", "64-bit float WAV, every sample NaN")
    put("huge_finite_float.wav", _wav_bytes(x * np.float32(1e37), subtype="FLOAT"),
        "InvalidAudioError", "finite float samples of 1e37 (overflow the spectrum)")
    put("silent.wav", _wav_bytes(np.zeros(SR, np.float32)), "InvalidAudioError",
        "1 s of digital silence")
    put("no_frames.wav", _wav_bytes(np.zeros(0, np.float32)), "InvalidAudioError",
        "valid header, zero frames")
    put("ten_ms.wav", _wav_bytes(signals.sine(440.0, 0.01, SR)), "AudioTooShortError",
        "10 ms of audio")
    # Not audio at all.
    put("text.wav", b"This is a text file, not audio.\n" * 20, "AudioDecodeError", "plain text")
    put("access_denied.mp3", b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>'
        b"AccessDenied</Code><Message>Access Denied</Message></Error>", "AudioDecodeError",
        "an S3 error page saved as .mp3")
    put("image.wav", _png(), "AudioDecodeError", "a PNG image named .wav")
    put("zip_bomb.flac", _zip_bomb(), "AudioDecodeError", "zip of 64 MiB zeros (~1000:1)")
    with open(os.path.realpath("/bin/sh"), "rb") as fh:
        put("executable.ogg", fh.read(65536), "AudioDecodeError", "an ELF executable")
    put("random.flac", rng.bytes(8192), "AudioDecodeError", "8 KiB of random bytes")
    put("random.mp3", rng.bytes(8192), "AudioDecodeError", "random bytes named .mp3")
    # m4a/opus go to ffmpeg only: without it on PATH the file is refused as unsupported.
    ffmpeg_only = "AudioDecodeError" if _have_ffmpeg() else "UnsupportedFormatError"
    put("random.m4a", rng.bytes(8192), ffmpeg_only, "random bytes, ffmpeg path")
    put("random.opus", rng.bytes(8192), ffmpeg_only, "random bytes named .opus")
    put("flac_magic_then_garbage.flac", b"fLaC" + rng.bytes(4096), "AudioDecodeError",
        "FLAC magic, garbage after")
    put("oggs_magic_then_garbage.ogg", b"OggS" + rng.bytes(4096), "AudioDecodeError",
        "Ogg page magic, garbage after")
    put("id3_tag_256mb.mp3", b"ID3\x04\x00\x00\x7f\x7f\x7f\x7f" + rng.bytes(2048),
        "AudioDecodeError", "ID3 tag declaring 256 MiB, then garbage")
    # Wrong extensions on real audio: read by content.
    put("flac_named.wav", _flac_bytes(signals.voiced(140.0, 1.0, SR)), "ok",
        "a real FLAC named .wav")
    put("wav_named.mp3", good, "ok", "a real WAV named .mp3")
    put("odd name; $(rm -rf x) 'q\" \u00fc\u7a7a.wav", good, "ok",
        "shell metacharacters, quotes and non-ASCII in the name")
    # Over the size limit without using disk: a sparse 3 GiB file.
    sparse = os.path.join(root, "sparse_3gib.wav")
    with open(sparse, "wb") as fh:
        fh.write(one_s_header)
        fh.truncate(3 * 2**30)
    cases.append(HostileCase("sparse_3gib.wav", "3 GiB (sparse) file over the 2 GiB limit",
                             "AudioTooLongError", sparse))
    # Not regular files, broken and looping links.
    fifo = os.path.join(root, "fifo.wav")
    os.mkfifo(fifo)
    cases.append(HostileCase("fifo.wav", "a FIFO (named pipe) named .wav: no writer, "
                             "a plain open() blocks forever", "FileReadError", fifo))
    os.symlink("/dev/zero", os.path.join(root, "dev_zero.wav"))
    cases.append(HostileCase("dev_zero.wav", "symlink to /dev/zero (endless stream)",
                             "FileReadError", os.path.join(root, "dev_zero.wav")))
    os.symlink(os.path.join(root, "no_such_target.wav"), os.path.join(root, "dangling_link.wav"))
    cases.append(HostileCase("dangling_link.wav", "symlink to a missing file", "FileReadError",
                             os.path.join(root, "dangling_link.wav")))
    os.symlink("self_loop.wav", os.path.join(root, "self_loop.wav"))
    cases.append(HostileCase("self_loop.wav", "symlink pointing at itself (ELOOP)",
                             "FileReadError", os.path.join(root, "self_loop.wav")))
    sock_path = os.path.join(root, "socket.wav")
    if len(os.fsencode(sock_path)) < 100:  # AF_UNIX path limit
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(sock_path)
        cases.append(HostileCase("socket.wav", "a Unix socket named .wav", "FileReadError",
                                 sock_path))
    os.makedirs(os.path.join(root, "loop"))
    os.symlink("..", os.path.join(root, "loop", "up"))  # directory loop: root/loop/up/loop/up/...
    bad_name = os.fsencode(root) + b"/latin1_\xe9t\xe9.wav"
    with open(bad_name, "wb") as fh:
        fh.write(good)
    cases.append(HostileCase("latin1_\\xe9t\\xe9.wav", "file name not valid UTF-8 (Latin-1)",
                             "FileReadError", os.fsencode(bad_name).decode("utf-8",
                                                                           "backslashreplace")))
    unreadable = os.path.join(root, "unreadable.wav")
    if os.geteuid() == 0:
        cases.append(HostileCase("unreadable.wav", "chmod 000", "FileReadError",
                                 skip_reason="running as root: chmod 000 files stay readable "
                                 "(CAP_DAC_OVERRIDE); the FIFO, socket and link cases cover "
                                 "unreadable inputs instead"))
    else:
        put("unreadable.wav", good, "FileReadError", "chmod 000")
        os.chmod(unreadable, 0)
    # Controls: plain good files, so a corpus run also proves good files survive.
    put("good_a.wav", good, "ok", "control: 1 s PCM WAV")
    put("good_b.flac", _flac_bytes(signals.chirp(200.0, 3000.0, 2.5, SR)), "ok",
        "control: 2.5 s FLAC")
    return sorted(cases, key=lambda c: c.name)


def make_bad_manifests(directory: str | os.PathLike) -> list[ManifestCase]:
    """Manifests and protocols that must be refused (``SourceError``) before any work.

    Each lives in its own folder under ``directory`` next to one good WAV, with a file
    ``outside.wav`` one level up, so a path escaping the folder would find a real file.
    """
    root = os.path.abspath(os.fspath(directory))
    os.makedirs(root, exist_ok=True)
    good = _wav_bytes(signals.voiced(150.0, 1.0, SR))
    with open(os.path.join(root, "outside.wav"), "wb") as fh:
        fh.write(good)
    secret = "SpoofraySignature0123456789abcdef"
    cases = []

    def manifest(name: str, text: bytes, match: str, what: str, *, file: str = "manifest.csv",
                 secret_: str | None = None) -> None:
        folder = os.path.join(root, name)
        os.makedirs(folder)
        with open(os.path.join(folder, "a.wav"), "wb") as fh:
            fh.write(good)
        path = os.path.join(folder, file)
        with open(path, "wb") as fh:
            fh.write(text)
        cases.append(ManifestCase(name, what, path, match, secret_))

    manifest("dotdot", b"path,label\na.wav,bonafide\n../outside.wav,spoof\n",
             r"row 2: path '\.\./outside\.wav' points outside", "row with ../")
    manifest("dotdot_hidden", b"path\nsub/../../outside.wav\n", r"points outside",
             "../ after a subfolder")
    manifest("absolute_outside", b"path\n/etc/passwd.wav\n", r"points outside",
             "absolute path outside the folder")
    manifest("file_url_outside", b"path\nfile:///etc/hostname.wav\n", r"points outside",
             "file:// URL outside the folder")
    url = (f"https://bucket.s3.amazonaws.com/a.wav?X-Amz-Algorithm=AWS4-HMAC-SHA256"
           f"&X-Amz-Credential=AKIASPOOFRAYFAKE%2F20240101&X-Amz-Signature={secret}")
    manifest("presigned_url", f"path\n{url}\n".encode(), r"unsupported scheme",
             "presigned https:// URL (signature must not be echoed)", secret_=secret)
    manifest("duplicate", b"path\na.wav\n./a.wav\n", r"same file as row 1",
             "the same file twice")
    manifest("not_utf8", b"path\n\xff\xfe\xe9.wav\n", r"cannot read manifest",
             "bytes that are not UTF-8")
    manifest("empty", b"", r"is empty", "0-byte manifest")
    manifest("no_path_column", b"file,label\na.wav,spoof\n", r"no 'path' column",
             "no path column")
    manifest("bad_label", b"path,label\na.wav,maybe\n", r"unknown label 'maybe'",
             "unknown label")
    manifest("protocol_dotdot", b"LA_0001 ../../outside - A01 spoof\n", r"points outside",
             "ASVspoof protocol UTT_ID with ../", file="protocol.txt")
    manifest("protocol_no_key", b"LA_0001 a - A01 maybe\n", r"expected 'SPEAKER UTT_ID",
             "protocol line without bonafide/spoof", file="protocol.txt")
    return cases


# --- one process, every file: time and peak memory per case ---------------------------------


def probe_files(uris: Iterable[str], features: Mapping[str, Any] | None = None
                ) -> list[dict[str, Any]]:
    """:func:`~spoofray.featurize.featurize_file` each URI in THIS process, measuring it.

    Meant to run in a child process with a timeout and an address-space limit, so a hang
    or a runaway allocation shows up as a failed child instead of a stuck test session.

    Returns
    -------
    list of dict
        First ``{"uri": None, "maxrss_mib": ...}`` after a warm-up (the baseline), then per
        file: ``uri``, ``status``, ``error_type``, ``error_message``, ``seconds``,
        ``maxrss_mib`` (the process's peak RSS after this file; monotonic, so its growth
        over the previous entry is what this file cost at most).
    """
    import time

    from spoofray.config import FeatureConfig
    from spoofray.featurize import featurize_file

    cfg = FeatureConfig.from_dict(dict(features or {}))
    # Warm up (imports, filterbank caches) on one window of noise, so the first real file is
    # not charged for them.
    from spoofray import features as kernels

    kernels.extract(np.random.default_rng(0).standard_normal(
        (1, cfg.audio.window_samples)).astype(np.float32), cfg)
    out: list[dict[str, Any]] = [
        {"uri": None, "maxrss_mib": peak_rss_mib()}]
    for uri in uris:
        started = time.perf_counter()
        r = featurize_file({"uri": uri}, cfg)
        out.append({"uri": uri, "status": r.status, "error_type": r.error_type,
                    "error_message": r.error_message, "n_windows": r.n_windows,
                    "seconds": time.perf_counter() - started,
                    "maxrss_mib": peak_rss_mib()})
    return out


def peak_rss_mib() -> float:
    """Peak RSS of this process's own memory (``VmHWM``), in MiB.

    Not ``getrusage().ru_maxrss``: Linux carries that across ``fork``/``execve``, so a child
    started from a 1.4 GiB pytest process reports 1.4 GiB before it has allocated anything.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    import resource  # no /proc (macOS): the best there is

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _probe_main() -> None:
    """Child entry point: JSON ``{"uris": [...], "features": {...}, "max_as_bytes": n}`` on
    stdin, the :func:`probe_files` list as JSON on stdout."""
    import resource
    import sys

    request = json.load(sys.stdin)
    if request.get("max_as_bytes"):
        limit = int(request["max_as_bytes"])
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    results = probe_files(request["uris"], request.get("features"))
    json.dump({"results": results}, sys.stdout)
