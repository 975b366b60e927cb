"""The training-spoof corpus driver: :func:`copysyn_item` reads one bona fide source clip,
copy-synthesises it (and has TTS engines say its words) and writes every version through
every channel; :func:`make_copysyn_corpus`
(in this process) and ``jobs/make_spoofs.py`` (on Ray, resumable) turn your own bona fide
audio into a labelled corpus with it."""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from spoofray.augment.channels import CHANNEL_SPECS, _parse_perturbation, apply_channel, perturb
from spoofray.augment.tts import LICENSES as TTS_LICENSES
from spoofray.augment.tts import TTS_ENGINES
from spoofray.augment.vocoders import VOCODERS, copy_synthesize
from spoofray.config import Config, Interval, Options, setting
from spoofray.errors import ConfigError


#: ``license``: empty for the source and its copy-syntheses (they are the source's
#: licence), the engine's for a TTS spoof; ``text``: the source's transcript when TTS ran.
MANIFEST_COLUMNS = ("path", "label", "attack", "speaker", "group", "license", "text")
_PERTURBED_LABELS = ("spoof", "bonafide", "skip")


@dataclasses.dataclass(frozen=True)
class CopysynConfig(Config):
    """What copy-synthesis makes of each bona fide source clip (:func:`copysyn_item`).

    Per source and channel spec (:func:`apply_channel`): the clip itself (``bonafide``,
    when ``include_bonafide``) and one copy per vocoder (``spoof``, attack
    ``copysyn:<vocoder>``); per perturbation spec (:func:`perturb`) the perturbed clip
    (labelled ``perturbed_label``, see :func:`make_copysyn_corpus`) and its copies; per TTS
    engine (:mod:`spoofray.augment.tts`) the clip's words spoken by a drawn voice
    (``spoof``, attack ``tts:<engine>``), when Whisper tiny.en trusts its transcript
    (:mod:`spoofray.transcribe`).
    """

    _constraints = {
        "include_bonafide": [bool],
        "perturbed_label": [Options(_PERTURBED_LABELS)],
        "sample_rate": [Interval(int, 1)],
        "seed": [Interval(int, 0)],
    }

    vocoders: tuple[str, ...] = setting(VOCODERS, f"vocoders, from {list(VOCODERS)}")
    tts: tuple[str, ...] = setting(
        (), f"text-to-speech engines saying each clip's words (transcribed by Whisper "
        f"tiny.en; English only), from {list(TTS_ENGINES)}")
    channels: tuple[str, ...] = setting(
        ("none",), "channels applied to every clip and copy alike, each one effect or several "
        "joined by '+' (applied in order): " + ", ".join(CHANNEL_SPECS))
    include_bonafide: bool = setting(True, "also write the (channel-processed) bona fide "
                                     "clips, not only the copies", flag="bonafide")
    perturbations: tuple[str, ...] = setting(
        (), "stretch:<rate> / pitch:<semitones>; the perturbed clip and its copies are added")
    perturbed_label: str = setting("spoof", "label of perturbed clips (skip: not written)")
    sample_rate: int = setting(16_000, "sample rate of the written clips (Hz)")
    #: Each source draws from its own stream.
    seed: int = setting(0, "seed of the channel effects (noise, reverb)")
    vocoder_kwargs: dict[str, dict[str, Any]] = setting(
        default_factory=dict, help='keyword arguments per vocoder, e.g. '
        '{"hifigan": {"model": "LJSpeech"}}')

    def _check(self) -> None:
        for v in (*self.vocoders, *self.vocoder_kwargs):
            if v not in VOCODERS:
                raise ConfigError(f"unknown vocoder {v!r}; choose from {list(VOCODERS)}")
        for engine in self.tts:
            if engine not in TTS_ENGINES:
                raise ConfigError(f"unknown TTS engine {engine!r}; choose from "
                                  f"{list(TTS_ENGINES)}")
        if not self.vocoders and not self.tts:
            raise ConfigError("CopysynConfig makes no spoofs: give vocoders, tts engines or both")
        for spec in self.perturbations:
            _parse_perturbation(spec)
        if not self.channels:
            raise ConfigError("CopysynConfig.channels is empty; use ('none',) for no effect")
        model = self.vocoder_kwargs.get("hifigan", {}).get("model", "universal")
        from spoofray.hifigan import MODELS  # light: numpy only

        if model not in MODELS:
            raise ConfigError(f"unknown HiFi-GAN model {model!r}; choose from {list(MODELS)}")

    def check_runnable(self) -> None:
        """Refuse, before any work, what would fail every clip: a bad or unavailable
        channel (each runs once on a short tone; ``codec:`` and ``telephone`` need ffmpeg)
        or a vocoder whose package is missing
        (:class:`spoofray.hifigan.VocoderUnavailableError`)."""
        tone = (0.3 * np.sin(2 * np.pi * 440.0 * np.arange(self.sample_rate // 4)
                             / self.sample_rate)).astype(np.float32)
        for spec in self.channels:
            apply_channel(tone, self.sample_rate, spec, np.random.default_rng(0))
        if "hifigan" in self.vocoders:
            from spoofray import hifigan

            hifigan.data_dir()
        if self.tts:
            from spoofray import transcribe
            from spoofray.augment import tts

            for engine in self.tts:
                tts.check_available(engine)
            transcribe.load_model()


class Version(NamedTuple):
    """One clip made of a source, before channel effects."""

    label: str
    attack: str
    tag: str  # names the file
    clip: np.ndarray
    speaker: str | None = None  # None: the source's speaker
    license: str = ""  # empty: the source's


def copysyn_versions(y: np.ndarray, cfg: CopysynConfig, rng: np.random.Generator | None = None,
                     ) -> tuple[list[Version], str]:
    """Every clip :class:`CopysynConfig` makes of one source, before channel effects.

    ``rng`` draws the TTS voices (default: seeded by ``cfg.seed``).

    Returns
    -------
    versions : list of Version
        ``Version("bonafide", "", "bonafide", y)`` first when ``include_bonafide``.
    text : str
        The source's transcript when TTS engines ran and it was trusted, else "".
    """
    versions: list[Version] = []
    for spec in ("", *cfg.perturbations):
        src = perturb(y, cfg.sample_rate, spec) if spec else y
        suffix = "__" + spec.replace(":", "") if spec else ""
        if not spec and cfg.include_bonafide:
            versions.append(Version("bonafide", "", "bonafide", y))
        elif spec and cfg.perturbed_label != "skip":
            attack = f"perturb:{spec}" if cfg.perturbed_label == "spoof" else ""
            versions.append(Version(cfg.perturbed_label, attack, "perturbed" + suffix, src))
        for v in cfg.vocoders:
            versions.append(Version("spoof", f"copysyn:{v}", f"copysyn-{v}{suffix}",
                                    copy_synthesize(src, cfg.sample_rate, v,
                                                    **cfg.vocoder_kwargs.get(v, {}))))
    text = ""
    if cfg.tts:
        versions_tts, text = tts_versions(y, cfg, rng or np.random.default_rng(cfg.seed))
        versions += versions_tts
    return versions, text


def tts_versions(y: np.ndarray, cfg: CopysynConfig, rng: np.random.Generator
                 ) -> tuple[list[Version], str]:
    """The source's words (its Whisper transcript) said by each of ``cfg.tts``, resampled
    to ``cfg.sample_rate``; none when the transcript is not trusted."""
    from spoofray import transcribe
    from spoofray.audio import resample
    from spoofray.augment import tts

    said = transcribe.transcribe(y, cfg.sample_rate)
    if not said.usable:
        return [], ""
    out = []
    for engine in cfg.tts:
        clip, sr, voice = tts.synthesize(said.text, engine, rng)
        out.append(Version("spoof", f"tts:{engine}", f"tts-{engine}",
                           resample(clip, sr, cfg.sample_rate), speaker=f"tts:{engine}:{voice}",
                           license=TTS_LICENSES[engine]))
    return out, said.text


def source_key(uri: str) -> str:
    """A short stable key of a source URI: names its outputs, seeds its channel effects."""
    import hashlib

    return hashlib.sha256(uri.encode()).hexdigest()[:16]


def copysyn_item(item: Mapping[str, Any], cfg: CopysynConfig, out_root: str
                 ) -> tuple[list[dict[str, str]], float]:
    """Decode one bona fide source and write every version through every channel.

    Files are ``<out_root>/<label>/<name>-<key8>__<tag>[__<channel>].flac`` (``:`` of the
    channel spec written ``-``, ``+`` written ``_``, as S3 treats ``+`` specially; 16-bit FLAC at
    ``cfg.sample_rate``, each written atomically); the same source and config always give
    the same names and samples, so a rerun rewrites rather than adds.

    Parameters
    ----------
    item : mapping with ``uri`` and optional ``speaker``, ``group``

    Returns
    -------
    rows : list of dict
        Its manifest rows (:data:`MANIFEST_COLUMNS`), paths relative to ``out_root``.
    duration_s : float
        The source's duration.

    Raises
    ------
    InputFileError
        The source cannot be read or decoded (its message names the file).
    """
    import soundfile as sf

    from spoofray import audio, storage
    from spoofray.config import AudioConfig

    uri = str(item["uri"])
    y = audio.load_path(uri, AudioConfig(sample_rate=cfg.sample_rate)).samples
    key = source_key(uri)
    stem = f"{os.path.splitext(os.path.basename(uri))[0]}-{key[:8]}"
    # Copies keep their source's group (the source recording when it has none): a
    # copy-synthesised clip shares words, speaker and channel with its source, so a
    # split that put the source in train and its copy in dev (or the reverse) would
    # let a model score dev by recognising content it saw, not vocoder traces.
    group = item.get("group") or uri
    rng = np.random.default_rng([cfg.seed, int(key, 16)])
    rows: list[dict[str, str]] = []
    versions, text = copysyn_versions(y, cfg, rng)
    for channel in cfg.channels:
        # Both classes go through the same channel, so the channel cannot give the label away.
        for label, attack, tag, clip, speaker, license_ in versions:
            out = apply_channel(clip, cfg.sample_rate, channel, rng)
            peak = float(np.max(np.abs(out)))
            if peak > 0.999:  # 16-bit FLAC would clip
                out = out * (0.999 / peak)
            chan = "" if channel == "none" else "__" + channel.replace(":", "-").replace("+", "_")
            rel = f"{label}/{stem}__{tag}{chan}.flac"
            buf = io.BytesIO()
            sf.write(buf, out, cfg.sample_rate, format="FLAC", subtype="PCM_16")
            storage.write_bytes_atomic(storage.join(out_root, *rel.split("/")), buf.getvalue())
            rows.append({"path": rel, "label": label, "attack": attack,
                         "speaker": speaker or item.get("speaker") or "", "group": group,
                         "license": license_, "text": text})
    return rows, len(y) / cfg.sample_rate


def manifest_csv(rows: Iterable[Mapping[str, str]]) -> bytes:
    """The manifest CSV (:data:`MANIFEST_COLUMNS`) of copy-synthesis rows."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(MANIFEST_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue().encode()


def _items(items_or_manifest: str | os.PathLike | Iterable[Any]) -> list[dict[str, Any]]:
    from spoofray import sources

    if isinstance(items_or_manifest, (str, os.PathLike)):
        raw: Iterable[Any] = sources.resolve_inputs(str(items_or_manifest))
    else:
        raw = items_or_manifest
    out = []
    for item in raw:
        d = item.to_dict() if hasattr(item, "to_dict") else dict(item)
        uri = d.get("uri") or d.get("path")
        if not uri:
            raise ConfigError(f"copy-synthesis item without 'uri'/'path': {d}")
        out.append({"uri": str(uri), "label": d.get("label"), "speaker": d.get("speaker"),
                    "group": d.get("group")})
    return out


def make_copysyn_corpus(items_or_manifest: str | os.PathLike | Iterable[Any], out_root: str, *,
                        vocoders: Sequence[str] = VOCODERS, channels: Sequence[str] = ("none",),
                        sample_rate: int = 16_000, include_bonafide: bool = True,
                        max_items: int | None = None, seed: int = 0,
                        vocoder_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
                        perturbations: Sequence[str] = (), perturbed_label: str = "spoof") -> str:
    """Turn bona fide clips into a labelled training corpus of copy-synthesised spoofs,
    in this process (``jobs/make_spoofs.py`` does the same on Ray, resumably).

    For every bona fide source clip (items labelled spoof are skipped; unlabelled ones
    count as bona fide) and every channel spec (see :func:`apply_channel`), writes the
    clip itself (label ``bonafide``, when ``include_bonafide``) and one copy-synthesis per
    vocoder (label ``spoof``, attack ``copysyn:<vocoder>``) as 16-bit FLAC, plus
    ``<out_root>/manifest.csv`` with columns ``path,label,attack,speaker,group`` (paths
    relative to the manifest). Both classes get the same channel effects, so the
    channel cannot give the label away. Each source's files are written by
    :func:`copysyn_item`.

    ``perturbations`` (specs of :func:`perturb`: ``stretch:<rate>``, ``pitch:<semitones>``)
    add, per source and spec, the perturbed clip and its copy-syntheses through every
    vocoder (spoof, attack ``copysyn:<vocoder>``: the spoofs get other tempi and pitches
    than the voices they copy). The perturbed clip itself is labelled ``perturbed_label``:

    * ``"spoof"`` (default), attack ``perturb:<spec>``: the phase vocoder that stretches
      or shifts leaves the same kind of phase artefacts as Griffin-Lim synthesis, so
      calling it bona fide would teach a detector to accept exactly those traces; and a
      pitch-shifted voice is a disguised voice, which an audit should surface.
    * ``"bonafide"``: only if your own perturbation is artefact-free (not this one).
    * ``"skip"``: not written; only its copy-syntheses are.

    Parameters
    ----------
    items_or_manifest : path/URI of anything :func:`spoofray.sources.resolve_inputs`
        reads, or an iterable of ``AudioItem``/dicts with ``uri`` (or ``path``).
    out_root : str
        Output folder (local or ``s3://``).

    Returns
    -------
    str
        URI of the manifest.
    """
    from spoofray import storage
    from spoofray.errors import OutputExistsError

    cfg = CopysynConfig(vocoders=tuple(vocoders), channels=tuple(channels),
                        include_bonafide=include_bonafide, perturbations=tuple(perturbations),
                        perturbed_label=perturbed_label, sample_rate=sample_rate, seed=seed,
                        vocoder_kwargs={k: dict(v) for k, v in (vocoder_kwargs or {}).items()})
    manifest = storage.join(out_root, "manifest.csv")
    if storage.exists_nonempty(manifest):
        raise OutputExistsError(f"{out_root} already holds a manifest.csv; choose a new folder")
    items = [it for it in _items(items_or_manifest) if it["label"] in (None, "bonafide")]
    if max_items is not None:
        items = items[:max_items]
    if not items:
        raise ConfigError("no bona fide items to copy-synthesise (all inputs are labelled spoof?)")
    rows = [row for item in items for row in copysyn_item(item, cfg, out_root)[0]]
    storage.write_bytes_atomic(manifest, manifest_csv(rows))
    return manifest
