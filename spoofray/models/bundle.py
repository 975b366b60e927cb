"""The model bundle: the one, frozen way inference gets weights and feature config.

A bundle is a directory, local or ``s3://``::

    <bundle>/bundle.json                     what is below, with the sha256 of every file
    <bundle>/members/<name>/<model file>     ensemble.skops (sklearn) or <name>.keras
    <bundle>/members/<name>/<sidecar>.json   the producer's sidecar, kept for provenance

``bundle.json`` holds the format version, name, version, creation time, the feature config
and its hash, each member (kind, file, feature inputs, the shape of one window's tensor per
kind it reads, weight), the fusion rule (plain numbers), the decision threshold and how it
was chosen, the training-data fingerprints, dev metrics and ``files`` (relative path →
sha256). Two steps, each raising :class:`~spoofray.errors.BundleIntegrityError` on any
mismatch: :meth:`BundleSpec.verify` (the driver) checks every checksum, the feature-config
hashes and the recorded input shapes without loading a model or TensorFlow;
:meth:`BundleSpec.load_models` (once per scoring actor; :meth:`Bundle.load` does both)
loads each member with its safe loader (skops trusted types, Keras ``safe_mode``) behind
the :class:`WindowMember` protocol and checks that it takes those shapes. Bundles made
before input shapes were recorded get them from their feature config.

Bands: a bundle may say which members judge which band of audio (``bands`` in
``bundle.json``: ``{"wide": {"members": [...], "threshold": t, "threshold_method": ...,
"segment_rule": {...}}, "narrow": {...}}``, bands of :data:`spoofray.config.BANDS`). Each
band has its own members (fused with the bundle's rule over them), threshold and segment
rule; a file of a band the bundle does not list is not scored
(:class:`~spoofray.errors.UnsupportedBandError`). A bundle without ``bands`` (every 1.x
bundle) judges every band with all its members and its one threshold.

Feature configs: members are compatible when their configs differ at most in ``kinds``
(which features a dataset stored) and ``store_float16`` (storage precision); the bundle's
config is the members' config with ``kinds`` = the kinds its members read.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, Self

import numpy as np

from spoofray import storage
from spoofray.config import BANDS, FEATURE_KINDS, FeatureConfig, ordered_kinds
from spoofray.errors import BundleIntegrityError, ConfigError
from spoofray.models.fusion import Fusion, fusion_over

log = logging.getLogger(__name__)

BUNDLE_JSON = "bundle.json"
FORMAT_NAME = "spoofray-bundle"
FORMAT_VERSION = 1
MEMBER_KINDS = ("sklearn", "keras")
MEMBERS_DIR = "members"
_MEMBER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


# --- small helpers ------------------------------------------------------------------------


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def feature_identity(cfg: FeatureConfig) -> dict[str, Any]:
    """Every setting that changes feature values, i.e. the config minus kinds and storage."""
    out = cfg.to_dict()
    out.pop("kinds")
    out.pop("store_float16")
    return out


def _diff(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Human-readable differences between two nested config dicts."""
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            out += _diff(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}: {va!r} vs {vb!r}")
    return out


# --- member sidecars ------------------------------------------------------------------------


def member_inputs(sidecar: Mapping[str, Any], *, where: str) -> tuple[str, ...]:
    """The model inputs a member reads, as its sidecar names them.

    sklearn sidecars list ``inputs`` (names of :data:`spoofray.models.ml.INPUTS`, e.g.
    ``stats``, ``mfcc_pooled``); Keras sidecars name one feature kind in ``input``.
    """
    raw = sidecar.get("inputs", sidecar.get("input"))
    names = (raw,) if isinstance(raw, str) else tuple(raw or ())
    if not names:
        raise ConfigError(f"{where}: member sidecar names no inputs ('inputs' or 'input')")
    return names


