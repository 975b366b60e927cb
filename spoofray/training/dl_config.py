"""How deep members are trained: :class:`DLTrainConfig`.

Shared by the driver (:func:`spoofray.training.train.train_members`, which checks it before
any worker starts) and the per-worker loop (:mod:`spoofray.training.train_worker`, which
rebuilds it from the dict Ray Train hands every worker).
"""

from __future__ import annotations

import dataclasses

from spoofray import splits
from spoofray.augment import FeatureAugmentConfig
from spoofray.config import Config, register
from spoofray.errors import ConfigError
from spoofray.models import dl

#: Dev metrics a member's early stopping may follow.
EARLY_STOP_METRICS = ("dev_eer", "dev_eer_file")


@register
@dataclasses.dataclass(frozen=True)
class DLTrainConfig(Config):
    """How to train deep members. ``batch_size`` is per worker."""

    _nested = {"augment": FeatureAugmentConfig}

    members: tuple[str, ...] = ("cnn",)
    #: Per-architecture overrides of the member configs, e.g. ``{"cnn": {"dropout": 0.2}}``.
    member_params: dict = dataclasses.field(default_factory=dict)
    epochs: int = 20
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    split_by: str = "attack"
    dev_fraction: float = 0.25
    dev_groups: tuple[str, ...] = ()
    seed: int = 0
    patience: int = 3
    early_stop_on: str = "dev_eer"
    #: "balanced": loss weights n / (2 n_class); "none".
    class_weighting: str = "balanced"
    augment: FeatureAugmentConfig = dataclasses.field(default_factory=FeatureAugmentConfig)
    #: Training windows sampled for the per-row normalisation statistics.
    norm_sample_rows: int = 4096
    #: Cap on steps per epoch (default: one pass over the smallest shard).
    max_steps_per_epoch: int | None = None
    eval_batch_size: int = 256
    #: Keep Ray Data's block order (reproducible batches for a fixed seed; a little slower).
    preserve_order: bool = True
    shuffle_buffer_rows: int = 2048
    #: rank 0 keeps dev batches in memory after the first epoch when they fit this budget.
    dev_cache_mb: int = 512
    max_failures: int = 0
    keep_checkpoints: int = 2
    #: TensorFlow coordination-service heartbeat timeout of the workers (seconds). TF's
    #: default (10 s, with a 5 s RPC deadline per heartbeat) kills training on a loaded
    #: machine ("Deadline Exceeded"); a dead worker is noticed by Ray anyway.
    tf_heartbeat_timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if not self.members or len(set(self.members)) != len(self.members):
            raise ConfigError(f"members must be a non-empty list of distinct names, got {list(self.members)}")
        for name in self.members:
            dl.member_config(name, self.member_params.get(name))  # validates names and params
        unknown = sorted(set(self.member_params) - set(self.members))
        if unknown:
            raise ConfigError(f"member_params for {unknown}, which are not in members {list(self.members)}")
        if self.epochs < 1 or self.batch_size < 1 or self.num_workers < 1:
            raise ConfigError("epochs, batch_size and num_workers must be >= 1")
        if not self.tf_heartbeat_timeout_s >= 1.0:
            raise ConfigError(f"tf_heartbeat_timeout_s must be >= 1 second, got {self.tf_heartbeat_timeout_s}")
        if self.early_stop_on not in EARLY_STOP_METRICS:
            raise ConfigError(f"early_stop_on must be one of {list(EARLY_STOP_METRICS)}, got {self.early_stop_on!r}")
        if self.class_weighting not in ("balanced", "none"):
            raise ConfigError(f"class_weighting must be 'balanced' or 'none', got {self.class_weighting!r}")
        if self.split_by not in splits.GROUP_BY:
            raise ConfigError(f"split_by must be one of {list(splits.GROUP_BY)}, got {self.split_by!r}")

    def member_configs(self) -> dict[str, dl.MemberConfig]:
        return {n: dl.member_config(n, self.member_params.get(n)) for n in self.members}
