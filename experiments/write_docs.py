"""Write docs/quality.md and docs/model_card.md from the driver's results (no number by hand).

    python experiments/write_docs.py --work /tmp/gen --shipped /tmp/gen/subband-high-seed0/results.json

``--shipped`` is the run that built the shipped bundle from scratch (``make default-bundle``):
its folds fill the per-source and narrowband tables and its wall times the timing line;
``--work`` holds the ablation runs (every ``<recipe>-seed<N>/results.json``). Ablation rows
of recipes that have no run in ``--work`` are kept from the current docs/quality.md (each
recipe's row is replaced only by a new run of it).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from collections.abc import Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from generalisation import SHIPPED, false_alarms_by_corpus  # noqa: E402


def pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def load(work: str) -> dict[str, dict]:
    out = {}
    for path in sorted(glob.glob(os.path.join(work, "*-seed*", "results.json"))):
        with open(path) as fh:
            r = json.load(fh)
        out[f"{r['recipe']['name']} (seed {r['seed']})"] = r
    return out


def fold_table(r: dict) -> list[str]:
    lines = ["| held-out source | clips | EER | recall at its fold threshold | false alarms at it | "
             "8 kHz real false alarms |", "|---|---|---|---|---|---|"]
    for fold, e in sorted(r["folds"].items()):
        o, tel = e["original"], e.get("telephone_bonafide", {})
        lines.append(f"| {fold} | {e['n_clips']} | {pct(o['eer'])} | {pct(o['recall'])} | "
                     f"{pct(o['false_alarm_rate'])} | {pct(tel.get('false_alarm_rate'))} |")
    return lines


def corpus_table(r: dict) -> list[str]:
    lines = ["| real corpus (held out with its source) | files | false alarms at the fold threshold |",
             "|---|---|---|"]
    for corpus, (fp, n) in false_alarms_by_corpus(r).items():
        lines.append(f"| {corpus} | {n} | {pct(fp / n)} |")
    return lines


def family_table(r: dict) -> list[str]:
    lines = ["| generator family | spoof files | EER (vs all real files) | recall at the shipped threshold |",
             "|---|---|---|---|"]
    for fam, m in sorted(r["pooled_by_family"].items()):
        lines.append(f"| {fam} | {m['n_spoof']} | {pct(m['eer'])} | {pct(m['recall'])} |")
    return lines


def headline_rows(h: dict) -> list[str]:
    rows = ["| what | value |", "|---|---|",
            f"| pooled EER | {100 * h['pooled_eer']:.1f} % |",
            f"| pooled AUC | {h['pooled_auc']:.3f} |",
            f"| worst held-out source EER | {100 * h['worst_source_eer']:.1f} % |",
            f"| decision threshold | {h['threshold']:.4f} |",
            f"| recall at the threshold (pooled held-out spoofs) | {pct(h['recall_at_threshold'])} |",
            f"| false alarms at the threshold (pooled held-out real) | "
            f"{pct(h['false_alarm_rate_at_threshold'])} |",
            f"| false alarms at the threshold, 8 kHz telephone copies of held-out real | "
            f"{pct(h['false_alarm_rate_8khz_telephone'])} |"]
    nb = h.get("narrowband")
    if nb:
        rows[-1] = (f"| false alarms, 8 kHz telephone copies of held-out real (16 kHz FLAC, "
                    f"each judged by the band it measures) | "
                    f"{pct(h['false_alarm_rate_8khz_telephone'])} |")
        rows += [f"| narrowband: pooled EER, 8 kHz files of both classes | "
                 f"{pct(nb['pooled_eer'])} |",
                 f"| narrowband decision threshold | {nb['threshold']:.4f} |",
                 f"| narrowband: recall at the fold thresholds | "
                 f"{pct(nb['recall_at_fold_thresholds'])} |",
                 f"| narrowband: false alarms at the fold thresholds, real 8 kHz files | "
                 f"{pct(nb['false_alarm_rate_at_fold_thresholds'])} |"]
    return rows


def narrowband_table(r: dict) -> list[str]:
    """The narrowband member on 8 kHz files of both classes, per codec: EER pooled over
    the folds, recall and false alarms at each fold's own (held-out) narrow threshold."""
    nb = r["narrowband"]
    lines = ["| 8 kHz files, as written | real / spoof files | EER (pooled folds) | recall at "
             "the fold thresholds | false alarms at the fold thresholds |",
             "|---|---|---|---|---|"]
    rows = [(c, nb["pooled_by_codec"][c], nb["held_out_by_codec"][c])
            for c in sorted(nb["pooled_by_codec"])]
    rows.append(("**all codecs**", nb["pooled"], nb["held_out"]))
    for name, pooled, held in rows:
        lines.append(f"| {name} | {held['n_bonafide']} / {held['n_spoof']} | "
                     f"{pct(pooled['eer'])} | {pct(held['recall'])} | "
                     f"{pct(held['false_alarm_rate'])} |")
    tel = nb["held_out_telephone_copies"]
    lines.append(f"| 16 kHz FLAC copies of 8 kHz calls, real only (each judged by the band it "
                 f"measures: noise added after the call puts energy above 4 kHz again) | "
                 f"{tel['n_bonafide']} / 0 | – | – | {pct(tel['false_alarm_rate'])} |")
    return lines


