"""The bundle shipped inside the package: what jobs score with when no ``--bundle`` is given.

``spoofray-base`` is rebuilt from ``../shared/data`` by ``make default-bundle`` (the
leave-one-source-out driver in ``experiments/generalisation.py --ship``); its model card is
``docs/model_card.md``.
"""

from __future__ import annotations

import os

from spoofray.errors import ConfigError

NAME = "spoofray-base"
#: The bundle folder inside the installed package.
FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "default_bundle")
_CARD = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(FOLDER))), "docs",
                     "model_card.md")
#: Where the model card is: the checkout's copy when there is one.
MODEL_CARD = _CARD if os.path.exists(_CARD) else "docs/model_card.md in the spoofray sources"


def default_bundle() -> str:
    """The shipped bundle's folder.

    Raises
    ------
    ConfigError
        This installation lacks it (a build that dropped package data).
    """
    if not os.path.exists(os.path.join(FOLDER, "bundle.json")):
        raise ConfigError(f"the shipped default bundle {NAME} is missing from this "
                          f"installation (expected {FOLDER}/bundle.json); reinstall spoofray, "
                          "rebuild it with `make default-bundle`, or pass --bundle")
    return FOLDER
