"""How deep members are trained: :class:`DLTrainConfig`.

Shared by the driver (:func:`spoofray.training.train.train_members`, which checks it before
any worker starts) and the per-worker loop (:mod:`spoofray.training.train_worker`, which
rebuilds it from the dict Ray Train hands every worker).
"""

from __future__ import annotations

import dataclasses

from spoofray import splits
from spoofray.augment import FeatureAugmentConfig
from spoofray.config import Config, Interval, Options, setting
from spoofray.errors import ConfigError
from spoofray.models import dl

#: Dev metrics a member's early stopping may follow.
EARLY_STOP_METRICS = ("dev_eer", "dev_eer_file")


@dataclasses.dataclass(frozen=True)
class DLTrainConfig(Config):
    """How to train deep members. ``batch_size`` is per worker."""

    _nested = {"augment": FeatureAugmentConfig}

    _constraints = {
        "epochs": [Interval(int, 1)],
        "batch_size": [Interval(int, 1)],
        "learning_rate": [Interval(float, 0, closed="neither")],
        "weight_decay": [Interval(float, 0)],
        "num_workers": [Interval(int, 1)],
        "use_gpu": [bool],
        "cpus_per_worker": [Interval(float, 0, closed="neither")],
        "split_by": [Options(splits.GROUP_BY)],
        "dev_fraction": [Interval(float, 0, 1, closed="neither")],
        "seed": [Interval(int, 0)],
        "patience": [Interval(int, 1)],
        "early_stop_on": [Options(EARLY_STOP_METRICS)],
        "class_weighting": [Options(("balanced", "none"))],
        "norm_sample_rows": [Interval(int, 1)],
        "max_steps_per_epoch": [None, Interval(int, 1)],
        "eval_batch_size": [Interval(int, 1)],
        "preserve_order": [bool],
        "shuffle_buffer_rows": [Interval(int, 0)],
        "dev_cache_mb": [Interval(int, 0)],
        "max_failures": [Interval(int, -1)],
        "keep_checkpoints": [Interval(int, 1)],
        "tf_heartbeat_timeout_s": [Interval(float, 1.0)],
    }

    members: tuple[str, ...] = setting(("cnn",), "members to train, from "
                                       f"{sorted(dl.MEMBER_CONFIGS)}")
    member_params: dict = setting(default_factory=dict, help='overrides per member, e.g. '
                                  '\'{"cnn": {"dropout": 0.2}}\'')
    epochs: int = setting(20, "training epochs")
    batch_size: int = setting(64, "windows per worker per step")
    learning_rate: float = setting(1e-3, "AdamW learning rate")
    weight_decay: float = setting(1e-4, "AdamW weight decay")
    num_workers: int = setting(2, "Ray Train workers")
    use_gpu: bool = setting(False, "one GPU per worker")
    cpus_per_worker: float = setting(1.0, "CPUs per worker (leave CPUs free for Ray Data "
                                     "reading)")
    split_by: str = setting("attack", "what train and dev keep disjoint")
    dev_fraction: float = setting(0.25, "share of groups held out as dev")
    dev_groups: tuple[str, ...] = setting((), "values of the --split-by column to put in dev "
                                          "(e.g. attacks)", default_help="drawn at random")
    seed: int = setting(0, "seed of the split, batches and weights")
    patience: int = setting(3, "epochs without a better dev EER before a member stops")
    early_stop_on: str = setting("dev_eer", "window- or file-level dev EER")
    class_weighting: str = setting("balanced", "balanced: loss weights n / (2 n_class); none")
    augment: FeatureAugmentConfig = setting(default_factory=FeatureAugmentConfig,
                                            help="SpecAugment/mixup/cutmix", cli=False)
    norm_sample_rows: int = setting(4096, "training windows sampled for the per-row "
                                    "normalisation statistics")
    max_steps_per_epoch: int | None = setting(None, "cap on steps per epoch",
                                              default_help="one pass over the smallest shard")
    eval_batch_size: int = setting(256, "windows per dev scoring step")
    preserve_order: bool = setting(True, "keep Ray Data's block order (reproducible batches "
                                   "for a fixed seed; a little slower)")
    shuffle_buffer_rows: int = setting(2048, "rows of the local shuffle buffer")
    dev_cache_mb: int = setting(512, "rank 0 keeps dev batches in memory after the first "
                                "epoch when they fit this budget (MiB)")
    max_failures: int = setting(0, "worker-group restarts from the latest checkpoint")
    keep_checkpoints: int = setting(2, "checkpoints kept")
    #: TF's default (10 s, with a 5 s RPC deadline per heartbeat) kills training on a loaded
    #: machine ("Deadline Exceeded"); a dead worker is noticed by Ray anyway.
    tf_heartbeat_timeout_s: float = setting(
        600.0, "TensorFlow coordination-service heartbeat timeout of the workers (seconds)")

    def _check(self) -> None:
        if not self.members or len(set(self.members)) != len(self.members):
            raise ConfigError(f"members must be a non-empty list of distinct names, got {list(self.members)}")
        for name in self.members:
            dl.member_config(name, self.member_params.get(name))  # validates names and params
        unknown = sorted(set(self.member_params) - set(self.members))
        if unknown:
            raise ConfigError(f"member_params for {unknown}, which are not in members {list(self.members)}")

    def member_configs(self) -> dict[str, dl.MemberConfig]:
        return {n: dl.member_config(n, self.member_params.get(n)) for n in self.members}
