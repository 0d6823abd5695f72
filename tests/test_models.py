"""Every registered model variant: shapes on odd sizes, gradients, overfitting one batch, save/load.

Small widths (base 8, depth 3) keep the parametrized test to about a second per variant on 2 cores.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dotseg.configbase import ConfigError
from dotseg.models.config import VARIANTS, ModelConfig
from dotseg.models.registry import build_model, list_models

REPO_ROOT = Path(__file__).resolve().parents[1]


def _num_params(cfg: ModelConfig) -> int:
    # On the meta device no memory is allocated and no init runs: counting a 31M model is instant.
    with torch.device("meta"):
        model = build_model(cfg)
    return sum(p.numel() for p in model.parameters())


def _disc_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two noisy 64x64 discs (one mirrored) and their masks, from a fixed seed."""
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    mask = (((yy - 30) ** 2 + (xx - 34) ** 2) < 18**2).float()[None, None]  # (1, 1, 64, 64)
    noise = 0.3 * torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    image = mask + noise  # (1, 1, 64, 64)
    return torch.cat([image, image.flip(-1)]), torch.cat([mask, mask.flip(-1)])  # (2, 1, 64, 64) each


def test_registry_matches_config_variants() -> None:
    assert list_models() == list(VARIANTS)


def test_unknown_variant_names_the_key_and_the_choices() -> None:
    cfg = ModelConfig()
    object.__setattr__(cfg, "variant", "resnet")  # bypass __post_init__, which already rejects it
    with pytest.raises(ValueError, match=r"model\.variant.*'resnet'.*attention_unet") as info:
        build_model(cfg)
    assert isinstance(info.value, ConfigError)


@pytest.mark.parametrize("variant", list_models())
def test_variant(variant: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(variant=variant, base_channels=8, depth=3)
    model = build_model(cfg)

    # Any input size: odd sizes, a tiny one, and one too small to reflect-pad.
    model.eval()
    with torch.no_grad():
        for batch, height, width in [(2, 301, 457), (1, 37, 53), (1, 3, 5)]:
            assert model(torch.randn(batch, 1, height, width)).shape == (batch, 1, height, width)
        half_res = build_model(cfg.replace(downscale=2)).eval()
        for height, width in [(301, 457), (37, 53)]:
            assert half_res(torch.randn(1, 1, height, width)).shape == (1, 1, height, width)

    # Overfit one fixed batch; the first step's gradients must reach every parameter, finitely.
    images, masks = _disc_batch()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    losses = []
    for step in range(30):
        loss = F.binary_cross_entropy_with_logits(model(images), masks)
        optimizer.zero_grad()
        loss.backward()
        if step == 0:
            for name, param in model.named_parameters():
                if param.requires_grad:
                    assert param.grad is not None, f"{name} got no gradient"
                    assert torch.isfinite(param.grad).all(), f"{name} has non-finite gradients"
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] <= 0.5 * losses[0], f"loss {losses[0]:.3f} -> {losses[-1]:.3f}"

    # Round trip through the project's checkpoint format: identical outputs.
    from dotseg.checkpoint import build_from_checkpoint, save_checkpoint
    from dotseg.config import Config

    path = save_checkpoint(
        tmp_path / "model.safetensors", model, Config(model=cfg), threshold=0.5, metrics={"loss": losses[-1]}, epoch=1
    )
    restored, loaded = build_from_checkpoint(path, expect=cfg)
    assert loaded.cfg.model == cfg
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(images), restored(images))


def test_parameter_counts_at_base_64() -> None:
    # The seed README quotes 31.5M for its Attention U-Net; the vanilla U-Net (Ronneberger widths,
    # transposed-conv decoder) is about 31.0M.
    assert _num_params(ModelConfig(variant="attention_unet")) == pytest.approx(31.5e6, rel=0.05)
    assert 30.0e6 <= _num_params(ModelConfig(variant="unet")) <= 32.0e6


def test_config_import_does_not_import_torch() -> None:
    code = "import sys, dotseg.models, dotseg.models.config; assert 'torch' not in sys.modules"
    subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, check=True, env={"PYTHONPATH": str(REPO_ROOT), "PATH": ""}
    )


def test_coarse_logits_are_the_forward_pass_before_its_upsampling() -> None:
    """``forward(x, coarse=True)`` (the loss on the network's grid, issue 17) and the exported engines'
    ``coarse_logits`` are the same function, and ``upsample`` of it is ``forward`` exactly."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(base_channels=4, depth=3, downscale=4)).eval()
    x = torch.randn(2, 1, 64, 96)
    with torch.no_grad():
        coarse = model(x, coarse=True)
        assert coarse.shape == (2, 1, 16, 24)
        assert torch.equal(coarse, model.coarse_logits(x))
        assert torch.equal(model.upsample(coarse, (64, 96)), model(x))
    with pytest.raises(ValueError, match="multiples of 16, got 60x96"):
        model(x[..., :60, :], coarse=True)
