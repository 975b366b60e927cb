"""Making bundles: gather members from tune/train outputs, calibrate on dev, write, publish.

:func:`assemble_bundle` is what ``jobs/bundle.py assemble`` runs:

1. find member sidecars (tune output ``model/member.json``, train output ``<name>.json``);
2. write a bundle into a local staging folder (members copied, sha256 of every file);
3. with ``dev_features``: load the staged bundle (full verification), score its members on
   the dev windows, fit the fusion (logistic regression on log-odds, or mean) and put the
   threshold at the FILE-level dev EER (file score = mean of its fused window scores, as
   the scorer computes it); without: mean fusion, and the sklearn member's own threshold
   or 0.5 — ``threshold_method`` says which;
4. copy the staged folder to ``output`` (local or ``s3://``, ``bundle.json`` last) and/or
   the local registry ``$SPOOFRAY_HOME/bundles/<name>/<version>/``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import os
import shutil
import tempfile
import types
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

import spoofray
from spoofray import dataset, scoring, storage
from spoofray.config import BANDS, Config, FeatureConfig, Interval, Options, ordered_kinds, setting
from spoofray.errors import BundleIntegrityError, ConfigError, MetricError, OutputExistsError
from spoofray.models.bundle import (
    BUNDLE_JSON, FORMAT_NAME, FORMAT_VERSION, MEMBER_KINDS, MEMBERS_DIR, Bundle,
    _check_compatible, check_member_sidecar, member_input_shapes, member_inputs,
    member_kinds, sha256_bytes, utc_now,
)
from spoofray.models.fusion import Fusion, fit_logistic_fusion, mean_fusion
from spoofray.models.registry import registry_path
from spoofray.scoring import threshold_at_eer

log = logging.getLogger(__name__)

FUSION_CHOICES = ("auto", "mean", "logistic")
#: How the decision threshold is chosen on dev data (see :mod:`spoofray.scoring`).
THRESHOLD_RULES = ("eer", "false_alarm_rate")


# --- members as their producers left them --------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MemberSource:
    """A member outside any bundle: its sidecar JSON and the model file beside it."""

    sidecar_uri: str
    model_uri: str
    sidecar: Mapping[str, Any]

    @property
    def name(self) -> str:
        return str(self.sidecar["name"])

    @property
    def kind(self) -> str:
        return str(self.sidecar["kind"])

    @property
    def inputs(self) -> tuple[str, ...]:
        return member_inputs(self.sidecar, where=self.sidecar_uri)

    @property
    def kinds(self) -> tuple[str, ...]:
        return member_kinds(self.kind, self.inputs, where=self.sidecar_uri)

    @property
    def feature_config(self) -> FeatureConfig:
        return FeatureConfig.from_dict(self.sidecar["feature_config"])

    @property
    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        """One window's tensor shape per kind it reads, under its own feature config."""
        return member_input_shapes(self.kinds, self.feature_config)

    @classmethod
    def from_sidecar(cls, uri: str) -> MemberSource:
        """Read and check a sidecar; its model is ``sidecar['file']`` in the same folder."""
        try:
            sidecar = json.loads(storage.read_bytes(uri))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read member sidecar {uri}: {exc}") from exc
        check_member_sidecar(sidecar, where=uri)
        parent = uri.rsplit("/", 1)[0] if storage.is_remote(uri) else os.path.dirname(
            os.path.abspath(uri))
        model_uri = storage.join(parent, sidecar["file"])
        if not storage.exists(model_uri):
            raise ConfigError(f"member sidecar {uri} names model file {sidecar['file']!r}, but "
                              f"{model_uri} does not exist; keep the sidecar next to its model")
        return cls(sidecar_uri=uri, model_uri=model_uri, sidecar=types.MappingProxyType(sidecar))


def find_member_sidecars(uri: str) -> list[str]:
    """Member sidecars at ``uri``: the file itself, or every sidecar below a folder.

    A sidecar is a ``.json`` file with a ``kind`` of :data:`MEMBER_KINDS` and a ``file``.
    """
    if not storage.exists(uri):
        raise ConfigError(f"member source {uri} does not exist")
    if storage.is_file(uri):
        return [uri]
    found = []
    for p, info in storage.list_files(uri, suffix=".json").items():
        if p.rsplit("/", 1)[-1] in (BUNDLE_JSON, dataset.MANIFEST_NAME):
            continue
        if (info.get("size") or 0) > 1 << 20:
            continue  # sidecars are small; a large JSON is something else
        try:
            doc = json.loads(storage.read_bytes(p))
        except ValueError:
            continue
        if isinstance(doc, dict) and doc.get("kind") in MEMBER_KINDS and "file" in doc:
            found.append(p)
    if not found:
        raise ConfigError(f"no member sidecar (JSON with 'kind' sklearn/keras and 'file') under "
                          f"{uri}; point at a tune/train output folder or a member .json")
    return found


