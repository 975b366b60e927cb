"""The whole spoofray path on a small generated archive, on a local Ray (no cloud).

  python jobs/demo.py --output demo_out

The archive is synthetic (spoofray.synth): it only demonstrates the pipeline.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

import _bootstrap  # noqa: F401  (sys.path + logging)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default="demo_out", help="folder for everything (replaced)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs for the local Ray")
    args = p.parse_args(argv)
    out = os.path.abspath(args.output)
    shutil.rmtree(out, ignore_errors=True)

    from spoofray.config import FeatureConfig
    from spoofray.pipeline.extract import ExtractConfig, extract_features
    from spoofray.pipeline.runtime import init_ray
    from spoofray.synth import make_demo_archive

    archive = make_demo_archive(os.path.join(out, "archive"), seed=0)
    print(f"[1/2] demo archive (synthetic audio): {archive.root}")
    init_ray(num_cpus=args.num_cpus)
    features = os.path.join(out, "features")
    manifest = extract_features(ExtractConfig(input=str(archive.manifest_path), output=features,
                                              features=FeatureConfig()))
    print(f"[2/2] features: {features}  ({json.dumps(manifest['counts'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