def member_kinds(kind: str, inputs: Sequence[str], *, where: str) -> tuple[str, ...]:
    """Feature kinds (of :data:`FEATURE_KINDS`) a member with these inputs reads."""
    if kind == "sklearn":
        from spoofray.models import ml

        bad = [i for i in inputs if i not in ml.INPUTS]
        kinds = [ml.INPUTS[i] for i in inputs if i in ml.INPUTS]
        valid = list(ml.INPUTS)
    else:
        bad = [i for i in inputs if i not in FEATURE_KINDS]
        kinds = list(inputs)
        valid = list(FEATURE_KINDS)
        if len(inputs) != 1:
            bad = bad or list(inputs)
    if bad:
        raise ConfigError(f"{where}: {kind} member inputs {list(inputs)} invalid; expected "
                          f"{'one of' if kind == 'keras' else 'names from'} {valid}")
    return ordered_kinds(kinds)


def check_member_sidecar(sidecar: Mapping[str, Any], *, where: str) -> None:
    """Raise :class:`ConfigError` unless ``sidecar`` is a usable member description."""
    missing = [k for k in ("name", "kind", "file", "feature_config", "feature_config_hash")
               if k not in sidecar]
    if missing:
        raise ConfigError(f"{where}: member sidecar lacks {missing}; it must come from "
                          "spoofray's tune/train jobs")
    if sidecar["kind"] not in MEMBER_KINDS:
        raise ConfigError(f"{where}: member kind {sidecar['kind']!r} unknown; expected one of "
                          f"{list(MEMBER_KINDS)}")
    if not _MEMBER_NAME.match(str(sidecar["name"])):
        raise ConfigError(f"{where}: member name {sidecar['name']!r} must be 1-64 letters, "
                          "digits, '_', '-' or '.' (it becomes a report column score_<name>)")
    if "/" in sidecar["file"] or sidecar["file"].startswith("."):
        raise ConfigError(f"{where}: member file {sidecar['file']!r} must be a plain file name")
    member_kinds(sidecar["kind"], member_inputs(sidecar, where=where), where=where)
    cfg = FeatureConfig.from_dict(sidecar["feature_config"])
    if cfg.config_hash() != sidecar["feature_config_hash"]:
        raise ConfigError(f"{where}: feature_config_hash {sidecar['feature_config_hash']} does "
                          f"not match its feature_config (hash {cfg.config_hash()})")


# --- members -------------------------------------------------------------------------------


class WindowMember(Protocol):
    """What inference needs of a member, whatever trained it.

    :class:`spoofray.models.ml.EnsembleMember` (sklearn, skops) and
    :class:`spoofray.models.dl.KerasMember` (``.keras``) implement it.
    """

    def predict_proba(self, windows: Mapping[str, np.ndarray]) -> np.ndarray:
        """P(spoof) per window: ``{kind: (n, *window_shape)}`` float32 → (n,) float64."""
        ...

    def input_problem(self, shapes: Mapping[str, tuple[int, ...]]) -> str | None:
        """Why windows of these shapes (kind → one window's shape) do not fit, or None."""
        ...


def _sklearn_member(path: str, inputs: Sequence[str]) -> WindowMember:
    from spoofray.models import ml

    return ml.EnsembleMember.load(path, inputs)


def _keras_member(path: str, inputs: Sequence[str]) -> WindowMember:
    from spoofray import console
    from spoofray.models import dl  # imports Keras/TensorFlow only inside load_member

    console.import_tensorflow()  # without its start-up notices unless --verbose

    return dl.KerasMember.load(path, inputs)


#: How each kind of saved member is loaded (the producers' safe loaders: skops with
#: trusted types only; Keras with ``safe_mode=True``). TensorFlow is imported only by
#: the Keras loader, so an sklearn-only bundle never imports it.
MEMBER_LOADERS: dict[str, Callable[[str, Sequence[str]], WindowMember]] = {
    "sklearn": _sklearn_member, "keras": _keras_member}
assert tuple(MEMBER_LOADERS) == MEMBER_KINDS


