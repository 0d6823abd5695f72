"""Configuration of a training run: optimisation, schedule, validation, checkpoints, logging."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from dotseg.configbase import check, check_range


@dataclass(frozen=True, kw_only=True, slots=True)
class EarlyStoppingConfig:
    patience: int = 15
    """Epochs without an improvement of validation Dice before the run stops (0 = never stop early)."""
    min_delta: float = 0.001
    """Smallest rise of validation Dice that counts as an improvement."""

    def __post_init__(self) -> None:
        check_range(self.patience, "patience", 0)
        check_range(self.min_delta, "min_delta", 0.0)


@dataclass(frozen=True, kw_only=True, slots=True)
class CollapseGuardConfig:
    """Catches the seed's blank-mask failure: a model that learns to predict background everywhere."""

    min_clean_dice: float = 0.05
    """An epoch whose clean-image validation Dice is below this counts as collapsed (after warmup)."""
    min_foreground_ratio: float = 0.1
    """An epoch whose predicted foreground is below this fraction of the true foreground counts as collapsed."""
    max_epochs: int = 3
    """Stop the run after this many consecutive collapsed epochs (0 = warn only)."""
    grace_epochs: int = 2
    """Epochs at the start that are never counted (a fresh model may start anywhere)."""

    def __post_init__(self) -> None:
        check_range(self.min_clean_dice, "min_clean_dice", 0.0, 1.0)
        check_range(self.min_foreground_ratio, "min_foreground_ratio", 0.0, 1.0)
        check_range(self.max_epochs, "max_epochs", 0)
        check_range(self.grace_epochs, "grace_epochs", 0)


@dataclass(frozen=True, kw_only=True, slots=True)
class WandbConfig:
    project: str = "dotseg"
    """W&B project."""
    group: str | None = None
    """W&B group (e.g. a sweep); null = none."""
    name: str | None = None
    """Run name; null = the run directory's name."""
    mode: Literal["offline", "online", "disabled"] = "offline"
    """offline writes runs to disk for a later ``wandb sync``; online needs WANDB_API_KEY in the environment."""
    images_per_epoch: int = 4
    """Prediction overlays (image | truth | prediction) logged per epoch."""

    def __post_init__(self) -> None:
        check(bool(self.project), "project", "must not be empty")
        check_range(self.images_per_epoch, "images_per_epoch", 0, 64)


@dataclass(frozen=True, kw_only=True, slots=True)
class TrainConfig:
    epochs: int = 80
    """Training epochs (1-based in logs)."""
    batch_size: int = 8
    """Samples per optimizer step per worker."""
    samples_per_epoch: int = 5000
    """Freshly synthesized training samples per epoch, over all workers."""
    val_samples: int = 2000
    """Size of the fixed, seeded validation set (full noise distribution) and its clean copy."""
    lr: float = 1e-4
    """Peak AdamW learning rate."""
    weight_decay: float = 1e-5
    """AdamW weight decay."""
    warmup_epochs: int = 3
    """Linear warmup epochs before cosine annealing."""
    min_lr_ratio: float = 0.0
    """Cosine floor as a fraction of ``lr``."""
    grad_clip: float = 1.0
    """Max global gradient norm (0 = no clipping)."""
    amp: bool = True
    """Mixed precision: fp16 + GradScaler on CUDA, bf16 autocast on CPU."""
    threshold: float = 0.5
    """Probability threshold for binary masks in validation (stored in checkpoints)."""
    seed: int = 0
    """Run seed: model init, training samples (with epoch and index) and validation set."""
    num_workers: int = 1
    """Ray Train workers (DDP ranks)."""
    use_gpu: bool = False
    """One GPU per worker."""
    cpus_per_worker: float = 1.0
    """Logical CPUs reserved per training worker."""
    torch_threads: int = 0
    """Intra-op threads per worker (0 = CPUs per worker, at least 1)."""
    keep_checkpoints: int = 2
    """Best checkpoints kept by validation Dice (the latest is always kept too)."""
    max_failures: int = 2
    """Worker-group restarts from the last checkpoint before the run fails."""
    storage_path: str = "runs"
    """Directory under which each run gets its own folder."""
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    """Early stopping on validation Dice."""
    collapse: CollapseGuardConfig = field(default_factory=CollapseGuardConfig)
    """Blank-mask collapse detection."""
    wandb: WandbConfig = field(default_factory=WandbConfig)
    """Weights & Biases logging (rank 0 only)."""

    def __post_init__(self) -> None:
        check_range(self.epochs, "epochs", 1, 100000)
        check_range(self.batch_size, "batch_size", 1, 4096)
        check_range(self.samples_per_epoch, "samples_per_epoch", 1)
        check_range(self.val_samples, "val_samples", 1)
        check_range(self.lr, "lr", 0.0, 1.0, lo_open=True)
        check_range(self.weight_decay, "weight_decay", 0.0, 1.0)
        check_range(self.warmup_epochs, "warmup_epochs", 0)
        check(self.warmup_epochs < self.epochs or self.epochs == 1, "warmup_epochs",
              f"must be less than epochs ({self.epochs}), got {self.warmup_epochs}")
        check_range(self.min_lr_ratio, "min_lr_ratio", 0.0, 1.0)
        check_range(self.grad_clip, "grad_clip", 0.0)
        check_range(self.threshold, "threshold", 0.0, 1.0, lo_open=True, hi_open=True)
        check_range(self.seed, "seed", 0, 2**63 - 1)
        check_range(self.num_workers, "num_workers", 1, 4096)
        check_range(self.cpus_per_worker, "cpus_per_worker", 0.0, 512, lo_open=True)
        check_range(self.torch_threads, "torch_threads", 0, 512)
        check_range(self.keep_checkpoints, "keep_checkpoints", 1)
        check_range(self.max_failures, "max_failures", -1)
        check(self.samples_per_epoch >= self.batch_size * self.num_workers, "samples_per_epoch",
              f"must be at least batch_size * num_workers = {self.batch_size * self.num_workers} "
              f"so every worker gets one full batch, got {self.samples_per_epoch}")


@dataclass(frozen=True, kw_only=True, slots=True)
class DataConfig:
    """How Ray Data synthesizes training samples."""

    synth_tasks: int = 2
    """Ray Data tasks synthesizing in parallel (per training run)."""
    rows_per_block: int = 32
    """Samples per Ray Data block (larger blocks amortize per-task overhead)."""
    cpus_per_task: float = 0.5
    """Logical CPUs each synthesis task reserves; keep the total below the cluster's free CPUs."""
    prefetch_batches: int = 2
    """Batches each training worker prefetches."""

    def __post_init__(self) -> None:
        check_range(self.synth_tasks, "synth_tasks", 1, 4096)
        check_range(self.rows_per_block, "rows_per_block", 1, 100000)
        check_range(self.cpus_per_task, "cpus_per_task", 0.0, 64, lo_open=True)
        check_range(self.prefetch_batches, "prefetch_batches", 0, 64)
