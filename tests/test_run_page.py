"""The run page, the windows table and the timelines, on a real run: real devcorpus speech
with a generated insert, scored by the shipped bundle on the session's real local Ray, and
the page opened in a real browser (headless Chromium) when one is installed."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from spoofray import reports, run_page, timeline
from spoofray.models.bundle import BundleSpec
from spoofray.pipeline.score import ScoreConfig, score_archive
from spoofray.testing.archives import make_spliced_calls


@pytest.fixture(scope="module")
def spliced_run(ray_session, devcorpus, tmp_path_factory):
    """A published run of three real calls (one as recorded, one with a generated insert,
    a two-channel call with the insert on channel 1) and what was inserted where."""
    tmp = tmp_path_factory.mktemp("page")
    calls = make_spliced_calls(tmp / "in", devcorpus)
    summary = score_archive(ScoreConfig(input=str(tmp / "in"), output=str(tmp / "out"),
                                        run_id="page"))
    return {"summary": summary, "run": summary["run_uri"], **calls}


def _page(run: str) -> str:
    with open(os.path.join(run, run_page.PAGE_NAME), encoding="utf-8") as fh:
        return fh.read()


def test_the_windows_table_holds_what_the_file_scores_are_made_of(spliced_run):
    run = spliced_run["run"]
    report = reports.read_report(run)
    windows = reports.read_windows(run)
    assert tuple(windows.columns) == reports.WINDOW_COLUMNS
    two = spliced_run["uris"]["two_sided.wav"]
    # A call scored per channel: its channels' windows, none for its roll-up row.
    assert sorted(windows.loc[windows["uri"] == two, "channel"].unique()) == [0, 1]
    scored = report[(report["uri"] != two) | report["channel"].notna()]
    for r in scored.itertuples():
        mine = windows[(windows["uri"] == r.uri) & (windows["channel"].isna() if pd.isna(
            r.channel) else windows["channel"] == r.channel)]
        assert len(mine) == r.n_windows
        assert mine["window_index"].tolist() == list(range(r.n_windows))
        assert mine["score"].mean() == pytest.approx(r.spoof_score, abs=1e-12)
        assert mine["score"].max() == pytest.approx(r.max_window_score, abs=1e-12)
        best = mine.loc[mine["score"].idxmax()]
        assert best["start_s"] == r.top_window_start_s


def test_the_page_shows_the_run_its_model_and_every_file_with_its_timeline(spliced_run):
    run, uris = spliced_run["run"], spliced_run["uris"]
    page = _page(run)
    bundle = BundleSpec.verify(spliced_run["summary"]["bundle"]["uri"])
    headline = run_page.model_headline(bundle.manifest["evaluation"])
    assert headline["EER (pooled)"] == f"{100 * bundle.manifest['evaluation']['pooled_eer']:.1f} %"
    for name, value in headline.items():
        assert f"<th>{name}</th><td>{value}</td>" in page
    # Self-contained: nothing fetched from anywhere, every image inline, no audio unasked.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)
    assert "<link" not in page and "<script src" not in page
    images = re.findall(r'<img class="(\w+)"[^>]* src="([^"]+)"', page)
    assert all(src.startswith("data:image/png;base64,") for _, src in images)
    kinds = [k for k, _ in images]
    assert kinds.count("timeline") == kinds.count("spectrogram") == 3
    assert "<audio" not in page
    # Flagged files first: the two with the insert, then the call as recorded.
    body = page[page.index("<table id='files'"):]
    order = [m for m in re.findall(r"title='([^']+)'", body[: body.index("</table>")])]
    assert order[2] == uris["call.wav"] and set(order[:2]) == {uris["call_spliced.wav"],
                                                              uris["two_sided.wav"]}
    # The timelines' PNGs are real images of the timeline's size.
    import matplotlib.image

    timeline_png = base64.b64decode(images[kinds.index("timeline")][1].split(",", 1)[1])
    assert matplotlib.image.imread(io.BytesIO(timeline_png)).shape[1] == 900


def test_page_audio_holds_the_most_suspicious_window_only_when_asked(spliced_run, tmp_path):
    import soundfile as sf

    run = str(tmp_path / "run")
    shutil.copytree(spliced_run["run"], run)
    bundle = BundleSpec.verify(spliced_run["summary"]["bundle"]["uri"])
    run_page.write_run_page(run, spliced_run["summary"], evaluation=None,
                            feature_config=bundle.feature_config, top_n=1, audio=True)
    page = _page(run)
    clips = re.findall(r"src='data:audio/wav;base64,([^']+)'", page)
    assert len(clips) == 1  # top_n = 1
    x, sr = sf.read(io.BytesIO(base64.b64decode(clips[0])))
    window = bundle.feature_config.audio.window_s
    assert sr == 16000 and len(x) / sr == pytest.approx(window + 2 * run_page.CLIP_CONTEXT_S,
                                                        abs=0.01)
    assert "records no evaluation" in page


def test_the_most_suspicious_window_of_the_insert_lies_on_it(spliced_run):
    windows = reports.read_windows(spliced_run["run"])
    for name, (channel, start, end) in spliced_run["insert"].items():
        got_channel, a, b, _ = run_page.top_window(windows, spliced_run["uris"][name])
        assert got_channel == channel
        assert min(b, end) - max(a, start) > 0  # overlaps the insert


def test_terminal_timeline_one_character_per_window_and_spans_marked():
    windows = pd.DataFrame({"uri": "a.wav", "channel": [None] * 5, "window_index": range(5),
                            "start_s": [0.0, 2.0, 4.0, 6.0, 8.0],
                            "end_s": [4.0, 6.0, 8.0, 10.0, 12.0],
                            "score": [0.0, 0.3, 0.99, 1.0, 0.1]})
    spans = pd.DataFrame({"uri": ["a.wav"], "channel": [None], "start_s": [4.0],
                          "end_s": [10.0], "score": [1.0], "n_windows": [2]})
    lines = timeline.terminal_timeline(windows, spans, "a.wav",
                                       stream=io.TextIOWrapper(io.BytesIO(), encoding="utf-8"))
    assert lines[1] == "  file |▁▃██▁|"
    assert lines[2] == " " * 10 + "^^"  # under the strip's third and fourth windows
    assert lines[3] == " " * 8 + "0.0 s to 12.0 s, a window every 2 s"
    ascii_lines = timeline.terminal_timeline(
        windows, spans, "a.wav", stream=io.TextIOWrapper(io.BytesIO(), encoding="ascii"))
    assert ascii_lines[1] == "  file |_-##_|"


def test_most_suspicious_plot_colours_flagged_files_apart():
    import matplotlib.image

    report = pd.DataFrame({
        "uri": ["a.wav", "b.wav", "c.wav"], "channel": None, "status": "ok",
        "error_type": None, "spoof_score": [0.9, 0.4, 0.3],
        # b is under the threshold but flagged by the segment rule
        "predicted_label": ["spoof", "spoof", "bonafide"],
        "decision_rule": ["file_mean", "segment_rule", None], "n_segments": [1, 1, 0],
        "duration_s": 10.0, "size_bytes": 100, "top_window_start_s": 0.0,
        "true_label": None})
    png = reports.report_plots(report, threshold=0.5)["most_suspicious.png"]
    pixels = matplotlib.image.imread(io.BytesIO(png))[..., :3]

    def count(color: str) -> int:
        from matplotlib.colors import to_rgb

        return int(np.all(np.abs(pixels - np.array(to_rgb(color))) < 0.02, axis=-1).sum())

    red, grey = count(reports.FLAGGED_COLOR), count(reports.UNFLAGGED_COLOR)
    # Bar areas scale with the scores: two flagged bars (0.9 + 0.4) against one (0.3).
    assert red > 0 and grey > 0
    assert 3.0 < red / grey < 5.5


# --- the page in a real browser ----------------------------------------------------------------

#: What the test adds to a copy of the page: checks run in the browser, written into the DOM
#: that ``--dump-dom`` prints.
CHECKS = """
<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var table = document.getElementById('files');
  var th = table.tHead.rows[0].cells, score = -1;
  for (var i = 0; i < th.length; i++) if (th[i].textContent === 'spoof score') score = i;
  th[score].click();
  var sorted = Array.prototype.map.call(table.tBodies[0].rows,
                                        function (r) { return r.cells[score].textContent; });
  var out = {rows: table.tBodies[0].rows.length, images: imgs.length,
             broken: imgs.filter(function (im) { return !im.complete || im.naturalWidth === 0; }).length,
             timelines: document.querySelectorAll('section.file img.timeline').length,
             spectrograms: document.querySelectorAll('section.file img.spectrogram').length,
             scroll_width: document.documentElement.scrollWidth,
             ascending: sorted};
  var pre = document.createElement('pre'); pre.id = 'checks';
  pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
});
</script>
"""


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _browser(*args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1280,2400"]
    return subprocess.run([_chromium(), *flags, *args], capture_output=True, text=True,
                          timeout=180)


@pytest.mark.skipif(_chromium() is None, reason="headless Chromium is not installed "
                    "(Debian: apt-get install chromium; `make test` installs it as root)")
def test_the_page_in_a_real_browser(spliced_run, tmp_path):
    page = _page(spliced_run["run"])
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", CHECKS + "</body>"), encoding="utf-8")
    run = _browser("--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    assert run.returncode == 0, run.stderr[-2000:]
    found = re.search(r'<pre id="checks">(.*?)</pre>', run.stdout, re.S)
    assert found, run.stdout[-2000:] + run.stderr[-2000:]
    checks = json.loads(found.group(1).replace("&quot;", '"'))
    assert checks["rows"] == 3
    assert checks["timelines"] == checks["spectrograms"] == 3
    assert checks["images"] == 3 + 3 + 2 and checks["broken"] == 0  # + the two report plots
    assert checks["scroll_width"] <= 1280
    scores = [float(s) for s in checks["ascending"]]
    assert scores == sorted(scores)  # the header click sorted the table by score
    shot = tmp_path / "page.png"
    run = _browser(f"--screenshot={shot}", f"file://{spliced_run['run']}/{run_page.PAGE_NAME}")
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    import matplotlib.image

    image = matplotlib.image.imread(str(shot))
    assert image.shape[1] == 1280
    assert image[..., :3].std() > 0.05  # not a blank page
