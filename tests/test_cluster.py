"""The cluster definitions under cluster/: every manifest parses, has the fields its format
requires, and every job command it runs accepts the flags it is given.

The flag check runs the real ``python jobs/X.py --help`` (and ``ray job submit --help``), so
renaming a job flag without updating the manifests breaks the build. The cluster-launcher
YAML is validated by Ray's own autoscaler schema.
"""

from __future__ import annotations

import functools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
MANIFESTS = sorted(p for p in CLUSTER.rglob("*.yaml"))
K8S_KINDS = ("RayCluster", "RayJob", "RayCronJob", "CronJob")
JOB_COMMAND = re.compile(r"python\s+(jobs/[\w-]+\.py)\b([^\n]*)")
CRON_FIELD = re.compile(r"^(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*$")


def docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def k8s_docs() -> list[tuple[str, dict]]:
    return [(p.name, d) for p in MANIFESTS for d in docs(p) if "apiVersion" in d]


def test_every_manifest_parses_and_the_expected_set_exists():
    assert MANIFESTS, "no YAML under cluster/"
    kinds = []
    for path in MANIFESTS:
        parsed = docs(path)
        assert parsed, f"{path} is empty"
        assert all(isinstance(d, dict) for d in parsed), path
        kinds += [d.get("kind") for d in parsed]
    for kind in K8S_KINDS:
        assert kind in kinds, f"no {kind} manifest under cluster/"
    assert (CLUSTER / "autoscaler-aws.yaml").exists() and (CLUSTER / "runtime_env.yaml").exists()


@pytest.mark.parametrize("name,doc", k8s_docs(), ids=lambda x: x if isinstance(x, str) else "")
def test_kubernetes_objects_have_the_required_top_level_fields(name, doc):
    for key in ("apiVersion", "kind", "metadata", "spec"):
        assert key in doc, f"{name}: {key} missing"
    meta = doc["metadata"]
    assert meta.get("name") or meta.get("generateName"), f"{name}: metadata needs a name"
    if doc["kind"] in ("RayCluster", "RayJob", "RayCronJob"):
        assert doc["apiVersion"] == "ray.io/v1", name
    if doc["kind"] == "CronJob":
        assert doc["apiVersion"] == "batch/v1", name


def check_ray_cluster_spec(spec: dict, where: str) -> None:
    """What KubeRay's ray.io/v1 RayClusterSpec requires, plus spoofray's two pools."""
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict), where
    assert all(isinstance(v, str) for v in head["rayStartParams"].values()), \
        f"{where}: rayStartParams values must be strings"
    assert head["template"]["spec"]["containers"][0]["image"], where
    groups = spec["workerGroupSpecs"]
    names = [g["groupName"] for g in groups]
    assert len(set(names)) == len(names), f"{where}: duplicate groupName"
    gpu_groups = []
    for g in groups:
        assert isinstance(g["rayStartParams"], dict), f"{where} {g['groupName']}"
        assert 0 <= g["minReplicas"] <= g.get("replicas", g["minReplicas"]) <= g["maxReplicas"], \
            f"{where} {g['groupName']}: need minReplicas <= replicas <= maxReplicas"
        containers = g["template"]["spec"]["containers"]
        assert containers and containers[0]["image"], f"{where} {g['groupName']}"
        limits = containers[0].get("resources", {}).get("limits", {})
        if "nvidia.com/gpu" in limits:
            gpu_groups.append(g["groupName"])
    assert gpu_groups and len(gpu_groups) < len(groups), \
        f"{where}: expected a CPU worker group and a GPU worker group, got {names}"


def check_ray_job_spec(spec: dict, where: str) -> None:
    """ray.io/v1 RayJobSpec: an entrypoint and a cluster (new: rayClusterSpec, or existing:
    clusterSelector); runtimeEnvYAML must be YAML of known runtime_env fields."""
    from ray.runtime_env import RuntimeEnv

    assert isinstance(spec["entrypoint"], str) and spec["entrypoint"].strip(), where
    assert ("rayClusterSpec" in spec) != ("clusterSelector" in spec), \
        f"{where}: give exactly one of rayClusterSpec or clusterSelector"
    if "rayClusterSpec" in spec:
        check_ray_cluster_spec(spec["rayClusterSpec"], f"{where} rayClusterSpec")
    if "runtimeEnvYAML" in spec:
        env = yaml.safe_load(spec["runtimeEnvYAML"])
        assert set(env) <= RuntimeEnv.known_fields, f"{where}: {set(env) - RuntimeEnv.known_fields}"


def check_cron(schedule: str, where: str) -> None:
    fields = schedule.split()
    assert len(fields) == 5, f"{where}: cron schedule needs 5 fields, got {schedule!r}"
    assert all(CRON_FIELD.match(f) for f in fields), f"{where}: bad cron field in {schedule!r}"