def load_member(kind: str, path: str, inputs: Sequence[str]) -> WindowMember:
    """Load one member from a local file with its producer's safe loader."""
    try:
        return MEMBER_LOADERS[kind](path, inputs)
    except (ImportError, BundleIntegrityError):
        raise
    except Exception as exc:  # any loader refusal: untrusted types, not a zip, bad config
        raise BundleIntegrityError(
            f"member file {path} ({kind}) was refused by its safe loader: "
            f"{type(exc).__name__}: {exc}. The file is not a model spoofray saved (or it "
            "holds types that are not trusted); re-assemble the bundle from the tune/train "
            "outputs and never put pickles into a bundle"
        ) from exc


def member_input_shapes(kinds: Sequence[str], cfg: FeatureConfig) -> dict[str, tuple[int, ...]]:
    """One window's tensor shape per feature kind, under ``cfg``."""
    shapes = dataclasses.replace(cfg, kinds=ordered_kinds(kinds)).feature_shapes()
    return {k: tuple(shapes[k]) for k in kinds}


@dataclasses.dataclass(frozen=True)
class MemberSpec:
    """A member as ``bundle.json`` describes it (verified, model not loaded)."""

    name: str
    kind: str
    #: Model file, relative to the bundle folder.
    file: str
    #: Model inputs as the sidecar names them (ml input names, or one feature kind).
    inputs: tuple[str, ...]
    #: Feature kinds those inputs are computed from.
    kinds: tuple[str, ...]
    weight: float
    #: One window's tensor shape per kind it reads, as recorded at assembly (bundles
    #: made before that was recorded: computed from the bundle's feature config).
    input_shapes: Mapping[str, tuple[int, ...]] = dataclasses.field(compare=False)


@dataclasses.dataclass(frozen=True)
class LoadedMember(MemberSpec):
    """A member inside a loaded bundle: its spec and its model."""

    model: WindowMember = dataclasses.field(repr=False, compare=False)


@dataclasses.dataclass(frozen=True)
class BandSpec:
    """How a bundle judges audio of one band: which members, fused how, and where it draws
    the line."""

    band: str
    members: tuple[str, ...]
    fusion: Fusion
    threshold: float
    threshold_method: str
    #: As recorded (``{"threshold", "k", ...}``), or None: derived from the threshold.
    segment_rule: Mapping[str, Any] | None = None


def band_specs(manifest: Mapping[str, Any]) -> dict[str, BandSpec]:
    """The bands of a ``bundle.json`` (checked); without ``bands``, every band of
    :data:`BANDS` with all members, the bundle's threshold and segment rule."""
    fusion = Fusion.from_dict(manifest["fusion"])
    declared = manifest.get("bands")
    if declared is None:
        return {b: BandSpec(b, tuple(fusion.members), fusion, float(manifest["threshold"]),
                            str(manifest["threshold_method"]), manifest.get("segment_rule"))
                for b in BANDS}
    if not isinstance(declared, Mapping) or not declared:
        raise ConfigError(f"'bands' must map band names {list(BANDS)} to their members and "
                          f"threshold; got {declared!r}")
    out = {}
    for band, spec in declared.items():
        if band not in BANDS:
            raise ConfigError(f"band {band!r} unknown; bands are {list(BANDS)}")
        members = tuple(spec.get("members") or ())
        threshold = spec.get("threshold")
        if not members:
            raise ConfigError(f"band {band!r} names no members")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not (
                0.0 <= threshold <= 1.0):
            raise ConfigError(f"band {band!r}: threshold {threshold!r} is not a number in [0, 1]")
        out[band] = BandSpec(band, members, fusion_over(fusion, members), float(threshold),
                             str(spec.get("threshold_method", manifest["threshold_method"])),
                             spec.get("segment_rule"))
    return out


