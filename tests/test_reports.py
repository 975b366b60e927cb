"""Report plots: labels that tell files apart, whole-file count axes, plots that say why
they are empty; the figures are checked before they become PNGs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spoofray import reports
from spoofray.reports import evaluation_plots, report_plots, short_names


@pytest.fixture
def figures(monkeypatch):
    """The matplotlib figures the plot functions make, by the name they are saved as."""
    made = []
    real = reports._figure_png

    def keep(fig):
        made.append(fig)
        return real(fig)

    monkeypatch.setattr(reports, "_figure_png", keep)
    return made


def _report(uris, scores, truth=None):
    n = len(uris)
    return pd.DataFrame({"uri": uris, "status": "ok", "spoof_score": scores,
                         "predicted_label": ["spoof" if s >= 0.5 else "bonafide" for s in scores],
                         "true_label": truth or [None] * n, "true_attack": [None] * n,
                         "duration_s": 1.0, "size_bytes": 10, "top_window_start_s": 0.0,
                         "error_type": None})


@pytest.mark.parametrize("uris, names", [
    (["s3://b/2024-01-02/call.wav", "s3://b/2024-01-03/call.wav", "s3://b/x/other.wav"],
     ["2024-01-02/call.wav", "2024-01-03/call.wav", "other.wav"]),
    (["/a/x/y.wav", "/b/x/y.wav", "/b/z.wav"], ["a/x/y.wav", "b/x/y.wav", "z.wav"]),
    (["/same.wav"], ["same.wav"]),
    ([], []),
])
def test_short_names_are_the_shortest_distinct_suffixes(uris, names):
    assert short_names(uris) == names


def test_same_file_names_in_date_folders_get_their_own_bars(figures):
    uris = [f"/archive/2024-01-0{d}/call.wav" for d in range(1, 6)]
    report_plots(_report(uris, [0.9, 0.8, 0.7, 0.6, 0.1]), threshold=0.5)
    hist, _, top = figures
    labels = [t.get_text() for t in top.axes[0].get_yticklabels()]
    assert sorted(labels) == sorted(f"2024-01-0{d}/call.wav" for d in range(1, 6))
    assert len(top.axes[0].patches) == 5  # five bars, none merged
    # The histogram counts whole files.
    ticks = hist.axes[0].get_yticks()
    assert np.allclose(ticks, np.round(ticks))


def test_an_empty_report_says_why_its_plots_are_empty(figures):
    empty = _report([], [])
    report_plots(empty, threshold=0.5)
    for fig in figures:
        assert any("no file was scored" in t.get_text() for t in fig.axes[0].texts)


def test_det_plot_explains_an_eer_of_zero(figures):
    joined = _report([f"/x/{i}.wav" for i in range(6)], [0.1, 0.2, 0.3, 0.7, 0.8, 0.9],
                     truth=["bonafide"] * 3 + ["spoof"] * 3)
    evaluation_plots(joined)
    roc, det = figures
    assert any("EER 0" in t.get_text() for t in det.axes[0].texts)
    figures.clear()
    joined["spoof_score"] = [0.1, 0.8, 0.3, 0.7, 0.2, 0.9]  # overlapping: a real curve
    evaluation_plots(joined)
    assert not any("EER 0" in t.get_text() for t in figures[1].axes[0].texts)
