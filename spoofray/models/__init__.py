"""Detectors: the scikit-learn soft-voting ensemble (:mod:`spoofray.models.ml`), the deep
members and the model bundle. Submodules are imported on use, so importing this package is
cheap (no scikit-learn, TensorFlow or Ray)."""
