"""Data augmentation: feature-level (training loop), audio-level, and copy-synthesis.

Every public name of the submodules is re-exported here (``augment.apply_channel``).
Submodules, top-down:

features
    Feature batches of the training loop: SpecAugment masking, mixup, cutmix
    (:func:`augment_batch`).
channels
    Audio channel effects named by specs that chain (:func:`apply_channel`,
    :data:`CHANNEL_SPECS`): noise, band limit, reverb, codec and telephone round trips, gain,
    silence; tempo and pitch (:func:`perturb`).
raw_boost
    RawBoost's notch filters and three algorithms, the ``rawboost:<n>`` channel effects.
vocoders
    Copy-synthesis kernels: Griffin-Lim, WORLD, HiFi-GAN (:func:`copy_synthesize`,
    :data:`VOCODERS`).
tts
    Offline text-to-speech engines with drawn voices: Piper, Kokoro-82M, flite, eSpeak NG
    (:func:`synthesize_speech`, :data:`TTS_ENGINES`, :data:`TTS_LICENSES`).
corpus
    The training-spoof corpus driver (:class:`CopysynConfig`, :func:`copysyn_item`,
    :func:`make_copysyn_corpus`; ``jobs/make_spoofs.py`` runs it on Ray).
_common
    The sample-array helpers the audio submodules share (:func:`fit_length`).
"""

from spoofray.augment._common import fit_length
from spoofray.augment.channels import (CHANNEL_SPECS, CODEC_RATES, CODECS, G711_LAWS, MAX_PAD_S,
                                       RANDOM_GAIN_DB, TELEPHONE_CODECS, CodecUnavailableError,
                                       add_noise, apply_channel, band_limit, codec_roundtrip,
                                       g711_roundtrip, gain, pad_silence, perturb, pitch_shift,
                                       reverberate, synthetic_rir, telephone, time_stretch,
                                       trim_silence)
from spoofray.augment.corpus import (MANIFEST_COLUMNS, CopysynConfig, Version, copysyn_item,
                                     copysyn_versions, make_copysyn_corpus, manifest_csv,
                                     source_key)
from spoofray.augment.features import (FeatureAugmentConfig, augment_batch, cutmix, mixup,
                                       spec_augment)
from spoofray.augment.raw_boost import (RAWBOOST, NotchFilters, rawboost, rawboost_convolutive,
                                       rawboost_impulsive, rawboost_stationary)
from spoofray.augment.tts import LICENSES as TTS_LICENSES
from spoofray.augment.tts import TTS_ENGINES, GeneratorUnavailableError
from spoofray.augment.tts import synthesize as synthesize_speech
from spoofray.augment.vocoders import (VOCODERS, copy_synthesize, copysyn_griffin_lim,
                                       copysyn_hifigan, copysyn_world)

__all__ = [
    # _common
    "fit_length",
    # features
    "FeatureAugmentConfig", "augment_batch", "cutmix", "mixup", "spec_augment",
    # channels
    "CHANNEL_SPECS", "CODECS", "CODEC_RATES", "CodecUnavailableError", "G711_LAWS", "MAX_PAD_S",
    "RANDOM_GAIN_DB", "TELEPHONE_CODECS", "add_noise", "apply_channel", "band_limit",
    "codec_roundtrip", "g711_roundtrip", "gain", "pad_silence", "perturb",
    "pitch_shift", "reverberate", "synthetic_rir", "telephone", "time_stretch", "trim_silence",
    # raw_boost
    "NotchFilters", "RAWBOOST", "rawboost", "rawboost_convolutive", "rawboost_impulsive",
    "rawboost_stationary",
    # vocoders
    "VOCODERS", "copy_synthesize", "copysyn_griffin_lim", "copysyn_hifigan", "copysyn_world",
    # tts
    "GeneratorUnavailableError", "TTS_ENGINES", "TTS_LICENSES", "synthesize_speech",
    # corpus
    "MANIFEST_COLUMNS", "CopysynConfig", "Version", "copysyn_item", "copysyn_versions",
    "make_copysyn_corpus", "manifest_csv", "source_key",
]
