"""Narrow exceptions. Each says what was expected, what came, and what to do.

Per-file problems (everything under :class:`InputFileError`) are recorded as error rows
and never stop a run; the rest are refusals that stop a job before it does any work.
"""

from __future__ import annotations


class SpoofrayError(Exception):
    """Base class of every error spoofray raises on purpose."""


# --- per-file errors: become error rows, never fatal -------------------------------------


class InputFileError(SpoofrayError):
    """A single input file could not be turned into audio windows.

    ``error_type`` (the class name) and ``str(exc)`` are what land in error rows, so the
    message must name the file and the problem on its own.
    """

    @property
    def error_type(self) -> str:
        return type(self).__name__


class FileReadError(InputFileError):
    """The bytes of a file could not be read (missing, permissions, storage fault)."""


class AudioDecodeError(InputFileError):
    """The bytes are not decodable audio (corrupt, truncated, not audio at all)."""


class UnsupportedFormatError(InputFileError):
    """The container/codec needs a decoder that is not available (e.g. ffmpeg for m4a)."""


class InvalidAudioError(InputFileError):
    """Decoded, but unusable: empty, silent, NaN/Inf samples, absurd rate or channels."""


class AudioTooShortError(InvalidAudioError):
    """Shorter than the configured minimum duration."""


class AudioTooLongError(InputFileError):
    """Longer (or larger) than the configured limit; raise the limit to process it."""


class UnsupportedBandError(InputFileError):
    """The bundle has no model for the file's band (e.g. an 8 kHz call and a bundle that
    judges only wideband audio): no score rather than one read from a band that is not there."""


# --- refusals: stop before work starts ----------------------------------------------------


class ConfigError(SpoofrayError, ValueError):
    """A configuration value or search-space key is invalid."""


class SourceError(SpoofrayError, ValueError):
    """An input listing is unusable: missing path, empty listing, bad manifest row."""


class LabelError(SourceError):
    """A label is not one of the known spellings of bonafide/spoof."""


class OutputExistsError(SpoofrayError, FileExistsError):
    """The output location already holds data and ``overwrite`` was not asked for."""


class MetricError(SpoofrayError, ValueError):
    """Scores or labels cannot give the requested metric (e.g. only one class present)."""


class BundleIntegrityError(SpoofrayError):
    """A model bundle failed checksum, feature-config or safety verification."""


# --- run failures ---------------------------------------------------------------------------


class StorageUnavailableError(SpoofrayError):
    """The storage endpoint stayed unreachable for the whole retry budget.

    Not a per-file problem (every file would fail the same way), so it is never turned
    into an error row: it stops the run, which then publishes nothing. Deliberately not an
    ``OSError``: per-file readers turn ``OSError`` into error rows.
    """
