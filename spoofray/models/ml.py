"""The scikit-learn soft-voting ensemble over window features, and its safe persistence.

Members (each can be switched off): ``rf`` RandomForest, ``hgb`` HistGradientBoosting,
``svc`` SVC (standardised, probabilities from :class:`~sklearn.calibration.CalibratedClassifierCV`
because scikit-learn 1.9 deprecates ``SVC(probability=True)``), ``knn`` KNeighbors
(standardised) and ``dt`` DecisionTree. The ensemble averages the members'
``predict_proba`` with the weights ``weight_<member>``.

Inputs (:data:`INPUTS`) are fixed-width views of the feature dataset's tensor columns:
``stats`` (the 26 DEEP-VOICE summaries) and ``<kind>_pooled`` (mean and standard
deviation over frames of ``mfcc``, ``lfcc`` or ``logmel``). :func:`design_matrix` builds
``X`` from them; the ensemble records which inputs it was trained on in ``inputs``.

With labels 0 = bona fide and 1 = spoof (or ``"bonafide"``/``"spoof"``), ``classes_`` is
sorted, so ``predict_proba(X)[:, 1]`` is P(spoof).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from spoofray import storage
from spoofray.errors import BundleIntegrityError, ConfigError

#: Ensemble members in a fixed order (also the order of ``estimators_``).
MEMBERS = ("rf", "hgb", "svc", "knn", "dt", "lr")

#: Input name -> the feature-dataset kind it is computed from.
INPUTS = {
    "stats": "stats",
    "mfcc_pooled": "mfcc",
    "lfcc_pooled": "lfcc",
    "logmel_pooled": "logmel",
    "mfcc_dynamics": "mfcc",
    "lfcc_dynamics": "lfcc",
    "lfcc_narrow_dynamics": "lfcc_narrow",
    # One Whisper encoder state each (0: the first block's input, 4: the last block's
    # output after the final norm), already pooled per window: [mean, std] over frames.
    **{f"whisper_l{k}": "whisper" for k in range(5)},
}

#: Members that see standardised inputs (distance- and margin-based).
SCALED_MEMBERS = ("svc", "knn", "lr")


def _default_member(name: str) -> BaseEstimator:
    """A fresh member with scikit-learn's defaults (what ``None`` stands for)."""
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeClassifier

    factories = {
        "rf": RandomForestClassifier,
        "hgb": HistGradientBoostingClassifier,
        "svc": SVC,
        "knn": KNeighborsClassifier,
        "dt": DecisionTreeClassifier,
        "lr": lambda: LogisticRegression(max_iter=2000),
    }
    return factories[name]()


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``choices``, or ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"


# --- inputs ------------------------------------------------------------------------------


def check_inputs(inputs: Sequence[str]) -> tuple[str, ...]:
    """Validate input names; return them as a tuple.

    Raises
    ------
    ConfigError
        Empty, a string instead of a list, duplicates, or an unknown name.
    """
    if isinstance(inputs, str) or not isinstance(inputs, Sequence) or len(inputs) == 0:
        raise ConfigError(
            f"inputs must be a non-empty list of names from {list(INPUTS)}, got {inputs!r}"
        )
    names = tuple(inputs)
    for name in names:
        if name not in INPUTS:
            raise ConfigError(
                f"unknown input {name!r}{did_you_mean(str(name), list(INPUTS))}; "
                f"valid inputs are {list(INPUTS)}"
            )
    if len(set(names)) != len(names):
        raise ConfigError(f"inputs {list(names)} name an input twice")
    return names