# --- the bundle -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BundleSpec:
    """A verified bundle without its models: what the driver needs to plan a scoring run.

    :meth:`verify` checks every checksum, the feature-config hashes and each member's
    recorded input shapes against the feature config, without importing TensorFlow or
    loading a model; :meth:`load_models` (once per actor) makes the :class:`Bundle`.

    Attributes
    ----------
    uri : str
        Where it was loaded from (local path or ``s3://``).
    root : str
        The local folder its files were verified in (a cache for S3).
    manifest : mapping
        ``bundle.json`` as read (read-only).
    """

    uri: str
    root: str
    manifest: Mapping[str, Any] = dataclasses.field(repr=False)
    feature_config: FeatureConfig
    members: tuple[MemberSpec, ...]
    fusion: Fusion
    threshold: float
    threshold_method: str
    #: How each band the bundle judges is scored (:func:`band_specs`).
    bands: Mapping[str, BandSpec] = dataclasses.field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def needed_kinds(self) -> tuple[str, ...]:
        """Feature kinds its members read, in :data:`FEATURE_KINDS` order."""
        return ordered_kinds([k for m in self.members for k in m.kinds])

    @property
    def member_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.members)

    def kinds_by_band(self) -> dict[str, tuple[str, ...]]:
        """Feature kinds the members of each band read."""
        kinds = {m.name: m.kinds for m in self.members}
        return {b: ordered_kinds([k for name in spec.members for k in kinds[name]])
                for b, spec in self.bands.items()}

    @classmethod
    def verify(cls, uri: str, *, dataset: str | None = None, cache_dir: str | None = None
               ) -> BundleSpec:
        """Verify a bundle without loading its models.

        Parameters
        ----------
        uri : str
            Bundle folder, local or ``s3://`` (downloaded into ``cache_dir``, by default
            ``$SPOOFRAY_HOME/cache/bundles/<sha of bundle.json>``).
        dataset : str, optional
            A feature dataset to check the bundle's feature config against.

        Raises
        ------
        BundleIntegrityError
            Missing or changed file, feature-config or input-shape mismatch.
        """
        root, manifest = _verified_root(uri, cache_dir)
        cfg = FeatureConfig.from_dict(manifest["feature_config"])
        members = tuple(
            MemberSpec(name=m["name"], kind=m["kind"], file=m["file"],
                       inputs=tuple(m["inputs"]), kinds=tuple(m["kinds"]),
                       weight=float(m.get("weight", 1.0)),
                       input_shapes=types.MappingProxyType(
                           {k: tuple(v) for k, v in m["input_shapes"].items()}
                           if "input_shapes" in m else member_input_shapes(m["kinds"], cfg)))
            for m in manifest["members"])
        spec = BundleSpec(uri=uri, root=root, manifest=types.MappingProxyType(manifest),
                          feature_config=cfg, members=members,
                          fusion=Fusion.from_dict(manifest["fusion"]),
                          threshold=float(manifest["threshold"]),
                          threshold_method=str(manifest["threshold_method"]),
                          bands=types.MappingProxyType(band_specs(manifest)))
        if dataset is not None:
            spec.check_dataset(dataset)
        return spec

    def load_models(self) -> Bundle:
        """The :class:`Bundle`: every member loaded with its safe loader, and refused when
        its model does not take the recorded input shapes."""
        members = []
        for m in self.members:
            model = load_member(m.kind, os.path.join(self.root, m.file), m.inputs)
            problem = model.input_problem(m.input_shapes)
            if problem:
                raise BundleIntegrityError(
                    f"bundle {self.uri}: member {m.name!r} does not fit the bundle's feature "
                    f"config: {problem}. The member was trained on other features: "
                    "re-assemble the bundle from the matching tune/train output")
            members.append(LoadedMember(**{f.name: getattr(m, f.name)
                                           for f in dataclasses.fields(MemberSpec)},
                                        model=model))
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(BundleSpec)}
        return Bundle(**{**fields, "members": tuple(members)})

    def with_threshold(self, threshold: float, method: str = "user") -> Self:
        """The same bundle with another decision threshold (e.g. ``--threshold``), in every
        band."""
        if not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
            raise ConfigError(f"threshold must be in [0, 1], got {threshold}")
        bands = {b: dataclasses.replace(s, threshold=float(threshold), threshold_method=method)
                 for b, s in self.bands.items()}
        return dataclasses.replace(self, threshold=float(threshold), threshold_method=method,
                                   bands=types.MappingProxyType(bands))

    def check_dataset(self, dataset_uri: str) -> None:
        """Raise :class:`BundleIntegrityError` unless a feature dataset fits this bundle."""
        from spoofray import dataset

        other = dataset.feature_config_of(dataset_uri)
        _check_compatible(self.feature_config, other, self.needed_kinds,
                          what=f"feature dataset {dataset_uri}", bundle=self.uri)

    def payload(self) -> dict[str, bytes]:
        """Every file of the bundle as ``{relative path: bytes}``, for shipping to workers.

        Ray workers on other nodes cannot see a driver-local bundle folder; they receive
        this (through the object store) and :func:`load_payload` it, verifying it again.
        """
        rels = [*self.manifest["files"], BUNDLE_JSON]
        out = {}
        for rel in rels:
            with open(os.path.join(self.root, rel), "rb") as fh:
                out[rel] = fh.read()
        return out

    def describe(self) -> dict[str, Any]:
        """A short, JSON-serialisable summary (for ``jobs/bundle.py inspect`` and reports)."""
        m = self.manifest
        return {
            "uri": self.uri, "name": self.name, "version": self.version,
            "created_at": m.get("created_at"),
            "feature_config_hash": m.get("feature_config_hash"),
            "needed_kinds": list(self.needed_kinds),
            "members": [{"name": x.name, "kind": x.kind, "inputs": list(x.inputs),
                         "kinds": list(x.kinds),
                         "input_shapes": {k: list(v) for k, v in x.input_shapes.items()},
                         "weight": x.weight} for x in self.members],
            "fusion": self.fusion.to_dict(), "threshold": self.threshold,
            "threshold_method": self.threshold_method,
            "bands": {b: {"members": list(x.members), "threshold": x.threshold,
                          "threshold_method": x.threshold_method} for b, x in self.bands.items()},
            "dev_metrics": m.get("dev_metrics"),
        }


