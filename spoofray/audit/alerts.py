"""Alert rules (YAML) evaluated on a run's drift table, and the exit codes schedulers see.

A rules file::

    rules:
      - name: spoof-rate-high        # unique, shown in the alert
        metric: spoof_rate           # a column of the drift table (see METRICS)
        above: 0.30                  # fires when value > above   (or: below: <x>)
        scope: overall               # overall (default) | folders (each folder) | <folder>
        severity: critical           # warning (default) | critical

Loaded with ``yaml.safe_load``; every key is checked and a mistake is a
:class:`~spoofray.errors.ConfigError` naming the rule and the key, before any work starts.
A metric that cannot be computed for a group (e.g. PSI with too few files) is *skipped*,
never fired, and listed as such in the alert JSON.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from spoofray import storage
from spoofray.audit.drift import OVERALL
from spoofray.errors import ConfigError

#: Exit codes of ``jobs/nightly_audit.py`` (for cron, Kubernetes and Airflow alike).
EXIT_OK = 0
EXIT_CRASH = 1
EXIT_USAGE = 2
EXIT_ALERTS = 3

#: Metrics a rule may test: columns of :func:`spoofray.audit.drift.drift_table`.
METRICS = ("spoof_rate", "spoof_rate_change", "error_rate", "psi", "ks", "ks_pvalue",
           "mean_score", "n_current", "n_error")
SCOPES_SPECIAL = ("overall", "folders")
SEVERITIES = ("warning", "critical")
_RULE_KEYS = ("name", "metric", "above", "below", "scope", "severity", "description")


@dataclasses.dataclass(frozen=True)
class AlertRule:
    """One rule: ``metric`` of the groups in ``scope`` compared with a bound."""

    name: str
    metric: str
    above: float | None = None
    below: float | None = None
    scope: str = "overall"
    severity: str = "warning"
    description: str = ""

    def bound(self) -> tuple[str, float]:
        return ("above", self.above) if self.above is not None else ("below", self.below)

    def fires(self, value: float) -> bool:
        return value > self.above if self.above is not None else value < self.below


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where} must be a finite number, got {value!r}")
    return float(value)


def parse_rules(data: Any, *, source: str = "rules") -> tuple[AlertRule, ...]:
    """Rules from the parsed YAML document (``{"rules": [...]}``)."""
    if data is None:
        return ()
    if not isinstance(data, Mapping) or set(data) - {"rules"}:
        raise ConfigError(f"{source}: expected a mapping with one key 'rules' (a list of "
                          f"rules); got {type(data).__name__} with keys "
                          f"{sorted(data) if isinstance(data, Mapping) else '-'}")
    raw = data.get("rules") or []
    if not isinstance(raw, list):
        raise ConfigError(f"{source}: 'rules' must be a list, got {type(raw).__name__}")
    rules, names = [], set()
    for i, r in enumerate(raw, start=1):
        where = f"{source} rule {i}"
        if not isinstance(r, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {r!r}")
        unknown = sorted(set(r) - set(_RULE_KEYS))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys are "
                              f"{list(_RULE_KEYS)}")
        name = str(r.get("name") or f"rule-{i}")
        where = f"{source} rule {name!r}"
        if name in names:
            raise ConfigError(f"{where}: duplicate name; give each rule its own name")
        names.add(name)
        metric = r.get("metric")
        if metric not in METRICS:
            raise ConfigError(f"{where}: metric {metric!r} unknown; choose from {list(METRICS)}")
        if ("above" in r) == ("below" in r):
            raise ConfigError(f"{where}: give exactly one of 'above' or 'below'")
        severity = r.get("severity", "warning")
        if severity not in SEVERITIES:
            raise ConfigError(f"{where}: severity {severity!r} unknown; choose from "
                              f"{list(SEVERITIES)}")
        scope = r.get("scope", "overall")
        if not isinstance(scope, str) or not scope:
            raise ConfigError(f"{where}: scope must be 'overall', 'folders' or a folder name")
        rules.append(AlertRule(
            name=name, metric=metric, scope=scope, severity=severity,
            above=_number(r["above"], f"{where} 'above'") if "above" in r else None,
            below=_number(r["below"], f"{where} 'below'") if "below" in r else None,
            description=str(r.get("description", ""))))
    return tuple(rules)


def load_rules(uri: str | None) -> tuple[AlertRule, ...]:
    """Read and check a rules YAML file (local or ``s3://``); ``None`` means no rules."""
    import yaml

    if not uri:
        return ()
    try:
        text = storage.read_bytes(uri).decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"alert rules file {uri} not found") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"alert rules file {uri} is not UTF-8 text: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"alert rules file {uri} is not valid YAML: {exc}") from None
    return parse_rules(data, source=uri)


def _groups(rule: AlertRule, drift: pd.DataFrame) -> pd.DataFrame:
    if rule.scope == "overall":
        return drift[drift["group"] == OVERALL]
    if rule.scope == "folders":
        return drift[drift["group"] != OVERALL]
    return drift[drift["group"] == rule.scope]


def evaluate_rules(rules: Sequence[AlertRule], drift: pd.DataFrame) -> dict[str, Any]:
    """Apply rules to a drift table.

    Returns
    -------
    dict
        ``fired`` (one entry per rule and group over its bound: rule, severity, metric,
        group, value, bound, message), ``skipped`` (rule and group whose value is missing,
        with the reason) and ``n_rules``.
    """
    fired, skipped = [], []
    for rule in rules:
        kind, bound = rule.bound()
        groups = _groups(rule, drift)
        if not len(groups):
            skipped.append({"rule": rule.name, "group": rule.scope,
                            "reason": "no such group in this run"})
        for row in groups.itertuples(index=False):
            value = getattr(row, rule.metric)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                skipped.append({"rule": rule.name, "group": row.group,
                                "reason": row.note or f"{rule.metric} not available"})
                continue
            if rule.fires(float(value)):
                fired.append({
                    "rule": rule.name, "severity": rule.severity, "metric": rule.metric,
                    "group": row.group, "value": float(value), kind: bound,
                    "message": f"{rule.metric} of {row.group} is {float(value):.4g}, "
                               f"{kind} the limit {bound:g} ({rule.name})"})
    return {"n_rules": len(rules), "fired": fired, "skipped": skipped}