def test_kuberay_and_cronjob_specs():
    seen = set()
    for name, doc in k8s_docs():
        kind, spec = doc["kind"], doc["spec"]
        seen.add(kind)
        if kind == "RayCluster":
            check_ray_cluster_spec(spec, name)
            assert spec.get("enableInTreeAutoscaling") is True, f"{name}: autoscaling off"
        elif kind == "RayJob":
            check_ray_job_spec(spec, name)
        elif kind == "RayCronJob":
            check_cron(spec["schedule"], name)
            check_ray_job_spec(spec["jobTemplate"], f"{name} jobTemplate")
        elif kind == "CronJob":
            check_cron(spec["schedule"], name)
            pod = spec["jobTemplate"]["spec"]["template"]["spec"]
            assert pod["restartPolicy"] in ("Never", "OnFailure"), name
            assert pod["containers"][0]["image"], name
            assert spec.get("concurrencyPolicy") == "Forbid", \
                f"{name}: the audit ledger has one writer; concurrencyPolicy must be Forbid"
    assert seen == set(K8S_KINDS)


def test_cluster_launcher_config_passes_rays_own_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = docs(CLUSTER / "autoscaler-aws.yaml")[0]
    for key in ("cluster_name", "provider", "available_node_types", "head_node_type",
                "setup_commands"):
        assert cfg.get(key), f"autoscaler-aws.yaml: {key} missing"
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types
    for name, node in types.items():
        for key in ("min_workers", "max_workers", "resources"):
            assert key in node, f"node type {name}: {key} missing"
        assert 0 <= node["min_workers"] <= node["max_workers"], name
    workers = {n: t for n, t in types.items() if n != cfg["head_node_type"]}
    assert any(t["resources"].get("GPU", 0) > 0 for t in workers.values()), "no GPU pool"
    assert any(t["resources"].get("GPU", 0) == 0 for t in workers.values()), "no CPU pool"
    assert any("pip install" in c and "spoofray" in c for c in cfg["setup_commands"])
    validate_config(prepare_config(cfg))  # raises on any schema violation


def test_runtime_env_file_uses_known_fields_only():
    from ray.runtime_env import RuntimeEnv

    env = docs(CLUSTER / "runtime_env.yaml")[0]
    assert set(env) <= RuntimeEnv.known_fields, set(env) - RuntimeEnv.known_fields
    assert env["working_dir"] == "." and ".venv/" in env["excludes"]
    RuntimeEnv(**env)


# --- job commands -------------------------------------------------------------------------------


def _strings(node) -> list[str]:
    """Every string in a parsed document; a list of strings (a container command) is also
    joined into one command line."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        out = [s for v in node for s in _strings(v)]
        if node and all(isinstance(v, str) for v in node):
            out.append(" ".join(shlex.quote(v) for v in node))
        return out
    return []


def job_commands() -> list[tuple[str, str, list[str]]]:
    """``(manifest, jobs/X.py, [--flags])`` for every job command in the manifests."""
    found = {}
    for path in MANIFESTS:
        for doc in docs(path):
            for text in _strings(doc):
                for m in JOB_COMMAND.finditer(" ".join(text.split())):
                    flags = [t.split("=", 1)[0] for t in shlex.split(m.group(2))
                             if t.startswith("--")]
                    found[(path.name, m.group(1), tuple(flags))] = None
    return [(p, script, list(flags)) for p, script, flags in found]


@functools.lru_cache(maxsize=None)
def help_text(*command: str) -> str:
    run = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert run.returncode == 0, f"{' '.join(command)} failed:\n{run.stderr[-2000:]}"
    return run.stdout


def test_manifests_run_the_jobs_they_should():
    scripts = {(p, s) for p, s, _ in job_commands()}
    assert ("rayjob-score-archive.yaml", "jobs/score_archive.py") in scripts
    assert ("raycronjob-nightly-audit.yaml", "jobs/nightly_audit.py") in scripts
    assert ("cronjob-nightly-audit.yaml", "jobs/nightly_audit.py") in scripts


@pytest.mark.parametrize("manifest,script,flags", job_commands(),
                         ids=[f"{p}:{s}" for p, s, _ in job_commands()])
def test_every_flag_a_manifest_uses_is_in_the_jobs_help(manifest, script, flags):
    assert (REPO / script).exists(), f"{manifest} runs {script}, which does not exist"
    text = help_text(sys.executable, script, "--help")
    assert flags, f"{manifest}: {script} is run without flags?"
    missing = [f for f in flags if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", text)]
    assert not missing, f"{manifest}: {script} has no flag(s) {missing} (renamed?)"


def test_ray_job_submit_flags_in_the_cronjob_exist():
    import shutil

    ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    cron = next(d for _, d in k8s_docs() if d["kind"] == "CronJob")
    command = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:3] == ["ray", "job", "submit"]
    flags = [t.split("=", 1)[0] for t in command[3:command.index("--")] if t.startswith("--")]
    text = help_text(ray_cli, "job", "submit", "--help")
    assert flags and all(f in text for f in flags), flags
