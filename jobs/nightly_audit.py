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

import _bootstrap  # sys.path + logging, absolute()

from spoofray.errors import BundleIntegrityError, ConfigError, OutputExistsError, SourceError

#: Exit codes, as documented above (the same numbers as spoofray.audit.alerts.EXIT_*; kept
#: here so that --help needs no heavy imports).
EXIT_OK, EXIT_CRASH, EXIT_USAGE, EXIT_ALERTS = 0, 1, 2, 3
#: Errors that mean "fix the command or its inputs" (exit 2) rather than a crash (exit 1).
USAGE_ERRORS = (ConfigError, SourceError, OutputExistsError, BundleIntegrityError)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", help="archive: folder, s3:// prefix, manifest or ASVspoof protocol")
    p.add_argument("--output", help="audit root, local or s3:// (date= partitions, _audit/)")
    p.add_argument("--bundle", help="bundle folder, local or s3://, or 'latest' (the newest "
                   "in the local registry); default: the shipped spoofray-base "
                   "(docs/model_card.md)")
    p.add_argument("--audio-root", help="audio folder of an ASVspoof protocol")
    p.add_argument("--rules", help="alert rules YAML (e.g. audit_rules/default.yaml); "
                   "without it no alert can fire")
    p.add_argument("--date", help="partition date YYYY-MM-DD (default: today, UTC)")
    p.add_argument("--run-id", help="name of this run (default: UTC time + random suffix)")
    p.add_argument("--rescore", action="store_true",
                   help="score every listed file, changed or not")
    p.add_argument("--on-new-bundle", choices=("rescore-all", "new-only"), default="rescore-all",
                   help="when the bundle name/version differs from the ledger's: rescore "
                   "every file, or only new/changed/errored ones (default: %(default)s)")
    p.add_argument("--no-retry-errors", action="store_true",
                   help="do not score files whose last result was an error again")
    p.add_argument("--reference-runs", type=int, default=7,
                   help="earlier runs that form the drift reference (default: %(default)s)")
    p.add_argument("--psi-bins", type=int, default=10,
                   help="equal-width score bins of the PSI (default: %(default)s)")
    p.add_argument("--drift-min-files", type=int, default=10,
                   help="fewest scored files per group for PSI/KS (default: %(default)s)")
    p.add_argument("--no-spoken-summary", action="store_true",
                   help="do not make summary.wav (made with espeak-ng when installed)")
    p.add_argument("--threshold", type=float, help="decision threshold overriding the bundle's")
    p.add_argument("--files-per-task", type=int, default=4,
                   help="files per featurize task (default: %(default)s)")
    p.add_argument("--featurize-concurrency", type=int,
                   help="most featurize tasks at once (default: as many as CPUs allow)")
    p.add_argument("--batch-size", type=int, default=16,
                   help="files per scoring batch (default: %(default)s)")
    p.add_argument("--concurrency", type=int, default=1,
                   help="scoring actors (default: %(default)s)")
    p.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per scoring actor")
    p.add_argument("--num-cpus-per-actor", type=float, default=1.0)
    p.add_argument("--no-plots", action="store_true",
                   help="no report plots (the audit page keeps its own)")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else local Ray)")
    p.add_argument("--num-cpus", type=int, help="CPUs for a local Ray (default: all)")
    p.add_argument("--smoke-test", action="store_true",
                   help="audit a tiny generated archive twice (a file added in between) and "
                   "check that the second night scores only that file")
    args = p.parse_args(argv)
    if not args.smoke_test and not (args.input and args.output):
        p.error("--input and --output are required (or use --smoke-test)")
    return args


def build_config(args: argparse.Namespace):
    from spoofray.audit import AuditConfig

    return AuditConfig(
        input=_bootstrap.absolute(args.input), output=_bootstrap.absolute(args.output),
        bundle=_bootstrap.absolute(args.bundle), audio_root=_bootstrap.absolute(args.audio_root),
        rules=_bootstrap.absolute(args.rules), date=args.date, run_id=args.run_id,
        rescore=args.rescore, on_new_bundle=args.on_new_bundle,
        retry_errors=not args.no_retry_errors, reference_runs=args.reference_runs,
        psi_bins=args.psi_bins, drift_min_files=args.drift_min_files,
        spoken_summary=not args.no_spoken_summary, threshold=args.threshold,
        files_per_task=args.files_per_task, featurize_concurrency=args.featurize_concurrency,
        batch_size=args.batch_size, concurrency=args.concurrency, num_gpus=args.num_gpus,
        num_cpus_per_actor=args.num_cpus_per_actor, plots=not args.no_plots)


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
    args.input, args.output = archive.root, f"{tmp}/audit"
    args.bundle = args.bundle or build_demo_bundle(f"{tmp}/demo_bundle")
    first = run_audit(build_config(args))
    _print(first)
    signals.write_wav(os.path.join(archive.root, "bonafide", "added.wav"),
                      signals.voiced(140.0, 1.5, 16_000), 16_000)
    second = run_audit(build_config(args))
    _print(second)
    if first["runs"][-1]["n_scored"] != len(archive.items) or second["runs"][-1]["n_scored"] != 1:
        print("smoke test failed: night 2 should score exactly the one added file",
              file=sys.stderr)
        return EXIT_CRASH
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)  # exits 2 on a usage error
    from spoofray.audit import load_rules, run_audit
    from spoofray.pipeline.runtime import init_ray

    try:
        with tempfile.TemporaryDirectory(prefix="spoofray-audit-smoke-") as tmp:
            if args.smoke_test:
                init_ray(args.address, num_cpus=args.num_cpus)
                return _smoke(args, tmp)
            cfg = build_config(args)
            load_rules(cfg.rules)  # a broken rules file fails before Ray starts
            init_ray(args.address, num_cpus=args.num_cpus)
            result = run_audit(cfg)
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
