"""spoofray: find synthetic and spoofed speech in large audio archives, on Ray.

Importing the package is cheap: Ray and TensorFlow are imported only by the modules
and functions that need them.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("spoofray")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"