def lockbox_table(runs: dict[str, dict], recipe: str | None = None) -> list[str]:
    """One row per run that scored the lockbox (trainpool2): trained on every usable row of
    devcorpus + trainpool, thresholds from its folds, scored once (only ``recipe``'s runs
    when given)."""
    lines = ["| recipe (seed) | clips | pooled EER | speech EER (singing left out) | singing EER | "
             "recall at the shipped threshold | false alarms at it | narrowband EER (8 kHz "
             "files) | real 8 kHz false alarms |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in sorted(runs.items()):
        box = r.get("lockbox")
        if not box or (recipe is not None and r["recipe"]["name"] != recipe):
            continue
        fp, n = box["false_alarm_rate_8khz"]
        lines.append(f"| {name} | {box['n_clips']} | {pct(box['pooled']['eer'])} | "
                     f"{pct(box['speech']['eer'])} | {pct(box['singing']['eer'])} | "
                     f"{pct(box['pooled']['recall'])} | "
                     f"{pct(box['pooled']['false_alarm_rate'])} | "
                     f"{pct(box['narrowband']['eer'])} | {pct(fp / n if n else None)} |")
    return lines


def lockbox_corpus_table(runs: dict[str, dict]) -> list[str]:
    """Per lockbox corpus: EER (where it has both classes) and real-speech false alarms."""
    boxes = {name: r["lockbox"] for name, r in sorted(runs.items()) if r.get("lockbox")}
    if not boxes:
        return []
    corpora = sorted({c for b in boxes.values() for c in b["false_alarm_rate_by_real_corpus"]})
    lines = ["| corpus | " + " | ".join(f"{n}: EER / real false alarms" for n in boxes) + " |",
             "|---|" + "---|" * len(boxes)]
    for corpus in corpora:
        cells = []
        for b in boxes.values():
            eer = b["by_corpus"].get(corpus, {}).get("eer")
            fp, n = b["false_alarm_rate_by_real_corpus"].get(corpus, (0, 0))
            cells.append(f"{pct(eer)} / {fp} of {n}")
        lines.append(f"| {corpus} | " + " | ".join(cells) + " |")
    return lines


def lofo_table(runs: dict[str, dict]) -> list[str]:
    """Leave-one-family-out folds, one column per run that has them: per spoof family, the
    EER of its spoofs against the real clips held out with them, and recall at the
    threshold the other families' folds set."""
    lofo = {name: r["lofo"] for name, r in sorted(runs.items()) if r.get("lofo")}
    if not lofo:
        return []
    families = sorted({f for runs_ in lofo.values() for f in runs_})
    first = next(iter(lofo.values()))
    lines = ["| held-out family | its sources | real / spoof files | "
             + " | ".join(f"{n}: EER / recall" for n in lofo) + " |",
             "|---|---|---|" + "---|" * len(lofo)]
    for fam in families:
        f0 = first.get(fam, {})
        cells = [f"{pct(runs_[fam]['eer'])} / {pct(runs_[fam]['recall'])}" if fam in runs_
                 else "–" for runs_ in lofo.values()]
        lines.append(f"| {fam} | {len(f0.get('sources', []))} | {f0.get('n_bonafide')} / "
                     f"{f0.get('n_spoof')} | " + " | ".join(cells) + " |")
    worst = [max(v["eer"] for v in runs_.values() if v["eer"] is not None)
             for runs_ in lofo.values()]
    lines.append("| **worst family** | | | " + " | ".join(f"**{pct(w)}**" for w in worst) + " |")
    return lines


def current_table(md: str, header_prefix: str) -> list[str]:
    """The table of ``md`` whose header line starts with ``header_prefix``, as it stands."""
    lines, inside = [], False
    for line in md.splitlines():
        if line.startswith(header_prefix):
            inside = True
        if inside and not line.startswith("|"):
            break
        if inside:
            lines.append(line)
    return lines


def merge_tables(now: list[str], new: list[str]) -> list[str]:
    """Markdown table ``now`` updated by ``new``: a row (keyed by its first cell) or a column
    (keyed by its header) of ``new`` replaces the one of ``now``, the rest are kept; rows
    sorted by key, missing cells "–"."""
    def parse(lines: list[str]) -> tuple[list[str], dict[str, dict[str, str]]]:
        if len(lines) < 2:
            return [], {}
        cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
        head = cells[0]
        return head, {row[0]: dict(zip(head[1:], row[1:])) for row in cells[2:]}

    head_now, rows_now = parse(now)
    head_new, rows_new = parse(new)
    if not head_new:
        return now
    columns = [c for c in head_now[1:] if c not in head_new] + head_new[1:]
    keys = sorted(set(rows_now) | set(rows_new))
    lines = ["| " + " | ".join([head_new[0], *columns]) + " |", "|---|" + "---|" * len(columns)]
    for key in keys:
        cells = [rows_new.get(key, {}).get(c) or rows_now.get(key, {}).get(c) or "–"
                 for c in columns]
        lines.append("| " + " | ".join([key, *cells]) + " |")
    return lines


def kept_ablation_rows(quality_md: str, rerun: set[str]) -> list[str]:
    """The ablation rows of docs/quality.md whose recipe has no new run."""
    table = current_table(quality_md, "| recipe | what changes |")
    return [line for line in table[2:] if line.split("|")[1].strip() not in rerun]


def ablation_table(runs: dict[str, dict], kept: Sequence[str] = ()) -> list[str]:
    """One row per recipe; several seeds show as their values separated by slashes; then
    ``kept`` rows of earlier runs."""
    from generalisation import ABOUT

    by_recipe: dict[str, list[dict]] = {}
    for r in runs.values():
        by_recipe.setdefault(r["recipe"]["name"], []).append(r)
    lines = ["| recipe | what changes | seeds | pooled EER | worst source EER | recall at 1 % FA "
             "threshold | real false alarms | 8 kHz real false alarms |",
             "|---|---|---|---|---|---|---|---|"]

    def each(rs: list[dict], get) -> str:
        return " / ".join(pct(get(r)) for r in rs)

    def worst(r: dict) -> float:
        return max(e["original"]["eer"] for e in r["folds"].values()
                   if e["original"]["eer"] is not None)

    order = [SHIPPED, "base"] + sorted(k for k in by_recipe if k not in (SHIPPED, "base"))
    for name in (n for n in order if n in by_recipe):
        rs = sorted(by_recipe[name], key=lambda r: r["seed"])
        lines.append(
            f"| {name} | {ABOUT.get(name) or ABOUT.get(name.split(', ')[-1], '')} | {', '.join(str(r['seed']) for r in rs)} | "
            f"{each(rs, lambda r: r['pooled']['eer'])} | {each(rs, worst)} | "
            f"{each(rs, lambda r: r['pooled']['recall'])} | "
            f"{each(rs, lambda r: r['pooled']['false_alarm_rate'])} | "
            f"{each(rs, lambda r: r['pooled_telephone_bonafide']['false_alarm_rate'])} |")
    return lines + list(kept)


def timings_text(results: dict) -> str:
    """Step wall times of ``results``, a run that did every step from scratch."""
    steps = ", ".join(f"{k.removesuffix('_s').replace('_', ' ')} {v / 60:.1f} min"
                      for k, v in results["timings"].items())
    ship = ", with `--ship`" if "ship_s" in results["timings"] else ""
    return f"{steps} (`{results['recipe']['name']}` seed {results['seed']}{ship})"


def _read_json(path: str) -> dict:
    with open(path) as fh:
        return json.load(fh)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--work", required=True)
    p.add_argument("--shipped", required=True,
                   help="results.json of the run that built the shipped bundle")
    p.add_argument("--from-scratch", default=None,
                   help="results.json of a run that did every step from scratch, for the "
                        "wall times (default: --shipped)")
    args = p.parse_args(argv)
    runs = load(args.work)
    base = _read_json(args.shipped)
    from spoofray.models import default

    with open(os.path.join(default.FOLDER, "bundle.json")) as fh:
        bundle = json.load(fh)
    h = bundle["evaluation"]
    with open(os.path.join(REPO, "docs", "quality.md.in")) as fh:
        quality = fh.read()
    with open(os.path.join(REPO, "docs", "quality.md")) as fh:
        quality_now = fh.read()
    kept = kept_ablation_rows(quality_now, {r["recipe"]["name"] for r in runs.values()})
    with open(os.path.join(REPO, "docs", "model_card.md.in")) as fh:
        card = fh.read()
    with open(os.path.join(REPO, "docs", "model_card.md")) as fh:
        card_now = fh.read()
    # The lockbox is scored once per chosen recipe, not with every run: rows and columns of
    # recipes with no lockbox run in --work stay as they are.
    lockbox_header = "| recipe (seed) | clips |"
    fill = {
        "{{HEADLINE}}": "\n".join(headline_rows(h)),
        "{{FOLDS}}": "\n".join(fold_table(base)),
        "{{CORPORA}}": "\n".join(corpus_table(base)),
        "{{FAMILIES}}": "\n".join(family_table(base)),
        "{{ABLATION}}": "\n".join(ablation_table(runs, kept)),
        "{{LOCKBOX}}": "\n".join(merge_tables(current_table(quality_now, lockbox_header),
                                              lockbox_table(runs))),
        "{{LOCKBOX_CORPORA}}": "\n".join(merge_tables(current_table(quality_now, "| corpus | "),
                                                      lockbox_corpus_table(runs))),
        "{{LOCKBOX_SHIPPED}}": "\n".join(merge_tables(current_table(card_now, lockbox_header),
                                                      lockbox_table(runs, recipe=SHIPPED))),
        "{{LOFO}}": "\n".join(lofo_table(runs)) or "(no run with `--lofo` yet)",
        "{{NARROWBAND}}": "\n".join(narrowband_table(base)) if "narrowband" in base else "",
        "{{TIMINGS}}": timings_text(_read_json(args.from_scratch or args.shipped)),
        "{{VERSION}}": bundle["version"],
        "{{EVALUATION_JSON}}": json.dumps(h, sort_keys=True),
    }
    for key, value in fill.items():
        quality, card = quality.replace(key, value), card.replace(key, value)
    with open(os.path.join(REPO, "docs", "quality.md"), "w") as fh:
        fh.write(quality)
    with open(os.path.join(REPO, "docs", "model_card.md"), "w") as fh:
        fh.write(card)
    print("wrote docs/quality.md and docs/model_card.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
