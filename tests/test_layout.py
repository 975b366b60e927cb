"""The layout rules of DESIGN.md, read from the source with ``ast`` (nothing is imported):
no import cycles inside spoofray, fixtures only where fixtures belong, tests independent of
each other, Ray only in the layers that run on it."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "benchmarks", "import_cycles.py")

#: Production modules still allowed to import spoofray.testing, each with the reason and
#: what ends it. Empty this as soon as the reason is gone.
PENDING_FIXTURE_IMPORTS: dict[str, str] = {}
#: Where Ray may be imported, inside the package (jobs/, tests/, benchmarks/ and
#: experiments/ are outside it and may).
RAY_PACKAGES = ("spoofray/pipeline/", "spoofray/training/")


def _load_checker():
    spec = importlib.util.spec_from_file_location("import_cycles", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


CHECK = _load_checker()


def _files(folder: str) -> list[str]:
    return [os.path.relpath(p, REPO) for p in CHECK.python_files(os.path.join(REPO, folder))]


def _imports(rel: str):
    return CHECK.file_imports(os.path.join(REPO, rel), REPO)


def _is(module: str, name: str) -> bool:
    return module == name or module.startswith(name + ".")


def test_spoofray_has_no_import_cycles():
    run = subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert " 0 cycle(s)" in run.stdout


def test_the_cycle_finder_sees_late_imports_and_reports_a_loop(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg import b\n")
    (pkg / "b.py").write_text("def f():\n    from pkg.c import g\n")
    (pkg / "c.py").write_text("import pkg.a\nfrom typing import TYPE_CHECKING\n"
                              "if TYPE_CHECKING:\n    from pkg import d\n")
    (pkg / "d.py").write_text("from . import c\n")
    graph = CHECK.import_graph("pkg", str(tmp_path))
    assert graph["pkg.b"] == {"pkg.c": [2]} and "pkg.d" not in graph["pkg.c"]
    assert graph["pkg.d"] == {"pkg.c": [1]}
    assert CHECK.cycles(graph) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]


def test_production_code_never_imports_the_fixtures():
    offenders = []
    for rel in _files("spoofray"):
        if rel.startswith("spoofray/testing/"):
            continue
        hits = [i for i in _imports(rel) if _is(i.module, "spoofray.testing")]
        if rel in PENDING_FIXTURE_IMPORTS:
            assert hits, f"{rel} no longer imports spoofray.testing: drop it from PENDING"
            continue
        offenders += [f"{rel}:{i.line} imports {i.module}" for i in hits]
    # Jobs may use fixtures only for their --smoke-test runs, inside functions (the import
    # never runs otherwise); the demo is made of fixtures.
    for rel in _files("jobs"):
        if rel == "jobs/demo.py":
            continue
        offenders += [f"{rel}:{i.line} imports {i.module} at module level"
                      for i in _imports(rel) if _is(i.module, "spoofray.testing") and not i.late]
    assert not offenders, "\n".join(offenders)


def test_no_test_module_imports_another():
    names = {os.path.splitext(os.path.basename(rel))[0] for rel in _files("tests")}
    offenders = [f"{rel}:{i.line} imports {i.module}"
                 for rel in _files("tests") for i in _imports(rel)
                 if _is(i.module, "tests") or i.module.split(".")[0] in names]
    assert not offenders, "\n".join(offenders) + "\n(shared helpers go to spoofray/testing/, " \
                                                  "fixtures to tests/conftest.py)"


def test_only_the_ray_layers_import_ray():
    offenders = [f"{rel}:{i.line} imports {i.module}"
                 for rel in _files("spoofray") if not rel.startswith(RAY_PACKAGES)
                 for i in _imports(rel) if _is(i.module, "ray")]
    assert not offenders, "\n".join(offenders)


def test_benchmarks_and_experiments_are_not_installed():
    import tomllib

    with open(os.path.join(REPO, "pyproject.toml"), "rb") as fh:
        find = tomllib.load(fh)["tool"]["setuptools"]["packages"]["find"]
    assert find["include"] == ["spoofray*"]
    assert not any(os.path.exists(os.path.join(REPO, "spoofray", name))
                   for name in ("benchmark.py", "quality.py", "hostile.py", "testing.py"))
