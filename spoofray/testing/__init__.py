"""Fixtures for tests, the demo and the jobs' ``--smoke-test`` runs: generated audio,
archives, feature datasets, members and bundles whose right answers are known.

Production code never imports this package (``tests/test_layout.py`` checks it): nothing in
``spoofray/`` outside it, and in ``jobs/`` only the demo and the ``--smoke-test`` branches,
inside functions.

Modules
-------
signals
    Tones, chirps, voiced tones, noise, WAV files and headers, one broken file per failure
    mode. Re-exported here: ``from spoofray import testing; testing.sine(440, 1.0, 16_000)``.
synth
    The labelled synthetic demo archive (voice-like bona fide speech, crude vocoder spoofs).
hostile
    Hostile and broken inputs, bad manifests, and the one-process time/memory probe.
reliability
    Measured outcomes of the reliability tests, and the tables of ``docs/reliability.md``.
datasets
    Generated window features: in memory, and as datasets and DEEP-VOICE tables in the real
    on-disk formats.
members
    Small real ensemble members (skops sklearn, Keras) in their producers' folder layouts.
bundles
    Small real bundles assembled from those members.
archives
    Tiny archives of real WAV files in a local folder or an ``s3://`` prefix.
processes
    Process trees from ``/proc``, for the fault drills.
waiting
    ``wait_for``: every test's wait for an outside event, a deadline with the last look.
"""

from spoofray.testing.signals import (chirp, make_broken_files, sine, voiced, wav_header,
                                      white_noise, write_wav, zero_wav_peak_timestamp)

__all__ = ["chirp", "make_broken_files", "sine", "voiced", "wav_header", "white_noise",
           "write_wav", "zero_wav_peak_timestamp"]