@dataclasses.dataclass(frozen=True)
class Bundle(BundleSpec):
    """A verified, loaded model bundle. Build it with :meth:`load`, never by hand."""

    members: tuple[LoadedMember, ...]

    @classmethod
    def load(cls, uri: str, *, dataset: str | None = None, cache_dir: str | None = None
             ) -> Bundle:
        """Verify a bundle (:meth:`BundleSpec.verify`) and load its models.

        Raises
        ------
        BundleIntegrityError
            Missing or changed file, feature-config mismatch, unsafe member file, a model
            that does not take the feature shapes.
        """
        return BundleSpec.verify(uri, dataset=dataset, cache_dir=cache_dir).load_models()

    def member_scores(self, features: Mapping[str, np.ndarray],
                      members: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Each member's P(spoof) per window: ``{name: ndarray (n,)}`` (of ``members``, by
        default all)."""
        chosen = [m for m in self.members if members is None or m.name in members]
        shapes = dataclasses.replace(self.feature_config, kinds=FEATURE_KINDS).feature_shapes()
        n = None
        for kind in ordered_kinds([k for m in chosen for k in m.kinds]):
            if kind not in features:
                raise ConfigError(f"bundle {self.name} {self.version} needs feature {kind!r}; "
                                  f"got {sorted(features)}")
            arr = features[kind]
            if tuple(arr.shape[1:]) != shapes[kind] or (n is not None and len(arr) != n):
                raise ConfigError(
                    f"feature {kind!r} has shape {tuple(arr.shape)}; bundle expects "
                    f"(n, {', '.join(map(str, shapes[kind]))}) with the same n for every kind")
            n = len(arr)
        if not n:
            return {m.name: np.zeros(0, np.float64) for m in chosen}
        return {m.name: np.asarray(m.model.predict_proba(features), dtype=np.float64)
                for m in chosen}

    def score_windows(self, features: Mapping[str, np.ndarray], band: str | None = None
                      ) -> dict[str, np.ndarray]:
        """Score windows.

        Parameters
        ----------
        features : mapping of kind to ndarray, shape (n, *feature_shape)
            What the members read (:attr:`needed_kinds`, or ``kinds_by_band()[band]``),
            computed with :attr:`feature_config`.
        band : str, optional
            The band of the audio: only that band's members, fused by its rule. Default:
            every member, fused by the bundle's rule.

        Returns
        -------
        dict
            ``"spoof_score"``: fused P(spoof), shape (n,); ``"score_<member>"``: each
            member's P(spoof), shape (n,). All float64 (a Keras member computes in float32).
        """
        if band is None:
            per_member, fusion = self.member_scores(features), self.fusion
        elif band not in self.bands:
            raise ConfigError(f"bundle {self.name} {self.version} judges bands "
                              f"{sorted(self.bands)}, not {band!r}")
        else:
            spec = self.bands[band]
            per_member, fusion = self.member_scores(features, spec.members), spec.fusion
        out = {"spoof_score": fusion.apply(per_member)}
        out.update({f"score_{name}": s for name, s in per_member.items()})
        return out


def _check_compatible(mine: FeatureConfig, other: FeatureConfig, needed: Sequence[str], *,
                      what: str, bundle: str) -> None:
    diffs = _diff(feature_identity(mine), feature_identity(other))
    missing = [k for k in needed if k not in other.kinds]
    if diffs or missing:
        detail = "; ".join(diffs[:6]) or f"it lacks feature kinds {missing}"
        raise BundleIntegrityError(
            f"bundle {bundle} (feature config {mine.config_hash()}) does not fit {what} "
            f"(feature config {other.config_hash()}): {detail}. Features must be computed "
            "with the bundle's config: re-extract with it, or use a bundle trained on this one")


def verify_bundle_dir(root: str, *, shown_as: str | None = None) -> dict[str, Any]:
    """Check a local bundle folder without loading models; return its ``bundle.json``.

    Checks: format, sha256 of every listed file, the feature-config hash of the bundle and
    of each member sidecar, member/fusion consistency, a threshold in [0, 1].
    """
    shown = shown_as or root

    def fail(msg: str) -> BundleIntegrityError:
        return BundleIntegrityError(f"bundle {shown}: {msg}")

    if not os.path.exists(root):
        raise fail("no such folder; give --bundle a bundle folder (local or s3://, made by "
                   "jobs/bundle.py assemble), 'latest', or leave it out for the shipped "
                   "default")
    if not os.path.isdir(root):
        raise fail("is a file, not a bundle folder (the folder holding bundle.json)")
    try:
        with open(os.path.join(root, BUNDLE_JSON), "rb") as fh:
            manifest = json.loads(fh.read())
    except FileNotFoundError:
        raise fail(f"no {BUNDLE_JSON}; is this a spoofray bundle folder (made by "
                   "jobs/bundle.py assemble)?") from None
    except ValueError as exc:
        raise fail(f"{BUNDLE_JSON} is not valid JSON ({exc})") from exc
    if manifest.get("format") != FORMAT_NAME or manifest.get("format_version") != FORMAT_VERSION:
        raise fail(f"format {manifest.get('format')!r} v{manifest.get('format_version')!r}, "
                   f"expected {FORMAT_NAME!r} v{FORMAT_VERSION}; upgrade spoofray or re-assemble")
    files = manifest.get("files") or {}
    for rel, expected in sorted(files.items()):
        path = os.path.normpath(os.path.join(root, rel))
        if os.path.commonpath([path, os.path.abspath(root)]) != os.path.abspath(root):
            raise fail(f"file entry {rel!r} points outside the bundle")
        if not os.path.isfile(path):
            raise fail(f"file {rel} is missing (expected sha256 {expected}); re-download or "
                       "re-assemble the bundle")
        found = sha256_file(path)
        if found != expected:
            raise fail(f"file {rel} has sha256 {found} but bundle.json records {expected}: it "
                       "was changed after the bundle was made. Re-download or re-assemble the "
                       "bundle; never edit files inside a bundle")
    try:
        cfg = FeatureConfig.from_dict(manifest["feature_config"])
    except (KeyError, ConfigError, TypeError) as exc:
        raise fail(f"feature_config unreadable ({exc})") from exc
    if cfg.config_hash() != manifest.get("feature_config_hash"):
        raise fail(f"feature_config_hash {manifest.get('feature_config_hash')} does not match "
                   f"its feature_config (hash {cfg.config_hash()}): bundle.json was edited")
    members = manifest.get("members") or []
    if not members:
        raise fail("no members")
    for m in members:
        for key in ("file", "sidecar"):
            if m.get(key) not in files:
                raise fail(f"member {m.get('name')!r}: {key} {m.get(key)!r} has no checksum in "
                           "bundle.json 'files'; re-assemble the bundle")
        with open(os.path.join(root, m["sidecar"]), "rb") as fh:
            sidecar = json.loads(fh.read())
        try:
            check_member_sidecar(sidecar, where=f"{shown}/{m['sidecar']}")
        except ConfigError as exc:
            raise fail(str(exc)) from exc
        if sidecar["feature_config_hash"] != m.get("feature_config_hash"):
            raise fail(f"member {m['name']!r}: sidecar feature_config_hash "
                       f"{sidecar['feature_config_hash']} but bundle.json records "
                       f"{m.get('feature_config_hash')}")
        if (sidecar["name"], sidecar["kind"]) != (m["name"], m["kind"]):
            raise fail(f"member {m['name']!r} ({m['kind']}) does not match its sidecar "
                       f"({sidecar['name']!r}, {sidecar['kind']})")
        inputs = member_inputs(sidecar, where=m["sidecar"])
        kinds = member_kinds(m["kind"], inputs, where=m["sidecar"])
        if list(inputs) != list(m.get("inputs", [])) or list(kinds) != list(m.get("kinds", [])):
            raise fail(f"member {m['name']!r}: inputs {m.get('inputs')} / kinds {m.get('kinds')} "
                       f"in bundle.json differ from its sidecar ({list(inputs)} / {list(kinds)})")
        missing = [k for k in kinds if k not in cfg.kinds]
        if missing:
            raise fail(f"member {m['name']!r} reads {missing}, not in the bundle's feature kinds "
                       f"{list(cfg.kinds)}")
        recorded = m.get("input_shapes")  # absent in bundles made before it was recorded
        if recorded is not None:
            want = {k: list(v) for k, v in member_input_shapes(kinds, cfg).items()}
            if not isinstance(recorded, dict) or {k: list(v) for k, v in recorded.items()
                                                  } != want:
                raise fail(f"member {m['name']!r} was assembled for windows of shapes "
                           f"{recorded}, but the bundle's feature config gives {want}: "
                           "bundle.json was edited; re-assemble the bundle")
        _check_compatible(cfg, FeatureConfig.from_dict(sidecar["feature_config"]), (),
                          what=f"its member {m['name']!r}", bundle=shown)
    names = tuple(m["name"] for m in members)
    try:
        fusion = Fusion.from_dict(manifest.get("fusion"))
    except ConfigError as exc:
        raise fail(f"fusion invalid ({exc})") from exc
    if tuple(fusion.members) != names:
        raise fail(f"fusion members {list(fusion.members)} differ from members {list(names)}")
    threshold = manifest.get("threshold")
    if not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise fail(f"threshold {threshold!r} is not a number in [0, 1]")
    try:
        bands = band_specs(manifest)
    except (ConfigError, AttributeError, TypeError) as exc:
        raise fail(f"bands invalid ({exc})") from exc
    unknown = sorted({m for b in bands.values() for m in b.members} - set(names))
    if unknown:
        raise fail(f"bands name members {unknown} the bundle does not have ({list(names)})")
    return manifest


# --- S3 and payload transport --------------------------------------------------------------


def spoofray_home() -> str:
    """``$SPOOFRAY_HOME``, or ``~/.spoofray``: the local registry and caches live here."""
    return os.path.abspath(os.path.expanduser(os.environ.get("SPOOFRAY_HOME") or "~/.spoofray"))


def _materialize(bundle_json: bytes, fetch: Callable[[str], bytes], cache_dir: str | None
                 ) -> str:
    """Put a bundle's files into a local cache folder keyed by the sha of its bundle.json.

    Files are written into a temporary sibling and renamed into place, so concurrent
    loaders (several actors on one node) never see a half-written bundle.
    """
    cache_root = cache_dir or os.path.join(spoofray_home(), "cache", "bundles")
    target = os.path.join(cache_root, sha256_bytes(bundle_json)[:24])
    if os.path.isfile(os.path.join(target, BUNDLE_JSON)):
        return target  # verified by the caller on every load
    try:
        manifest = json.loads(bundle_json)
        files = dict(manifest.get("files") or {})
    except (ValueError, AttributeError) as exc:
        raise BundleIntegrityError(f"bundle.json is not a JSON object ({exc})") from exc
    os.makedirs(cache_root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".incoming-", dir=cache_root)
    try:
        for rel in files:
            dest = os.path.normpath(os.path.join(tmp, rel))
            if os.path.commonpath([dest, tmp]) != tmp:
                raise BundleIntegrityError(f"bundle file entry {rel!r} points outside the bundle")
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with open(dest, "wb") as fh:
                fh.write(fetch(rel))
        with open(os.path.join(tmp, BUNDLE_JSON), "wb") as fh:
            fh.write(bundle_json)
        try:
            os.rename(tmp, target)
        except OSError:  # another process won the race; its copy is identical by key
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def fetch_bundle(uri: str, *, cache_dir: str | None = None) -> str:
    """Download a remote bundle into the local cache; return the local folder."""
    try:
        bundle_json = storage.read_bytes(storage.join(uri, BUNDLE_JSON))
    except FileNotFoundError:
        if not storage.exists(uri):
            raise BundleIntegrityError(f"bundle {uri}: nothing at that prefix; check the URI "
                                       "(a bundle folder made by jobs/bundle.py assemble)"
                                       ) from None
        raise BundleIntegrityError(f"bundle {uri}: no {BUNDLE_JSON}; is this a spoofray bundle "
                                   "(made by jobs/bundle.py assemble)?") from None

    def fetch(rel: str) -> bytes:
        try:
            return storage.read_bytes(storage.join(uri, rel))
        except FileNotFoundError:
            raise BundleIntegrityError(f"bundle {uri}: file {rel} listed in bundle.json is "
                                       "missing; re-upload the whole bundle") from None

    return _materialize(bundle_json, fetch, cache_dir)


def _verified_root(uri: str, cache_dir: str | None) -> tuple[str, dict[str, Any]]:
    """The local folder of a verified bundle and its ``bundle.json``."""
    if not storage.is_remote(uri):
        root = storage.filesystem(uri)[1]
        return root, verify_bundle_dir(root, shown_as=uri)
    root = fetch_bundle(uri, cache_dir=cache_dir)
    try:
        return root, verify_bundle_dir(root, shown_as=uri)
    except BundleIntegrityError:
        # A damaged cache copy must not pin a bad bundle: fetch once more from the source.
        shutil.rmtree(root, ignore_errors=True)
        root = fetch_bundle(uri, cache_dir=cache_dir)
        return root, verify_bundle_dir(root, shown_as=uri)


def load_payload(payload: Mapping[str, bytes], *, shown_as: str,
                 cache_dir: str | None = None) -> Bundle:
    """:meth:`Bundle.load` of a :meth:`Bundle.payload` (verified again on arrival).

    Files land in ``cache_dir`` (default: the SPOOFRAY_HOME cache) under the sha of
    ``bundle.json``, so several loaders on one node share one copy.
    """
    if BUNDLE_JSON not in payload:
        raise BundleIntegrityError(f"bundle payload of {shown_as} has no {BUNDLE_JSON}")

    def fetch(rel: str) -> bytes:
        if rel not in payload:
            raise BundleIntegrityError(f"bundle payload of {shown_as} lacks {rel}")
        return payload[rel]

    root = _materialize(payload[BUNDLE_JSON], fetch, cache_dir)
    bundle = Bundle.load(root)
    return dataclasses.replace(bundle, uri=shown_as)
