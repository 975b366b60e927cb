"""Nightly archive audit: score only new, changed or previously failed files, append a
date=YYYY-MM-DD report partition, compare with earlier nights, fire alerts.

Examples
--------
  python jobs/nightly_audit.py --input s3://archive/calls/ --output s3://archive/audit/ \\
      --bundle s3://models/calls/1.0 --rules audit_rules/default.yaml
  python jobs/nightly_audit.py --input ~/calls --output out/audit --rescore
  python jobs/nightly_audit.py --input ~/calls --output out/audit --bundle new_bundle/ \\
      --on-new-bundle new-only
  ray job submit --working-dir . -- python jobs/nightly_audit.py --input s3://... --output s3://...
  python jobs/nightly_audit.py --smoke-test

Output (under --output):
  date=YYYY-MM-DD/run_id=<id>/report/*.parquet  the night's report (one row per scored file)
  _audit/ledger.parquet                         one row per file: what was scored, by which bundle
  _audit/date=YYYY-MM-DD/run_id=<id>/           index.html (offline page), alerts.json,
                                                audit.json, drift.parquet, summary.wav

Exit codes (for cron, Kubernetes, Airflow):
  0  ok, no alert fired
  1  crash (unexpected error; nothing half-written is kept: the next run repeats the work)
  2  usage or configuration error (bad flag, rules file, date, bundle, input)
  3  the run finished and at least one alert rule fired (see alerts.json)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import traceback

import _bootstrap  # noqa: F401  (sys.path + logging)

from spoofray import cli
from spoofray.errors import BundleIntegrityError, ConfigError, OutputExistsError, SourceError

#: Exit codes, as documented above (the same numbers as spoofray.audit.alerts.EXIT_*; kept
#: here so that --help needs no heavy imports).
EXIT_OK, EXIT_CRASH, EXIT_USAGE, EXIT_ALERTS = 0, 1, 2, 3
#: Errors that mean "fix the command or its inputs" (exit 2) rather than a crash (exit 1).
USAGE_ERRORS = (ConfigError, SourceError, OutputExistsError, BundleIntegrityError)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from spoofray.audit import AuditConfig

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_config_flags(p, AuditConfig)
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else local Ray)")
    p.add_argument("--num-cpus", type=int, help="CPUs for a local Ray (default: all)")
    p.add_argument("--smoke-test", action="store_true",
                   help="audit a tiny generated archive twice (a file added in between) and "
                   "check that the second night scores only that file")
    p.add_argument("--verbose", action="store_true",
                   help="also show Ray's and TensorFlow's start-up and progress output")
    args = p.parse_args(argv)
    if not args.smoke_test:
        cli.require(p, args, "input", "output")
    return args


def build_config(args: argparse.Namespace, overrides: dict | None = None):
    from spoofray.audit import AuditConfig

    return cli.build_config(AuditConfig, args, overrides)


def _print(result: dict) -> None:
    for run in result["runs"]:
        print(json.dumps({
            "run_id": run["run_id"], "date": run["date"], "recovered": run["recovered"],
            "counts": run["counts"], "scored": run["n_scored"], "report": run["run_uri"],
            "alerts": [a["message"] for a in run["alerts"]["fired"]], "page": run["page"],
            "spoken_summary": run["spoken_summary"] or run["spoken_summary_note"]}, indent=2))
    print(f"exit code {result['exit_code']} ({result['alerts_fired']} alert(s) fired)")


def _smoke(args: argparse.Namespace, tmp: str) -> int:
    from spoofray.audit import run_audit
    from spoofray.testing.bundles import build_demo_bundle
    from spoofray.testing import signals
    from spoofray.testing.synth import make_demo_archive

    archive = make_demo_archive(f"{tmp}/archive", seed=0, n_bonafide=3, n_spoof=3,
                                broken=False, duration_range_s=(1.0, 2.0))
    smoke = {"input": archive.root, "output": f"{tmp}/audit",
             "bundle": cli.given(args).get("bundle") or build_demo_bundle(f"{tmp}/demo_bundle")}
    first = run_audit(build_config(args, smoke))
    _print(first)
    signals.write_wav(os.path.join(archive.root, "bonafide", "added.wav"),
                      signals.voiced(140.0, 1.5, 16_000), 16_000)
    second = run_audit(build_config(args, smoke))
    _print(second)
    if first["runs"][-1]["n_scored"] != len(archive.items) or second["runs"][-1]["n_scored"] != 1:
        print("smoke test failed: night 2 should score exactly the one added file",
              file=sys.stderr)
        return EXIT_CRASH
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)  # exits 2 on a usage error
    from spoofray import console

    console.set_verbose(args.verbose or console.verbose())
    from spoofray.audit import run_audit
    from spoofray.audit.run import preflight
    from spoofray.pipeline.runtime import init_ray

    try:
        with tempfile.TemporaryDirectory(prefix="spoofray-audit-smoke-") as tmp:
            if args.smoke_test:
                init_ray(args.address, num_cpus=args.num_cpus)
                return _smoke(args, tmp)
            cfg = build_config(args)
            # rules, output, bundle, input, S3 credentials: refused before Ray starts
            items = preflight(cfg)
            init_ray(args.address, num_cpus=args.num_cpus)
            result = run_audit(cfg, items=items)
            _print(result)
            return result["exit_code"]
    except USAGE_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception:  # noqa: BLE001 - a scheduler needs the crash code, and the traceback
        traceback.print_exc()
        return EXIT_CRASH


if __name__ == "__main__":
    sys.exit(main())
