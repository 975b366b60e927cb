"""How far silence alone separates the pool's classes (a shortcut to measure, not to learn).

    python experiments/silence_shortcut.py

Per clip: leading and trailing silence (10 ms frames more than 40 dB below the loudest) and
duration; a small gradient-boosting classifier on those alone, leave-one-source-out (the
folds of ``generalisation.py``). This probes the DATA, so it reads audio directly.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import soundfile as sf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pool  # noqa: E402
from generalisation import fold_of  # noqa: E402


def edges(path: str) -> tuple[float, float, float]:
    y, sr = sf.read(path, dtype="float32")
    y = y if y.ndim == 1 else y.mean(axis=1)
    hop = sr // 100
    n = len(y) // hop
    db = 10 * np.log10((y[: n * hop].reshape(n, hop) ** 2).mean(axis=1) + 1e-12)
    loud = np.flatnonzero(db > db.max() - 40)
    return loud[0] / 100, (n - 1 - loud[-1]) / 100, len(y) / sr


def main() -> int:
    from sklearn.ensemble import HistGradientBoostingClassifier

    from spoofray import metrics

    clips = pool.load_pool()
    clips[["lead_s", "trail_s", "duration_s"]] = [
        edges(os.path.join(pool.SHARED, p)) for p in clips["path"]]
    folds = clips["source"].map(fold_of)
    y = (clips["label"] == "spoof").to_numpy(int)
    for cols in (["lead_s", "trail_s"], ["lead_s", "trail_s", "duration_s"], ["duration_s"]):
        X, oof = clips[cols].to_numpy(), np.zeros(len(y))
        for fold in folds.unique():
            test = (folds == fold).to_numpy()
            model = HistGradientBoostingClassifier(max_iter=50).fit(X[~test], y[~test])
            oof[test] = model.predict_proba(X[test])[:, 1]
        print(f"{'+'.join(cols)}: leave-one-source-out EER {metrics.compute_eer(y, oof)[0]:.3f}")
    print(clips.groupby("label")[["lead_s", "trail_s", "duration_s"]].median())
    return 0


if __name__ == "__main__":
    sys.exit(main())
