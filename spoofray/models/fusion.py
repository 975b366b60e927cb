"""How a bundle turns its members' scores into one spoof score, and where it draws the line.

Two rules, both stored in ``bundle.json`` as plain numbers (never a pickle):

``mean``      weighted average of the members' P(spoof) (the seed detector's rule);
``logistic``  logistic regression on the members' log-odds, fitted on held-out dev scores:
              ``sigmoid(intercept + sum_m coef_m * logit(p_m))``.

The decision threshold is put at the equal-error-rate point of dev scores, using
:func:`spoofray.metrics.compute_eer` so that it agrees with the reported EER.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

from spoofray.config import Config
from spoofray.errors import ConfigError, MetricError

FUSION_RULES = ("mean", "logistic")

#: Probabilities are clipped to [EPS, 1 - EPS] before taking log-odds so 0 and 1 stay finite.
EPS = 1e-6


def logit(p: np.ndarray) -> np.ndarray:
    """Log-odds of probabilities, clipped so that 0 and 1 map to finite values."""
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1.0 - EPS)
    return np.log(p) - np.log1p(-p)


def sigmoid(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free form of 1 / (1 + exp(-z))


@dataclasses.dataclass(frozen=True)
class Fusion(Config):
    """A fusion rule over named members.

    Attributes
    ----------
    rule : {'mean', 'logistic'}
    members : tuple of str
        Member names, in the order of ``weights``.
    weights : tuple of float
        ``mean``: non-negative weights, normalised to sum to 1 when applied.
        ``logistic``: one coefficient per member on its log-odds.
    intercept : float
        ``logistic`` only.
    """

    rule: str = "mean"
    members: tuple[str, ...] = ()
    weights: tuple[float, ...] = ()
    intercept: float = 0.0

    def __post_init__(self) -> None:
        if self.rule not in FUSION_RULES:
            raise ConfigError(f"fusion rule {self.rule!r} unknown; choose one of {list(FUSION_RULES)}")
        if not self.members:
            raise ConfigError("a fusion rule needs at least one member")
        if len(self.weights) != len(self.members):
            raise ConfigError(
                f"fusion has {len(self.members)} members {list(self.members)} but "
                f"{len(self.weights)} weights {list(self.weights)}; give one weight per member"
            )
        if len(set(self.members)) != len(self.members):
            raise ConfigError(f"fusion members must be unique, got {list(self.members)}")
        values = [*self.weights, self.intercept]
        if not all(isinstance(w, (int, float)) and math.isfinite(w) for w in values):
            raise ConfigError(f"fusion weights and intercept must be finite numbers, got {values}")
        if self.rule == "mean" and (min(self.weights) < 0 or sum(self.weights) <= 0):
            raise ConfigError(
                f"mean fusion needs non-negative weights with a positive sum, got {list(self.weights)}"
            )

    def apply(self, scores: Mapping[str, np.ndarray]) -> np.ndarray:
        """Fuse per-member scores.

        Parameters
        ----------
        scores : mapping of member name to ndarray, shape (n,)
            P(spoof) of each member; every member of the rule must be present.

        Returns
        -------
        ndarray, shape (n,), float64
            Fused P(spoof) in [0, 1].
        """
        missing = [m for m in self.members if m not in scores]
        if missing:
            raise ConfigError(f"fusion needs scores of members {missing}; got {sorted(scores)}")
        stacked = np.stack([np.asarray(scores[m], dtype=np.float64) for m in self.members], axis=1)
        w = np.asarray(self.weights, dtype=np.float64)
        if self.rule == "mean":
            fused = stacked @ (w / w.sum())
        else:
            fused = sigmoid(logit(stacked) @ w + self.intercept)
        return fused


def fusion_over(fusion: Fusion, members: Sequence[str]) -> Fusion:
    """The rule restricted to some of its members (the members of one band of a bundle).

    ``mean`` keeps those members' weights (renormalised when applied); ``logistic`` was
    fitted on all its members together, so it is only "restricted" to all of them.
    """
    members = tuple(members)
    unknown = [m for m in members if m not in fusion.members]
    if unknown:
        raise ConfigError(f"members {unknown} are not in the fusion rule {list(fusion.members)}")
    if members == fusion.members:
        return fusion
    if fusion.rule != "mean":
        raise ConfigError(f"a {fusion.rule} fusion was fitted on members {list(fusion.members)} "
                          f"together and cannot score {list(members)} alone; give every band "
                          "all members, or fuse with the mean rule")
    weights = dict(zip(fusion.members, fusion.weights))
    return Fusion(rule="mean", members=members, weights=tuple(weights[m] for m in members))


def mean_fusion(members: Sequence[str], weights: Sequence[float] | None = None) -> Fusion:
    """Weighted probability averaging (equal weights by default)."""
    members = tuple(members)
    if weights is None:
        weights = [1.0] * len(members)
    return Fusion(rule="mean", members=members, weights=tuple(float(w) for w in weights))


def fit_logistic_fusion(member_scores: Mapping[str, np.ndarray], labels: np.ndarray,
                        *, C: float = 1.0) -> Fusion:
    """Fit logistic-regression fusion on dev scores.

    Parameters
    ----------
    member_scores : mapping of member name to ndarray, shape (n,)
        Each member's P(spoof) on held-out dev windows (never on its training data).
    labels : ndarray, shape (n,)
        1 = spoof, 0 = bona fide; both classes must be present.
    C : float
        Inverse L2 strength (scikit-learn's convention); keeps coefficients sane when
        members are strongly correlated.
    """
    from sklearn.linear_model import LogisticRegression

    members = tuple(member_scores)
    y = np.asarray(labels).astype(np.int64).ravel()
    if len(np.unique(y)) < 2:
        raise MetricError(
            f"fitting fusion needs dev scores of both classes; got only label {np.unique(y).tolist()}"
        )
    X = logit(np.stack([np.asarray(member_scores[m], dtype=np.float64) for m in members], axis=1))
    if X.shape[0] != y.shape[0]:
        raise ConfigError(f"fusion fit: {X.shape[0]} score rows but {y.shape[0]} labels")
    model = LogisticRegression(C=C, max_iter=1000).fit(X, y)
    return Fusion(rule="logistic", members=members,
                  weights=tuple(float(c) for c in model.coef_[0]),
                  intercept=float(model.intercept_[0]))
