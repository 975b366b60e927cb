"""Nightly archive audits: score only what changed, compare with earlier nights, alert.

Modules
-------
ledger
    The ledger (what was scored, from which file version, with which bundle), the work
    selection, plans and the commit protocol that makes an interrupted run repeatable.
drift
    Population stability index and KS statistic, overall and per top-level folder.
alerts
    Alert rules (YAML), their evaluation, and the job's exit codes.
page
    The offline HTML page (inline PNGs) and the espeak-ng spoken summary.
run
    :class:`AuditConfig` and :func:`run_audit`, what ``jobs/nightly_audit.py`` calls.

Only :mod:`run` touches Ray, through :func:`spoofray.pipeline.score.score_archive`
imported when it is needed.
"""

from spoofray.audit.alerts import (EXIT_ALERTS, EXIT_CRASH, EXIT_OK, EXIT_USAGE, AlertRule,
                                   evaluate_rules, load_rules, parse_rules)
from spoofray.audit.drift import drift_table, ks_statistic, population_stability_index
from spoofray.audit.ledger import (fingerprints, ledger_uri, read_ledger, select_work)
from spoofray.audit.run import AuditConfig, read_audit_reports, run_audit

__all__ = [
    "EXIT_ALERTS", "EXIT_CRASH", "EXIT_OK", "EXIT_USAGE", "AlertRule", "AuditConfig",
    "drift_table", "evaluate_rules", "fingerprints", "ks_statistic", "ledger_uri",
    "load_rules", "parse_rules", "population_stability_index", "read_audit_reports",
    "read_ledger", "run_audit", "select_work",
]
