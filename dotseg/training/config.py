"""Configuration of a training run: optimisation, schedule, validation, checkpoints, logging."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from dotseg.configbase import NonNegFloat, NonNegInt, PositiveInt, Probability, Section, check


class EarlyStoppingConfig(Section):
    patience: NonNegInt = 15
    """Epochs without an improvement of validation Dice before the run stops (0 = never stop early)."""
    min_delta: NonNegFloat = 0.001
    """Smallest rise of validation Dice that counts as an improvement."""


class CollapseGuardConfig(Section):
    """Catches the seed's blank-mask failure: a model that learns to predict background everywhere."""

    min_clean_dice: Probability = 0.05
    """An epoch whose clean-image validation Dice is below this counts as collapsed (after warmup)."""
    min_foreground_ratio: Probability = 0.1
    """An epoch whose predicted foreground is below this fraction of the true foreground counts as collapsed."""
    max_epochs: NonNegInt = 3
    """Stop the run after this many consecutive collapsed epochs (0 = warn only)."""
    grace_epochs: NonNegInt = 2
    """Epochs at the start that are never counted (a fresh model may start anywhere)."""


class WandbConfig(Section):
    project: str = Field("dotseg", min_length=1)
    """W&B project."""
    group: str | None = None
    """W&B group (e.g. a sweep); null = none."""
    name: str | None = None
    """Run name; null = the run directory's name."""
    mode: Literal["offline", "online", "disabled"] = "offline"
    """offline writes runs to disk for a later ``wandb sync``; online needs WANDB_API_KEY in the environment."""
    images_per_epoch: int = Field(4, ge=0, le=64)
    """Prediction overlays (image | truth | prediction) logged per epoch."""


class TrainConfig(Section):
    epochs: int = Field(80, ge=1, le=100000)
    """Training epochs (1-based in logs)."""
    batch_size: int = Field(8, ge=1, le=4096)
    """Samples per optimizer step per worker."""
    samples_per_epoch: PositiveInt = 5000
    """Freshly synthesized training samples per epoch, over all workers."""
    val_samples: PositiveInt = 2000
    """Size of the fixed, seeded validation set (full noise distribution) and its clean copy."""
    lr: float = Field(1e-4, gt=0.0, le=1.0)
    """Peak AdamW learning rate."""
    weight_decay: Probability = 1e-5
    """AdamW weight decay."""
    warmup_epochs: NonNegInt = 3
    """Linear warmup epochs before cosine annealing."""
    min_lr_ratio: Probability = 0.0
    """Cosine floor as a fraction of ``lr``."""
    grad_clip: NonNegFloat = 1.0
    """Max global gradient norm (0 = no clipping)."""
    amp: bool = True
    """Mixed precision: fp16 + GradScaler on CUDA, bf16 autocast on CPU."""
    threshold: float = Field(0.5, gt=0.0, lt=1.0)
    """Probability threshold for binary masks in validation (stored in checkpoints)."""
    init: str | None = Field(None, min_length=1)
    """Fine-tuning: start from this checkpoint's weights, a path, a bucket URI or a shipped model's
    name (``shipped``, ``shipped-v1``); its model must equal ``model.*``. The optimizer, schedule and
    curriculum start fresh; a resumed run continues from its own checkpoint instead. On a multi-node
    cluster the path must be readable on every node (a bucket URI, a shared path or a shipped name)."""
    seed: int = Field(0, ge=0, le=2**63 - 1)
    """Run seed: model init, training samples (with epoch and index) and validation set."""
    num_workers: int = Field(1, ge=1, le=4096)
    """Ray Train workers (DDP ranks)."""
    use_gpu: bool = False
    """One GPU per worker."""
    cpus_per_worker: float = Field(1.0, gt=0.0, le=512)
    """Logical CPUs reserved per training worker."""
    torch_threads: int = Field(0, ge=0, le=512)
    """Intra-op threads per worker (0 = CPUs per worker, at least 1)."""
    keep_checkpoints: PositiveInt = 2
    """Best checkpoints kept by validation Dice (the latest is always kept too)."""
    max_failures: int = Field(2, ge=-1)
    """Worker-group restarts from the last checkpoint before the run fails."""
    storage_path: str = "runs"
    """Directory under which each run gets its own folder."""
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    """Early stopping on validation Dice."""
    collapse: CollapseGuardConfig = CollapseGuardConfig()
    """Blank-mask collapse detection."""
    wandb: WandbConfig = WandbConfig()
    """Weights & Biases logging (rank 0 only)."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        check(
            self.warmup_epochs < self.epochs or self.epochs == 1,
            "warmup_epochs",
            f"must be less than epochs ({self.epochs}), got {self.warmup_epochs}",
        )
        check(
            self.samples_per_epoch >= self.batch_size * self.num_workers,
            "samples_per_epoch",
            f"must be at least batch_size * num_workers = {self.batch_size * self.num_workers} "
            f"so every worker gets one full batch, got {self.samples_per_epoch}",
        )
        return self
