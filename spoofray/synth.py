"""Transitional name of :mod:`spoofray.testing.synth`, the demo archive (moved there).

Kept only because ``jobs/score_archive.py --smoke-test`` and
``spoofray.models.assemble.build_demo_bundle`` still import it from here, and both files are
being edited on other branches. Delete this module once they import
``spoofray.testing.synth`` (``tests/test_layout.py`` lists it as the one pending exception).
"""

from spoofray.testing.synth import make_demo_archive

__all__ = ["make_demo_archive"]
