"""Model and config safety: tampered or code-carrying bundles are refused without running
the code, and YAML is parsed safely everywhere. (That credentials and presigned URLs never
reach logs, reports or summaries is checked on the storage-fault runs, in
tests/test_storage_faults.py, which already run every pipeline against S3 in a driver of
their own.)

Attacks here assume the attacker controls the whole bundle folder, so they also "fix"
the checksums in bundle.json: refusal must then come from the safe loaders themselves.
"""

from __future__ import annotations

import ast
import glob
import hashlib
import json
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import pytest

from spoofray.errors import BundleIntegrityError, ConfigError
from spoofray.models.assemble import AssembleConfig, assemble_bundle
from spoofray.models.bundle import Bundle
from spoofray.testing.datasets import SMALL, synthetic_features
from spoofray.testing.members import (make_keras_model, save_keras_member, save_ml_member,
                                      train_ml)

REPO = Path(__file__).resolve().parents[1]






# --- bundles -------------------------------------------------------------------------------


def _refit_checksum(bundle: Path, rel: str) -> None:
    """What an attacker with write access to the bundle does: make bundle.json agree."""
    manifest = json.loads((bundle / "bundle.json").read_text())
    manifest["files"][rel] = hashlib.sha256((bundle / rel).read_bytes()).hexdigest()
    (bundle / "bundle.json").write_text(json.dumps(manifest))