def input_array(features: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    """One input as a 2-D float32 block.

    Parameters
    ----------
    features : mapping of kind to array
        ``stats`` of shape (n, 26); ``mfcc``/``lfcc``/``logmel`` of shape (n, rows, frames).
    name : str
        A key of :data:`INPUTS`.

    Returns
    -------
    block : ndarray, shape (n, 26) for ``stats``, (n, 2 * rows) for ``<kind>_pooled``,
        (n, 3 * c - 1) for ``<kind>_dynamics`` (``c`` coefficients, deltas stored),
        (n, 768) for ``whisper_l<k>`` (state ``k``'s mean and std over frames).
        Pooled blocks are ``[mean over frames (rows), std over frames (rows)]``.
        Dynamics blocks are ``[std over frames of coefficients 1..c-1, std of the delta
        rows, mean |delta rows|]``: no per-window mean of a static coefficient, so a fixed
        channel (microphone, codec, room: an additive offset of the cepstrum) and the level
        (coefficient 0) leave them unchanged.
    """
    check_inputs([name])
    kind = INPUTS[name]
    if kind not in features:
        raise ConfigError(
            f"input {name!r} needs the feature kind {kind!r}, but the features hold only "
            f"{sorted(features)}; re-extract with {kind!r} in FeatureConfig.kinds or drop "
            f"{name!r} from the inputs"
        )
    arr = np.asarray(features[kind], dtype=np.float32)
    if name.endswith("_dynamics"):
        if arr.ndim != 3 or arr.shape[1] % 3 or arr.shape[2] < 1:
            raise ConfigError(f"{name!r} needs {kind!r} with deltas, shape (n, 3 * c, frames); "
                              f"got {arr.shape}. Extract with FeatureConfig.deltas=True")
        c = arr.shape[1] // 3
        return np.concatenate([arr[:, 1:c].std(axis=2), arr[:, c:].std(axis=2),
                               np.abs(arr[:, c:]).mean(axis=2)], axis=1)
    if name.startswith("whisper_l"):
        state = int(name.removeprefix("whisper_l"))
        if arr.ndim != 3 or arr.shape[1] <= state:
            raise ConfigError(f"{name!r} needs 'whisper' of shape (n, states, 2 * width) with "
                              f"more than {state} states; got {arr.shape}")
        return arr[:, state]
    if name == "stats":
        if arr.ndim != 2:
            raise ConfigError(f"'stats' must have shape (n, 26), got {arr.shape}")
        return arr
    if arr.ndim != 3 or arr.shape[2] < 1:
        raise ConfigError(f"{kind!r} must have shape (n, rows, frames), got {arr.shape}")
    return np.concatenate([arr.mean(axis=2), arr.std(axis=2)], axis=1)


def design_matrix(features: Mapping[str, np.ndarray], inputs: Sequence[str]) -> np.ndarray:
    """The model input ``X`` from feature arrays.

    Parameters
    ----------
    features : mapping of kind to array
        As :func:`spoofray.dataset.tensor_column` returns them: ``stats`` (n, 26),
        ``mfcc``/``lfcc`` (n, rows, frames), ``logmel`` (n, n_mels, frames).
    inputs : sequence of str
        Names from :data:`INPUTS`, concatenated in this order.

    Returns
    -------
    X : ndarray of float32, shape (n, d)
        ``d`` = 26 for ``stats`` + 2 * rows for each ``<kind>_pooled``.
    """
    blocks = [input_array(features, name) for name in check_inputs(inputs)]
    lengths = {name: len(b) for name, b in zip(inputs, blocks)}
    if len(set(lengths.values())) > 1:
        raise ConfigError(f"feature arrays disagree on the number of rows: {lengths}")
    return np.concatenate(blocks, axis=1) if len(blocks) > 1 else blocks[0]


# --- the estimator -----------------------------------------------------------------------


class SpoofVotingEnsemble(ClassifierMixin, BaseEstimator):
    """Soft-voting ensemble of up to six scikit-learn classifiers.

    Parameters
    ----------
    rf, hgb, svc, knn, dt, lr : estimator, None or "drop", default None
        The unfitted member; None means the scikit-learn default (RandomForestClassifier,
        HistGradientBoostingClassifier, SVC, KNeighborsClassifier, DecisionTreeClassifier,
        LogisticRegression with ``max_iter=2000``),
        ``"drop"`` leaves it out. Nested parameters work even when the member is None:
        ``set_params(rf__n_estimators=300)`` materialises the default member first.
        ``svc``, ``knn`` and ``lr`` are fitted behind a StandardScaler; ``svc`` is wrapped in
        CalibratedClassifierCV for probabilities.
    weight_rf, weight_hgb, weight_svc, weight_knn, weight_dt : float, default 1.0
        Voting weights (>= 0). A member with weight 0 is not fitted at all, so weights are
        also the on/off switches of a search space.
    weight_lr : float, default 0.0
        The logistic-regression member is off by default (ensembles made before it
        existed keep their meaning).
    inputs : tuple of str, default ("stats",)
        Names of :data:`INPUTS` that ``X`` was built from with :func:`design_matrix`.
        Recorded for whoever scores with the model; ``fit`` checks only the names.
    calibration_method : {"sigmoid", "isotonic"}, default "sigmoid"
    calibration_cv : int, default 3
        Internal folds of the SVC's CalibratedClassifierCV.
    n_jobs : int or None, default None
        Parallelism of the members that have ``n_jobs`` while fitting (RF, KNN).
        Fitted members are reset to ``n_jobs=None``: scorers parallelise over batches,
        not inside one prediction.
    random_state : int or None, default None
        Seeds members whose own ``random_state`` is None (one derived seed per member).

    Attributes
    ----------
    classes_ : ndarray, shape (n_classes,)
    named_estimators_ : dict of str to fitted estimator
        The fitted members that vote (weight > 0, not dropped).
    n_features_in_ : int
    """

    def __init__(
        self,
        rf: Any = None,
        hgb: Any = None,
        svc: Any = None,
        knn: Any = None,
        dt: Any = None,
        lr: Any = None,
        *,
        weight_rf: float = 1.0,
        weight_hgb: float = 1.0,
        weight_svc: float = 1.0,
        weight_knn: float = 1.0,
        weight_dt: float = 1.0,
        weight_lr: float = 0.0,
        inputs: tuple[str, ...] = ("stats",),
        calibration_method: str = "sigmoid",
        calibration_cv: int = 3,
        n_jobs: int | None = None,
        random_state: int | None = None,
    ) -> None:
        self.rf = rf
        self.hgb = hgb
        self.svc = svc
        self.knn = knn
        self.dt = dt
        self.lr = lr
        self.weight_rf = weight_rf
        self.weight_hgb = weight_hgb
        self.weight_svc = weight_svc
        self.weight_knn = weight_knn
        self.weight_dt = weight_dt
        self.weight_lr = weight_lr
        self.inputs = inputs
        self.calibration_method = calibration_method
        self.calibration_cv = calibration_cv
        self.n_jobs = n_jobs
        self.random_state = random_state

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Models saved before the logistic-regression member existed lack its parameters.
        super().__setstate__({"lr": None, "weight_lr": 0.0, **state})

    # -- parameters: nested names also for members left at None --

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        params = super().get_params(deep=False)
        if not deep:
            return params
        for name in MEMBERS:
            member = params[name]
            est = _default_member(name) if member is None else member
            if not hasattr(est, "get_params"):  # "drop", or a bad value fit will reject
                continue
            for key, value in est.get_params(deep=True).items():
                params[f"{name}__{key}"] = value
        return params

    def set_params(self, **params: Any) -> "SpoofVotingEnsemble":
        params = dict(params)
        for key in list(params):
            name, sep, _ = key.partition("__")
            if not sep or name not in MEMBERS:
                continue
            current = params[name] if name in params else getattr(self, name)
            if current is not None and not hasattr(current, "set_params"):
                raise ConfigError(
                    f"cannot set {key!r}: member {name!r} is {current!r}; give it an "
                    f"estimator (or None for the default) first"
                )
            if current is None:
                # Materialise the default member so its nested parameter can be set.
                if name in params:
                    params[name] = _default_member(name)
                else:
                    setattr(self, name, _default_member(name))
        return super().set_params(**params)

    # -- validation shared by fit and search-space checks --

    def member_weights(self) -> dict[str, float]:
        """Weight of every member (0 for dropped ones)."""
        out = {}
        for name in MEMBERS:
            w = getattr(self, f"weight_{name}")
            out[name] = 0.0 if getattr(self, name) == "drop" else float(w)
        return out

    def validate_params(self) -> None:
        """Check every parameter, including those of the members, without fitting.

        Raises
        ------
        ConfigError
            Naming the parameter, the value and what is allowed.
        """
        for name in MEMBERS:
            member = getattr(self, name)
            if isinstance(member, str) and member != "drop":
                raise ConfigError(f"{name}={member!r}: a member is an estimator, None or 'drop'")
            w = getattr(self, f"weight_{name}")
            if isinstance(w, bool) or not isinstance(w, (int, float, np.number)) or not (
                np.isfinite(w) and w >= 0
            ):
                raise ConfigError(f"weight_{name} must be a finite number >= 0, got {w!r}")
            if member is not None and not isinstance(member, str):
                if not hasattr(member, "predict_proba") and name != "svc":
                    raise ConfigError(
                        f"{name}={member!r} has no predict_proba; soft voting needs one"
                    )
                _validate_sklearn_params(member, name)
        if not any(w > 0 for w in self.member_weights().values()):
            raise ConfigError(
                "every member is dropped or has weight 0; at least one of "
                f"{[f'weight_{m}' for m in MEMBERS]} must be > 0"
            )
        check_inputs(self.inputs)
        if self.calibration_method not in ("sigmoid", "isotonic"):
            raise ConfigError(
                f"calibration_method must be 'sigmoid' or 'isotonic', got "
                f"{self.calibration_method!r}"
            )
        cv = self.calibration_cv
        if isinstance(cv, bool) or not isinstance(cv, (int, np.integer)) or cv < 2:
            raise ConfigError(f"calibration_cv must be an int >= 2, got {cv!r}")

    # -- fitting --

    def _build_member(self, name: str, seed: int) -> BaseEstimator:
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        raw = getattr(self, name)
        est = _default_member(name) if raw is None else clone(raw)
        own = est.get_params(deep=False)
        if "random_state" in own and own["random_state"] is None:
            est.set_params(random_state=seed)
        if "n_jobs" in own and self.n_jobs is not None:
            est.set_params(n_jobs=self.n_jobs)
        if name == "svc":
            # No n_jobs here: joblib would start processes, costlier than 3 small SVC fits.
            est = CalibratedClassifierCV(
                est, method=self.calibration_method, cv=int(self.calibration_cv)
            )
        if name in SCALED_MEMBERS:
            est = Pipeline([("scale", StandardScaler()), (name, est)])
        return est

    def fit(self, X: Any, y: Any) -> "SpoofVotingEnsemble":
        """Fit every voting member on ``X``, shape (n_samples, n_features), and ``y``."""
        self.validate_params()
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise ValueError(
                f"the ensemble needs at least 2 classes in y to be trained, got 1 class "
                f"({self.classes_[0]!r}); check the labels of the training data"
            )
        rng = np.random.RandomState(self.random_state)
        seeds = dict(zip(MEMBERS, rng.randint(np.iinfo(np.int32).max, size=len(MEMBERS))))
        self.weights_ = {}
        self.named_estimators_ = {}
        for name, weight in self.member_weights().items():
            if weight <= 0:
                continue
            est = self._build_member(name, int(seeds[name])).fit(X, y)
            if not np.array_equal(est.classes_, self.classes_):
                raise ValueError(
                    f"member {name!r} learned classes {est.classes_!r}, expected "
                    f"{self.classes_!r}"
                )
            _reset_n_jobs(est)
            self.named_estimators_[name] = est
            self.weights_[name] = weight
        return self

    # -- prediction --

    def member_proba(self, X: Any) -> dict[str, np.ndarray]:
        """Each voting member's ``predict_proba``, shape (n_samples, n_classes)."""
        check_is_fitted(self, "named_estimators_")
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return {name: est.predict_proba(X) for name, est in self.named_estimators_.items()}

    def predict_proba(self, X: Any) -> np.ndarray:
        """Weighted mean of the members' probabilities, shape (n_samples, n_classes).

        With labels 0/1 (bona fide/spoof), column 1 is P(spoof).
        """
        probas = self.member_proba(X)
        total = sum(self.weights_.values())
        out = sum(self.weights_[name] * p for name, p in probas.items())
        return np.asarray(out / total, dtype=np.float64)

    def predict(self, X: Any) -> np.ndarray:
        """Most probable class, shape (n_samples,)."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]


def _validate_sklearn_params(est: BaseEstimator, name: str) -> None:
    # scikit-learn's own constraint check (what fit would run), done early so that a bad
    # search-space value fails before any trial starts.
    check = getattr(est, "_validate_params", None)
    if check is None:
        return
    try:
        check()
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"member {name!r} ({type(est).__name__}): {exc}") from exc


def _reset_n_jobs(est: BaseEstimator) -> None:
    for key, value in est.get_params(deep=True).items():
        if key.split("__")[-1] == "n_jobs" and value is not None:
            est.set_params(**{key: None})
    for fitted in getattr(est, "calibrated_classifiers_", []):
        inner = getattr(fitted, "estimator", None)
        if inner is not None and "n_jobs" in inner.get_params(deep=False):
            inner.set_params(n_jobs=None)


def make_ensemble(params: Mapping[str, Any] | None = None) -> SpoofVotingEnsemble:
    """A :class:`SpoofVotingEnsemble` with ``params`` set (sklearn names, nested ok).

    Raises
    ------
    ConfigError
        Unknown parameter names (with the closest valid names) or invalid values.
    """
    model = SpoofVotingEnsemble()
    params = dict(params or {})
    valid = model.get_params(deep=True)
    for key in params:
        if key not in valid:
            raise ConfigError(
                f"unknown ensemble parameter {key!r}{did_you_mean(key, list(valid))}; "
                "SpoofVotingEnsemble().get_params() lists every valid name"
            )
    if "inputs" in params and isinstance(params["inputs"], list):
        params["inputs"] = tuple(params["inputs"])
    try:
        model.set_params(**params)
    except (ValueError, TypeError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"cannot set ensemble parameters: {exc}") from exc
    model.validate_params()
    return model


# --- persistence with skops --------------------------------------------------------------

#: Types a saved ensemble may contain beyond what skops trusts by default. Loading refuses
#: anything else: skops builds objects by type name, and an unknown type could run code.
TRUSTED_TYPES = (
    "spoofray.models.ml.SpoofVotingEnsemble",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.tree._tree.Tree",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.metrics._dist_metrics.ManhattanDistance64",
    "sklearn.metrics._dist_metrics.ChebyshevDistance64",
    "sklearn.metrics._dist_metrics.MinkowskiDistance64",
)


def save_ensemble(model: SpoofVotingEnsemble, path: str) -> str:
    """Save a fitted ensemble with skops (local path or ``s3://``); return the path."""
    import skops.io as sio

    check_is_fitted(model, "named_estimators_")
    storage.write_bytes_atomic(path, sio.dumps(model))
    return path


def load_ensemble(path: str) -> SpoofVotingEnsemble:
    """Load an ensemble saved by :func:`save_ensemble`, trusting only :data:`TRUSTED_TYPES`.

    Raises
    ------
    BundleIntegrityError
        The file holds types outside :data:`TRUSTED_TYPES` (nothing is built then), or it
        is not an ensemble.
    """
    import skops.io as sio

    data = storage.read_bytes(path)
    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as exc:  # skops raises plain zip/JSON errors on a non-skops file
        raise BundleIntegrityError(f"{path}: not a readable skops file ({exc})") from exc
    refused = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if refused:
        raise BundleIntegrityError(
            f"{path}: refusing to load types that are not on spoofray's trusted list: "
            f"{refused}. Only load models from sources you trust; if these types are "
            "legitimate (e.g. a newer scikit-learn), review them and add them to "
            "spoofray.models.ml.TRUSTED_TYPES."
        )
    model = sio.loads(data, trusted=sorted(untrusted))
    if not isinstance(model, SpoofVotingEnsemble):
        raise BundleIntegrityError(
            f"{path}: expected a SpoofVotingEnsemble, got {type(model).__name__}"
        )
    return model


# --- as a bundle member --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EnsembleMember:
    """A fitted ensemble as a bundle member (:class:`spoofray.models.bundle.WindowMember`):
    window features in, P(spoof) per window out.

    Attributes
    ----------
    model : SpoofVotingEnsemble
    inputs : tuple of str
        Names of :data:`INPUTS` its design matrix is built from, in training order.
    """

    model: Any = dataclasses.field(repr=False, compare=False)
    inputs: tuple[str, ...]

    @classmethod
    def load(cls, path: str, inputs: Sequence[str]) -> EnsembleMember:
        return cls(model=load_ensemble(path), inputs=tuple(inputs))

    def predict_proba(self, windows: Mapping[str, np.ndarray]) -> np.ndarray:
        """P(spoof) per window, float64 of shape (n,), from ``{kind: (n, *shape)}``."""
        proba = self.model.predict_proba(design_matrix(windows, self.inputs))
        classes = list(getattr(self.model, "classes_", [0, 1]))
        col = classes.index(1) if 1 in classes else (
            classes.index("spoof") if "spoof" in classes else proba.shape[1] - 1)
        return np.asarray(proba[:, col], dtype=np.float64)

    def input_problem(self, shapes: Mapping[str, tuple[int, ...]]) -> str | None:
        """Why windows of these shapes (kind -> one window's shape) do not fit, or None."""
        probe = {k: np.zeros((1, *s), np.float32) for k, s in shapes.items()}
        try:
            width = design_matrix(probe, self.inputs).shape[1]
        except ConfigError as exc:
            return str(exc)
        expected = getattr(self.model, "n_features_in_", width)
        if expected != width:
            return (f"the sklearn ensemble expects {expected} features, but its inputs "
                    f"{list(self.inputs)} give {width} from windows of shapes {dict(shapes)}")
        return None