# --- writing and publishing ----------------------------------------------------------------


def write_bundle(out_dir: str, *, name: str, version: str, members: Sequence[MemberSource],
                 fusion: Fusion, threshold: float, threshold_method: str,
                 threshold_details: Mapping[str, Any] | None = None,
                 dev_metrics: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write a bundle into an empty local folder; return its ``bundle.json``.

    Member files are copied into ``members/<name>/``; member weights are the fusion's
    (mean rule) or 1.0; ``bundle.json`` is written last.
    """
    names = [m.name for m in members]
    if not members or len(set(names)) != len(names):
        raise ConfigError(f"a bundle needs members with unique names, got {names}; rename "
                          "a member in its sidecar")
    base = members[0].feature_config
    needed = ordered_kinds([k for m in members for k in m.kinds])
    cfg = dataclasses.replace(base, kinds=needed, store_float16=False)
    for m in members[1:]:
        try:
            _check_compatible(cfg, m.feature_config, (), what=f"member {m.name}",
                              bundle=f"being assembled from {members[0].sidecar_uri}")
        except BundleIntegrityError as exc:
            raise ConfigError(f"{exc} (all members of a bundle must read features of one "
                              "config; retrain one of them on the other's dataset)") from exc
    if os.path.exists(out_dir) and os.listdir(out_dir):
        raise ConfigError(f"bundle folder {out_dir} is not empty")
    weights = dict(zip(fusion.members, fusion.weights)) if fusion.rule == "mean" else {}
    files: dict[str, str] = {}
    entries = []
    for m in members:
        rel_dir = f"{MEMBERS_DIR}/{m.name}"
        os.makedirs(os.path.join(out_dir, rel_dir), exist_ok=True)
        model_rel = f"{rel_dir}/{m.sidecar['file']}"
        sidecar_rel = f"{rel_dir}/{m.sidecar_uri.rsplit('/', 1)[-1]}"
        if sidecar_rel == model_rel:
            raise ConfigError(f"member {m.name}: sidecar and model have the same file name")
        for src, rel in ((m.model_uri, model_rel), (m.sidecar_uri, sidecar_rel)):
            data = storage.read_bytes(src)
            with open(os.path.join(out_dir, rel), "wb") as fh:
                fh.write(data)
            files[rel] = sha256_bytes(data)
        entries.append({
            "name": m.name, "kind": m.kind, "file": model_rel, "sidecar": sidecar_rel,
            "inputs": list(m.inputs), "kinds": list(m.kinds),
            "input_shapes": {k: list(v) for k, v in m.input_shapes.items()},
            "weight": float(weights.get(m.name, 1.0)),
            "feature_config_hash": m.sidecar["feature_config_hash"],
            "threshold": m.sidecar.get("threshold"),
            "threshold_method": m.sidecar.get("threshold_method"),
            "metrics": m.sidecar.get("oof_metrics", m.sidecar.get("dev_metrics")),
            "source": m.sidecar_uri,
        })
    manifest = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION,
        "name": name, "version": version, "created_at": utc_now(),
        "spoofray_version": spoofray.__version__,
        "feature_config": cfg.to_dict(), "feature_config_hash": cfg.config_hash(),
        "needed_kinds": list(needed),
        "members": entries,
        "fusion": fusion.to_dict(),
        "threshold": float(threshold), "threshold_method": threshold_method,
        "threshold_details": dict(threshold_details or {}),
        "training_data_fingerprint": {m.name: m.sidecar.get("training_data_fingerprint")
                                      for m in members},
        "dev_metrics": dict(dev_metrics) if dev_metrics is not None else None,
        "files": files,
    }
    write_manifest(out_dir, manifest)
    return manifest


def write_manifest(out_dir: str, manifest: Mapping[str, Any]) -> None:
    storage.write_bytes_atomic(os.path.join(out_dir, BUNDLE_JSON),
                               json.dumps(manifest, indent=2).encode())


def publish(local_dir: str, dest: str, *, overwrite: bool = False) -> str:
    """Copy a finished local bundle folder to ``dest`` (local or ``s3://``), bundle.json last.

    A reader that finds ``bundle.json`` therefore finds every file it lists.
    """
    if storage.exists_nonempty(dest):
        if not overwrite:
            raise OutputExistsError(f"bundle destination {dest} already exists; choose another "
                                    "--version/--output or pass --overwrite")
        storage.remove(dest)
    with open(os.path.join(local_dir, BUNDLE_JSON), "rb") as fh:
        manifest_bytes = fh.read()
    for rel in json.loads(manifest_bytes)["files"]:
        with open(os.path.join(local_dir, rel), "rb") as fh:
            storage.write_bytes_atomic(storage.join(dest, rel), fh.read())
    storage.write_bytes_atomic(storage.join(dest, BUNDLE_JSON), manifest_bytes)
    return dest


# --- versions ------------------------------------------------------------------------------


def new_version() -> str:
    """A sortable default version: UTC time plus a short random suffix."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:4]


# --- dev calibration ------------------------------------------------------------------------


def _dev_parts(root: str) -> list[str]:
    folder = storage.join(root, dataset.FEATURES_DIR)
    if not storage.exists(folder):
        raise ConfigError(f"{root} is not a feature dataset (no {dataset.FEATURES_DIR}/ folder); "
                          "make one with jobs/extract_features.py")
    return storage.list_dir(folder, suffix=".parquet")


def score_dev_windows(bundle: Bundle, dev_features: str) -> tuple[dict[str, np.ndarray],
                                                                    np.ndarray, np.ndarray]:
    """Every member's score on every labelled window of a feature dataset.

    Returns
    -------
    member_scores : dict of name -> ndarray, shape (n_windows,)
    labels : ndarray of int, shape (n_windows,)
        1 = spoof.
    uris : ndarray of str, shape (n_windows,)
        The file each window came from.
    """
    bundle.check_dataset(dev_features)
    columns = ["uri", "label", *bundle.needed_kinds]
    scores: dict[str, list[np.ndarray]] = {m: [] for m in bundle.member_names}
    labels, uris = [], []
    for part in _dev_parts(dev_features):
        table = dataset.read_part(part, columns=columns)
        label = np.asarray(table.column("label").to_pylist(), dtype=object)
        keep = np.flatnonzero((label == "spoof") | (label == "bonafide"))
        if len(keep) == 0:
            continue
        table = table.take(keep)
        feats = {k: dataset.tensor_column(table, k) for k in bundle.needed_kinds}
        for name, s in bundle.member_scores(feats).items():
            scores[name].append(s)
        labels.append((label[keep] == "spoof").astype(np.int64))
        uris.append(np.asarray(table.column("uri").to_pylist(), dtype=object))
    if not labels:
        raise MetricError(f"dev dataset {dev_features} has no labelled windows")
    return ({m: np.concatenate(v) for m, v in scores.items()}, np.concatenate(labels),
            np.concatenate(uris))


def file_level(window_scores: np.ndarray, labels: np.ndarray, uris: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Per-file mean of window scores (the scorer's ``spoof_score``) and the file labels."""
    _, inverse = np.unique(uris.astype(str), return_inverse=True)
    file_labels = np.zeros(inverse.max() + 1, np.int64)
    file_labels[inverse] = labels
    return scoring.file_scores(window_scores, inverse), file_labels


def calibrate_on_dev(bundle: Bundle, dev_features: str, *, rule: str,
                     weights: Mapping[str, float] | None = None,
                     threshold_rule: str = "eer", target_false_alarm_rate: float = 0.01
                     ) -> dict[str, Any]:
    """Fit the fusion and choose the threshold on a dev feature dataset.

    Returns
    -------
    dict
        ``fusion`` (:class:`Fusion`), ``threshold``, ``threshold_details`` and
        ``dev_metrics`` (file-level metrics of the fused score and of each member).
    """
    from spoofray import metrics

    member_scores, labels, uris = score_dev_windows(bundle, dev_features)
    if rule == "logistic":
        fusion = fit_logistic_fusion(member_scores, labels)
    else:
        fusion = mean_fusion(bundle.member_names,
                             [float((weights or {}).get(m, 1.0)) for m in bundle.member_names])
    file_scores, file_labels = file_level(fusion.apply(member_scores).astype(np.float64),
                                          labels, uris)
    threshold, eer = threshold_at_eer(file_labels, file_scores)
    details = {"level": "file", "file_score": "mean of window scores", "dev_eer": eer,
               "dataset": dev_features, "n_files": int(len(file_labels))}
    if threshold_rule == "false_alarm_rate":
        threshold, achieved = scoring.threshold_at_false_alarm_rate(
            file_scores[file_labels == 0], target_false_alarm_rate)
        details.update(target_false_alarm_rate=target_false_alarm_rate,
                       dev_false_alarm_rate=achieved,
                       n_bonafide_files=int(np.sum(file_labels == 0)))
    threshold = float(np.clip(threshold, 0.0, 1.0))
    per_member = {}
    for name, s in member_scores.items():
        fs, fl = file_level(s.astype(np.float64), labels, uris)
        per_member[name] = {k: v for k, v in metrics.evaluate(fl, fs).items()
                            if k in ("eer", "eer_threshold", "auc")}
    manifest = dataset.read_manifest(dev_features) if storage.exists_nonempty(
        storage.join(dev_features, dataset.MANIFEST_NAME)) else {}
    dev = {
        "level": "file", "dataset": dev_features,
        "dataset_fingerprint": manifest.get("inputs_fingerprint"),
        "n_windows": int(len(labels)), "n_files": int(len(file_labels)),
        "fused": metrics.evaluate(file_labels, file_scores, threshold=threshold),
        "members": per_member,
    }
    return {"fusion": fusion, "threshold": threshold, "threshold_details": details,
            "dev_metrics": dev}


# --- assembly ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AssembleConfig(Config):
    """What :func:`assemble_bundle` gathers and where it puts the bundle."""

    _constraints = {
        "publish": [bool],
        "fusion": [Options(FUSION_CHOICES)],
        "threshold_rule": [Options(THRESHOLD_RULES)],
        "target_false_alarm_rate": [Interval(float, 0.0, 1.0, closed="left")],
        "threshold": [None, Interval(float, 0.0, 1.0)],
        "overwrite": [bool],
    }

    members: tuple[str, ...] = setting((), "tune/train output folder or member sidecar .json, "
                                       "local or s3://", flag="member", repeat=True)
    name: str = setting("spoofray", "bundle name")
    version: str | None = setting(None, "bundle version",
                                  default_help="UTC time, e.g. 20250101-120000-ab12")
    output: str | None = setting(None, "bundle folder, local or s3://",
                                 default_help="the local registry")
    publish: bool = setting(False, "also copy into the local registry when --output is given")
    dev_features: str | None = setting(None, "held-out feature dataset to fit fusion and "
                                       "threshold on")
    fusion: str = setting("auto", "auto: logistic with --dev-features and >1 member, else mean")
    weights: dict[str, float] = setting(default_factory=dict, help="mean-fusion weights by "
                                        "member name (1.0 each when not given)", cli=False)
    threshold_rule: str = setting(
        "eer", "eer: the dev EER point; false_alarm_rate: flag at most "
        "--target-false-alarm-rate of bona fide dev files or report rows")
    target_false_alarm_rate: float = setting(0.01, "false-alarm budget on real speech")
    #: Their labelled bona fide rows set a false-alarm-rate threshold that was never fitted
    #: in-sample.
    threshold_reports: tuple[str, ...] = setting(
        (), "scoring run (run_id= folder) of a held-out fold whose bona fide rows set the "
        "false-alarm threshold", flag="threshold_report", repeat=True, metavar="RUN_FOLDER")
    threshold: float | None = setting(None, "fixed decision threshold in [0, 1]",
                                      default_help="the one chosen by --threshold-rule")
    #: E.g. leave-one-source-out metrics, recorded in ``bundle.json`` as ``evaluation``.
    evaluation: dict[str, Any] = setting(default_factory=dict, help="held-out evaluation of "
                                         "the recipe that made these members", cli=False)
    overwrite: bool = setting(False, "replace an existing bundle folder")
    #: E.g. ``{"wide": ["ml"], "narrow": ["ml_narrow"]}``: each band gets its own threshold
    #: (from the threshold reports' rows of that band). Empty: every band, every member.
    bands: dict[str, tuple[str, ...]] = setting(
        default_factory=dict, help="members that judge each band (wide, narrow)", cli=False)

    def _check(self) -> None:
        if not self.members:
            raise ConfigError("assemble needs at least one member (tune/train output or sidecar)")
        unknown = sorted(set(self.bands) - set(BANDS))
        if unknown:
            raise ConfigError(f"bands {unknown} unknown; bands are {list(BANDS)}")
        if self.bands and self.dev_features:
            raise ConfigError("a bundle with bands takes its thresholds from threshold_reports "
                              "(or threshold), not from dev_features")
        if self.fusion == "logistic" and not self.dev_features:
            raise ConfigError("logistic fusion is fitted on dev scores; give --dev-features")
        if self.threshold_reports and self.threshold_rule != "false_alarm_rate":
            raise ConfigError("threshold_reports set a false-alarm-rate threshold; pass "
                              "threshold_rule='false_alarm_rate' with them")


def threshold_from_reports(reports: Sequence[str], target: float, band: str | None = None
                           ) -> tuple[float, dict[str, Any]]:
    """A false-alarm-rate threshold from the labelled bona fide rows of scoring runs (of
    the rows of one ``band``, when given).

    The runs are the held-out folds of a cross-validation: each fold's bundle scored
    sources it never saw, so the threshold transfers to new recordings instead of sitting
    on the training data's own (optimistic) scores.
    """
    from spoofray.reports import file_rows, read_report

    scores, per_report = [], []
    for uri in reports:
        rep = file_rows(read_report(uri))
        ok = rep[(rep["status"] == "ok") & (rep["true_label"] == "bonafide")]
        if band is not None:
            ok = ok[ok["band"] == band]
        if ok.empty:
            raise MetricError(f"{uri}: no bona fide rows with true_label"
                              + (f" judged as {band}band audio" if band else "")
                              + " to set a threshold on; score labelled held-out audio "
                              "(a manifest with labels)")
        scores.append(ok["spoof_score"].to_numpy(np.float64))
        per_report.append({"report": uri, "n_bonafide_files": int(len(ok))})
    threshold, achieved = scoring.threshold_at_false_alarm_rate(np.concatenate(scores), target)
    return threshold, {"target_false_alarm_rate": target, "band": band,
                       "held_out_false_alarm_rate": achieved,
                       "n_bonafide_files": int(sum(len(s) for s in scores)),
                       "reports": per_report}


def _default_threshold(members: Sequence[MemberSource]) -> tuple[float, str, dict[str, Any]]:
    for m in members:
        t = m.sidecar.get("threshold")
        if m.kind == "sklearn" and isinstance(t, (int, float)) and np.isfinite(t):
            t = min(max(float(t), 0.0), 1.0)  # an EER point can sit just past the scores
            details = {"member": m.name, "member_threshold_method": m.sidecar.get(
                "threshold_method")}
            if len(members) > 1:
                details["note"] = ("chosen for this member alone; the fused score was not "
                                   "calibrated (assemble with --dev-features to do so)")
            return float(t), "ml_member_threshold", details
    return 0.5, "default_0.5", {"note": "no dev data and no member threshold; assemble with "
                                        "--dev-features to choose one at the dev EER"}


def band_thresholds(cfg: AssembleConfig, members: Sequence[MemberSource],
                    manifest: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``bundle.json``'s ``bands``: each band's members and threshold (a fixed
    ``cfg.threshold``; else from the threshold reports' rows of that band; else the band's
    sklearn member's own threshold)."""
    names = [m.name for m in members]
    out = {}
    for band, chosen in cfg.bands.items():
        unknown = sorted(set(chosen) - set(names))
        if not chosen or unknown:
            raise ConfigError(f"band {band!r} names members {list(chosen)}; the members are "
                              f"{names}")
        entry: dict[str, Any] = {"members": list(chosen)}
        if cfg.threshold is not None:
            entry.update(threshold=float(cfg.threshold), threshold_method="user")
        elif cfg.threshold_reports:
            t, details = threshold_from_reports(cfg.threshold_reports,
                                                cfg.target_false_alarm_rate, band=band)
            entry.update(threshold=t, threshold_method="false_alarm_rate_on_held_out_reports",
                         threshold_details=details)
        else:
            t, method, details = _default_threshold([m for m in members if m.name in chosen])
            entry.update(threshold=t, threshold_method=method, threshold_details=details)
        out[band] = entry
    return out


def assemble_bundle(cfg: AssembleConfig) -> dict[str, Any]:
    """Make a bundle from trained members (see the module docstring).

    Returns
    -------
    dict
        ``uri`` (where it was written), ``registry_uri`` (or None), ``manifest``.
    """
    uris = [u for src in cfg.members for u in find_member_sidecars(src)]
    members = [MemberSource.from_sidecar(u) for u in uris]
    names = [m.name for m in members]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        listing = "; ".join(f"{m.name}: {m.sidecar_uri}" for m in members if m.name in dupes)
        raise ConfigError(f"more than one member named {dupes} ({listing}); pass the sidecar "
                          "JSON of the one you want instead of its folder")
    unknown = sorted(set(cfg.weights) - set(names))
    if unknown:
        raise ConfigError(f"weights given for unknown members {unknown}; members are {names}")
    version = cfg.version or new_version()
    dest = cfg.output or registry_path(cfg.name, version)
    for target in {dest, registry_path(cfg.name, version) if cfg.publish else dest}:
        if storage.exists_nonempty(target) and not cfg.overwrite:
            raise OutputExistsError(f"bundle destination {target} already exists; choose "
                                    "another --version/--output or pass --overwrite")
    rule = cfg.fusion if cfg.fusion != "auto" else (
        "logistic" if cfg.dev_features and len(members) > 1 else "mean")
    fusion = mean_fusion(names, [float(cfg.weights.get(n, 1.0)) for n in names])
    threshold, method, details = _default_threshold(members)
    staging = tempfile.mkdtemp(prefix="spoofray-bundle-")
    try:
        manifest = write_bundle(staging, name=cfg.name, version=version, members=members,
                                fusion=fusion, threshold=threshold, threshold_method=method,
                                threshold_details=details)
        if cfg.dev_features:
            calib = calibrate_on_dev(Bundle.load(staging), cfg.dev_features, rule=rule,
                                     weights=cfg.weights, threshold_rule=cfg.threshold_rule,
                                     target_false_alarm_rate=cfg.target_false_alarm_rate)
            manifest.update(fusion=calib["fusion"].to_dict(), threshold=calib["threshold"],
                            threshold_method=("dev_eer_file_level" if cfg.threshold_rule == "eer"
                                              else "dev_false_alarm_rate_file_level"),
                            threshold_details=calib["threshold_details"],
                            dev_metrics=calib["dev_metrics"])
            if calib["fusion"].rule == "logistic":
                for entry, w in zip(manifest["members"], calib["fusion"].weights):
                    entry["weight"] = w
        if cfg.threshold_reports:
            threshold, details = threshold_from_reports(cfg.threshold_reports,
                                                        cfg.target_false_alarm_rate)
            manifest.update(threshold=threshold,
                            threshold_method="false_alarm_rate_on_held_out_reports",
                            threshold_details=details)
        elif cfg.threshold_rule == "false_alarm_rate" and not cfg.dev_features:
            raise ConfigError("threshold_rule 'false_alarm_rate' needs bona fide scores: give "
                              "dev_features or threshold_reports")
        if cfg.evaluation:
            manifest["evaluation"] = cfg.evaluation
        if cfg.threshold is not None:
            manifest.update(threshold=float(cfg.threshold), threshold_method="user",
                            threshold_details={"previous": {
                                "threshold": manifest["threshold"],
                                "method": manifest["threshold_method"]}})
        if cfg.bands:
            manifest["bands"] = band_thresholds(cfg, members, manifest)
            if "wide" in manifest["bands"]:  # what a reader that knows no bands sees
                manifest.update({k: manifest["bands"]["wide"][k]
                                 for k in ("threshold", "threshold_method")})
        write_manifest(staging, manifest)
        Bundle.load(staging)  # the finished bundle must load as any reader will load it
        publish(staging, dest, overwrite=cfg.overwrite)
        registry_uri = None
        if cfg.publish or cfg.output is None:
            registry_uri = registry_path(cfg.name, version)
            if registry_uri != dest:
                publish(staging, registry_uri, overwrite=cfg.overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("bundle %s %s written to %s", cfg.name, version, dest)
    return {"uri": dest, "registry_uri": registry_uri, "manifest": manifest}