class _PickleBomb:
    """Unpickling this creates ``path``: proof that a pickle got executed."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def ml_bundle(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mlb")
    feats, y = synthetic_features(SMALL, 20)
    member = save_ml_member(train_ml(feats, y), tmp / "tune", SMALL)
    return Path(assemble_bundle(AssembleConfig(members=(member,), output=str(tmp / "b")))["uri"])


@pytest.fixture(scope="module")
def keras_bundle(tmp_path_factory):
    pytest.importorskip("keras")
    tmp = tmp_path_factory.mktemp("kb")
    sidecar = save_keras_member(make_keras_model(SMALL), tmp / "train", SMALL)
    return Path(assemble_bundle(AssembleConfig(members=(sidecar,), output=str(tmp / "b")))["uri"])


def _copy(bundle: Path, tmp_path: Path, name: str) -> Path:
    dest = tmp_path / name
    shutil.copytree(bundle, dest)
    return dest


def _keras_file(bundle: Path) -> str:
    manifest = json.loads((bundle / "bundle.json").read_text())
    return manifest["members"][0]["file"]


def test_modified_member_file_is_refused(ml_bundle, keras_bundle, tmp_path, record):
    outcomes = {}
    for bundle, rel in ((ml_bundle, "members/ml/ensemble.skops"),
                        (keras_bundle, _keras_file(keras_bundle))):
        b = _copy(bundle, tmp_path, bundle.parent.name)
        with open(b / rel, "r+b") as fh:  # flip one byte in the middle
            fh.seek(os.path.getsize(b / rel) // 2)
            byte = fh.read(1)
            fh.seek(-1, os.SEEK_CUR)
            fh.write(bytes([byte[0] ^ 0xFF]))
        with pytest.raises(BundleIntegrityError, match=r"has sha256 \w+ but bundle.json records"):
            Bundle.load(str(b))
        outcomes[rel] = "BundleIntegrityError (checksum)"
    record("bundle_modified_file", {
        "fault": "one byte flipped in a member file (skops and .keras)",
        "outcome": "Bundle.load refuses: BundleIntegrityError naming the file and both hashes",
        "counts": {"inputs": 2, "rows": 0, "ok": 0, "errors": 2, "duplicates": 0, "missing": 0},
        "cases": outcomes})


def test_pickle_and_untrusted_types_in_skops_are_refused_without_running(ml_bundle, tmp_path,
                                                                        record):
    import skops.io as sio

    rel = "members/ml/ensemble.skops"
    sentinel = tmp_path / "pickle-ran"
    payloads = {
        "raw pickle": pickle.dumps(_PickleBomb(str(sentinel))),
        "pickle inside a zip named like skops": _zip({"schema.json": b"{}",
                                                      "x.pkl": pickle.dumps(_PickleBomb(
                                                          str(sentinel)))}),
        "skops file holding os.system": sio.dumps({"f": os.system}),
    }
    for i, (what, data) in enumerate(payloads.items()):
        b = _copy(ml_bundle, tmp_path, f"p{i}")
        (b / rel).write_bytes(data)
        _refit_checksum(b, rel)
        with pytest.raises(BundleIntegrityError,
                           match=r"ensemble\.skops.*(not a readable skops|not on spoofray's "
                                 r"trusted list|refused by its safe loader)") as info:
            Bundle.load(str(b))
        assert not sentinel.exists(), what
        if "os.system" in what:
            assert "system" in str(info.value)
    record("bundle_pickle_payloads", {
        "fault": "member file replaced by a pickle, a zip holding a pickle, a skops file "
                 "holding os.system; checksums re-fitted by the attacker",
        "outcome": "each refused by the skops trusted-type check; the pickle never ran",
        "counts": {"inputs": len(payloads), "rows": 0, "ok": 0, "errors": len(payloads),
                   "duplicates": 0, "missing": 0}})


def _zip(files: dict[str, bytes]) -> bytes:
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _rewrite_keras_config(path: Path, edit) -> None:
    with zipfile.ZipFile(path) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    config = json.loads(files["config.json"])
    edit(config)
    files["config.json"] = json.dumps(config).encode()
    path.write_bytes(_zip(files))


def test_keras_lambda_and_module_gadgets_are_refused_without_running(keras_bundle, tmp_path,
                                                                    record):
    keras = pytest.importorskip("keras")
    rel = _keras_file(keras_bundle)
    sentinel = tmp_path / "lambda-ran"
    cases = {}

    # 1. A Lambda layer whose code would create the sentinel as soon as it is called.
    inputs = keras.Input(shape=SMALL.feature_shapes()["logmel"])
    flat = keras.layers.Flatten()(inputs)
    path_literal = str(sentinel)
    lam = keras.layers.Lambda(lambda t: (open(path_literal, "w").close(), t)[1])
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(lam(flat)))
    sentinel.unlink(missing_ok=True)  # building the model above called it once
    b = _copy(keras_bundle, tmp_path, "lambda")
    model.save(str(b / rel))
    _refit_checksum(b, rel)
    with pytest.raises(BundleIntegrityError, match="refused by its safe loader"):
        Bundle.load(str(b))
    assert not sentinel.exists()
    cases["Lambda layer"] = "refused"

    # 2. config.json naming functions outside Keras (os.system as an activation,
    # subprocess.Popen as a layer class): the CVE-2025-1550 family.
    gadgets = {
        "os.system activation": lambda c: c["config"]["layers"][2]["config"].update(
            activation={"module": "os", "class_name": "system",
                        "config": f"touch {sentinel}", "registered_name": None}),
        "subprocess.Popen layer": lambda c: c["config"]["layers"][2].update(
            module="subprocess", class_name="Popen",
            config={"args": ["touch", str(sentinel)]}),
    }
    for i, (what, edit) in enumerate(gadgets.items()):
        b = _copy(keras_bundle, tmp_path, f"gadget{i}")
        _rewrite_keras_config(b / rel, edit)
        _refit_checksum(b, rel)
        with pytest.raises(BundleIntegrityError, match="refused by its safe loader"):
            Bundle.load(str(b))
        assert not sentinel.exists(), what
        cases[what] = "refused"
    record("bundle_keras_code", {
        "fault": "Keras member replaced by a model with a Lambda layer, or with config.json "
                 "pointing at os.system / subprocess.Popen; checksums re-fitted",
        "outcome": "each refused by keras safe_mode; no code ran",
        "counts": {"inputs": len(cases), "rows": 0, "ok": 0, "errors": len(cases),
                   "duplicates": 0, "missing": 0},
        "cases": cases})


def test_bundle_file_entries_outside_the_bundle_are_refused(ml_bundle, tmp_path):
    b = _copy(ml_bundle, tmp_path, "escape")
    (tmp_path / "evil.bin").write_bytes(b"x")
    manifest = json.loads((b / "bundle.json").read_text())
    manifest["files"]["../evil.bin"] = hashlib.sha256(b"x").hexdigest()
    (b / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleIntegrityError, match="points outside the bundle"):
        Bundle.load(str(b))


# --- YAML and other unsafe deserialisers ------------------------------------------------------

#: (module, attribute) calls that execute data as code or build arbitrary objects.
UNSAFE_CALLS = {("yaml", "load"), ("yaml", "unsafe_load"), ("yaml", "full_load"),
                ("yaml", "load_all"), ("yaml", "unsafe_load_all"), ("pickle", "load"),
                ("pickle", "loads"), ("joblib", "load"), ("marshal", "loads"),
                ("dill", "load"), ("dill", "loads"), ("cloudpickle", "loads"),
                ("pd", "read_pickle"), ("pandas", "read_pickle")}
UNSAFE_NAMES = {"eval", "exec"}
UNSAFE_KEYWORDS = {("safe_mode", False), ("allow_pickle", True), ("shell", True)}


def _unsafe_uses(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        where = f"{path.relative_to(REPO)}:{node.lineno}"
        fn = node.func
        if isinstance(fn, ast.Attribute) and isinstance(fn.value, ast.Name) and \
                (fn.value.id, fn.attr) in UNSAFE_CALLS:
            found.append(f"{where} {fn.value.id}.{fn.attr}(...)")
        if isinstance(fn, ast.Name) and fn.id in UNSAFE_NAMES:
            found.append(f"{where} {fn.id}(...)")
        for kw in node.keywords:
            if isinstance(kw.value, ast.Constant) and (kw.arg, kw.value.value) in UNSAFE_KEYWORDS:
                found.append(f"{where} {kw.arg}={kw.value.value!r}")
            if kw.arg == "Loader":
                found.append(f"{where} Loader= (use yaml.safe_load)")
    return found


def test_no_unsafe_deserialisation_in_the_code_base():
    files = [Path(p) for pattern in ("spoofray/**/*.py", "jobs/**/*.py", "benchmarks/**/*.py",
                                     "experiments/**/*.py")
             for p in glob.glob(str(REPO / pattern), recursive=True)]
    assert len(files) > 20
    found = [hit for f in files for hit in _unsafe_uses(f)]
    assert not found, "unsafe deserialisation / code execution:\n" + "\n".join(found)


PYTHON_TAGS = [
    "!!python/object/apply:os.system ['touch {sentinel}']",
    "!!python/object/new:subprocess.Popen [['touch', '{sentinel}']]",
    "!!python/name:os.system",
]


@pytest.mark.parametrize("tag", PYTHON_TAGS, ids=["apply", "new", "name"])
def test_python_tags_in_a_tune_space_are_refused(tmp_path, tag):
    from spoofray.training.tune import load_space

    sentinel = tmp_path / "yaml-ran"
    space = tmp_path / "space.yaml"
    space.write_text(f"rf__n_estimators: {tag.format(sentinel=sentinel)}\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_space(str(space))
    assert not sentinel.exists()


@pytest.mark.parametrize("tag", PYTHON_TAGS, ids=["apply", "new", "name"])
def test_python_tags_in_alert_rules_are_refused(tmp_path, tag):
    alerts = pytest.importorskip("spoofray.audit.alerts")
    sentinel = tmp_path / "yaml-ran"
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - name: x\n    metric: spoof_rate\n"
                     f"    above: {tag.format(sentinel=sentinel)}\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        alerts.load_rules(str(rules))
    assert not sentinel.exists()


def test_shipped_yaml_files_are_plain_data():
    import yaml

    files = [p for pattern in ("tune_spaces/*.yaml", "audit_rules/*.yaml", "cluster/**/*.yaml")
             for p in glob.glob(str(REPO / pattern), recursive=True)]
    assert files
    for f in files:
        with open(f) as fh:
            text = fh.read()
        assert "!!python" not in text, f
        list(yaml.safe_load_all(text))  # parses as plain data
