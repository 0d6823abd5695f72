"""Configs: strict loading, full key paths in errors, stable hashes, the shipped files, the CLI's help."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pydantic
import pytest

from dotseg.cli import build_parser, main
from dotseg.config import CONFIG_DIR, Config, ConfigError, config_from_dict, load_config, to_dict
from dotseg.configbase import config_hash, diff_keys, explain


def test_default_yaml_is_the_seed_and_the_builtin_defaults() -> None:
    cfg = load_config(CONFIG_DIR / "default.yaml")
    assert cfg == Config()
    assert (cfg.synthesis.size, cfg.model.base_channels, cfg.model.depth) == (512, 64, 5)
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.lr, cfg.train.weight_decay) == (80, 8, 1e-4, 1e-5)
    assert (cfg.train.warmup_epochs, cfg.train.samples_per_epoch, cfg.train.val_samples) == (3, 5000, 2000)
    assert (cfg.train.early_stopping.patience, cfg.train.early_stopping.min_delta) == (15, 0.001)
    phases = [(p.name, p.start_epoch, p.noise_scale, p.mixed_prob) for p in cfg.curriculum.phases]
    assert phases == [
        ("easy", 1, 0.10, 0.0),
        ("medium", 6, 0.35, 0.2),
        ("hard", 21, 0.70, 0.4),
        ("extreme", 46, 1.00, 0.6),
    ]
    assert (cfg.loss.boundary.from_epoch, cfg.loss.boundary.to_epoch, cfg.loss.boundary.end) == (20, 60, 0.5)
    assert (cfg.loss.bce.start, cfg.loss.bce.end) == (1.0, 0.5)
    assert (cfg.synthesis.dots.count, cfg.synthesis.dots.radius, cfg.synthesis.dots.jitter) == (
        (15, 80),
        (2.0, 6.0),
        0.03,
    )
    assert cfg.synthesis.noise.gaussian_sigma == (0.01, 1.5)
    assert cfg.synthesis.noise.poisson_lambda == (300.0, 1.0)


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_config_loads(path: Path) -> None:
    cfg = load_config(path)
    assert load_config(path.stem) == cfg  # also found by bare name


@pytest.mark.parametrize(
    "override, key, hint",
    [
        ("synthesis.dots.count=[50, 10]", "synthesis.dots.count", "min must be <= max"),
        ("train.lr=-1", "train.lr", "must be in"),
        ("train.lr=fast", "train.lr", "expected a number"),
        ("train.epochs=2.5", "train.epochs", "expected an integer"),
        ("train.amp=maybe", "train.amp", "true or false"),
        ("model.variant=resnet", "model.variant", "registered: unet"),
        ("model.downsample=avg", "model.downsample", "one of 'blurpool', 'maxpool'"),
        ("synthesis.noise.types=[gaussian, pink]", "synthesis.noise.types[1]", "one of"),
        ("train.epochs=10", "curriculum.phases[2].start_epoch", "after the last epoch"),
        ("synthesis.shape.radius=[0.1, 0.49]", "synthesis.shape.radius[1]", "must be in"),
        (
            "curriculum.phases=[{name: a, start_epoch: 2, noise_scale: 0.1, mixed_prob: 0}]",
            "curriculum.phases[0].start_epoch",
            "epoch 1",
        ),
        ("serve.min_replicas=3", "serve.min_replicas", "max_replicas"),
    ],
)
def test_bad_values_name_the_full_key_path(override: str, key: str, hint: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    msg = str(e.value)
    assert msg.startswith((key + ":", f"--set {key}")) or f" {key}:" in msg, msg
    assert hint in msg
    assert "\n" not in msg


def test_unknown_keys_are_rejected_with_the_allowed_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--set train.lrr: unknown key; allowed: epochs"):
        load_config(None, ["train.lrr=1"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("synthesis:\n  dots:\n    cnt: [1, 2]\n")
    with pytest.raises(ConfigError, match=r"^synthesis\.dots\.cnt: unknown key; allowed keys under synthesis\.dots"):
        load_config(bad)
    bad.write_text("trian:\n  lr: 1.0e-3\n")
    with pytest.raises(ConfigError, match=r"^trian: unknown key"):
        load_config(bad)
    bad.write_text("train: [1, 2]\n")
    with pytest.raises(ConfigError, match=r"^train: expected a mapping"):
        load_config(bad)
    bad.write_text("train: {lr: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_overrides_parse_like_yaml_including_bare_exponents() -> None:
    cfg = load_config(
        "smoke",
        [
            "train.lr=3e-4",
            "synthesis.dots.count=[20, 30]",
            "train.amp=false",
            "train.wandb.group=sweep-1",
            "train.wandb.name=null",
        ],
    )
    assert cfg.train.lr == 3e-4 and cfg.synthesis.dots.count == (20, 30) and cfg.train.amp is False
    assert cfg.train.wandb.group == "sweep-1" and cfg.train.wandb.name is None
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(None, ["train.lr"])


def test_configs_are_frozen_and_replace_is_checked() -> None:
    cfg = Config()
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        cfg.train.lr = 1.0  # type: ignore[misc]
    assert cfg.replace(**{"train.lr": 1e-3}).train.lr == 1e-3
    with pytest.raises(ConfigError, match=r"train\.lr"):
        cfg.replace(**{"train.lr": -5})


def test_hash_is_stable_and_sensitive(tmp_path: Path) -> None:
    cfg = load_config("smoke")
    # Same values written in another key order and layout -> same hash.
    data = to_dict(cfg)
    reordered = {k: data[k] for k in reversed(list(data))}
    assert config_hash(config_from_dict(reordered)) == cfg.hash
    assert load_config("smoke", ["train.lr=0.001"]).hash == cfg.hash  # 1e-3 == 0.001
    assert load_config("smoke", ["train.lr=0.002"]).hash != cfg.hash
    code = "from dotseg.config import load_config; print(load_config('smoke').hash)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == cfg.hash
    assert diff_keys(cfg, load_config("smoke", ["train.lr=0.002", "synthesis.size=96"])) == [
        "synthesis.size",
        "train.lr",
    ]


def test_every_field_is_documented() -> None:
    rows = explain(Config)
    undocumented = [key for key, _, _, doc in rows if not doc]
    assert not undocumented, undocumented
    assert len(rows) > 80


def test_bad_config_fails_from_the_cli_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["synth", "--n", "1", "--out", "/tmp/x", "--set", "synthesis.dots.count=[80, 15]"]) == 2
    err = capsys.readouterr().err
    assert err == "dotseg synth: error: synthesis.dots.count: min must be <= max, got [80, 15]\n"


def _subparsers(parser):
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            return action.choices
    return {}


def test_help_describes_every_option(cli) -> None:
    parser = build_parser()
    out = cli("--help")
    assert out.returncode == 0
    for name, sub in _subparsers(parser).items():
        assert name in out.stdout
        text = cli(name, "--help").stdout
        for action in sub._actions:
            if action.dest == "help":
                continue
            assert action.help, f"{name} {action.option_strings} has no help"
            for opt in action.option_strings:
                assert opt in text, f"{opt} missing from `dotseg {name} --help`"


def test_curriculum_command_prints_the_seed_schedule(cli) -> None:
    out = cli("curriculum")
    assert out.returncode == 0
    rows = {int(line.split()[0]): line.split() for line in out.stdout.splitlines() if line.strip()[:1].isdigit()}
    assert sorted(rows) == list(range(1, 81))
    assert rows[1][1:4] == ["easy", "0.10", "0.00"] and rows[6][1] == "medium" and rows[21][1] == "hard"
    assert rows[46][1:4] == ["extreme", "1.00", "0.60"]
    assert rows[20][-1] == "0.000" and rows[40][-1] == "0.250" and rows[80][-2:] == ["0.500", "0.500"]


def test_schema_checks_the_shipped_configs_as_an_editor_would(tmp_path: Path) -> None:
    import json

    import jsonschema
    import yaml

    assert main(["config", "--schema", str(tmp_path / "schema.json")]) == 0
    schema = json.loads((tmp_path / "schema.json").read_text())
    for path in sorted(CONFIG_DIR.glob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        if "applications" not in data:  # configs/serve.yaml is a Ray Serve config file (tested below)
            jsonschema.validate(data, schema)
    with pytest.raises(jsonschema.ValidationError, match="lrr"):
        jsonschema.validate({"train": {"lrr": 1.0}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"train": {"lr": -1.0}}, schema)
    assert schema["$defs"]["TrainConfig"]["properties"]["lr"]["description"] == "Peak AdamW learning rate."


def test_run_identity_ignores_paths_logging_serving_and_sweeps() -> None:
    cfg = load_config("smoke")
    same = [
        "train.storage_path=/elsewhere",
        "train.wandb.project=p",
        "train.wandb.mode=disabled",
        "serve.port=9",
        "tune.num_samples=4",
        "data.synth_tasks=7",
        "train.keep_checkpoints=5",
        "train.max_failures=0",
    ]
    for item in same:
        assert load_config("smoke", [item]).run_id == cfg.run_id, item
    for item in (
        "train.lr=0.002",
        "train.seed=1",
        "synthesis.size=96",
        "loss.boundary.end=1.0",
        "model.dropout=0.2",
        "curriculum.phases[1].noise_scale=0.9",
        "train.num_workers=2",
    ):
        assert load_config("smoke", [item]).run_id != cfg.run_id, item


def test_serve_yaml_is_a_serve_config_file_whose_args_are_the_serve_section(tmp_path: Path) -> None:
    import yaml
    from ray.serve.schema import ServeDeploySchema

    data = yaml.safe_load((CONFIG_DIR / "serve.yaml").read_text())
    ServeDeploySchema.model_validate(data)  # what `serve run` / `serve deploy` accept
    cfg = load_config("serve").serve
    assert cfg.host == data["http_options"]["host"] == "127.0.0.1" and cfg.port == data["http_options"]["port"]
    assert cfg.to_dict() == {**cfg.to_dict(), **data["applications"][0]["args"]}
    data["applications"][0]["args"]["max_replica"] = 3
    bad = tmp_path / "serve.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"^serve\.max_replica: unknown key"):
        load_config(bad)


def test_every_shipped_config_keeps_its_run_identity() -> None:
    """Run ids of the shipped configs as dotseg 0.1-0.x computed them: a refactor of the config
    machinery, or a new field at its default, must not move them (runs would stop resuming and
    checkpoints would stop matching their configs)."""
    expected = {
        "default": "272632fbd0f9",
        "cpu": "983fe2324ffa",
        "cpu-fast": "72e806390e7c",
        "v2": "b5e829d4095f",
        "v2-finetune": "52d82da300b1",
        "finetune": "36e999af9a9d",
        "quickstart": "26f92fecee83",
        "smoke": "d4b5c800f231",
        "sweep": "3c473a3857d8",
        "sweep-smoke": "318a24e7bb15",
        "sweep-finalists": "66f013e2ebb4",
        "v2-mix": "bae7eab81f66",
        "v3-mix": "03133e558494",
        "v4-sparse": "6d3599705349",
        "serve": "272632fbd0f9",
    }
    assert {name: load_config(name).run_id for name in expected} == expected


def test_the_loss_on_the_network_grid_needs_a_size_the_grid_divides() -> None:
    ok = load_config(None, ["model.downscale=4", "loss.resolution=network", "synthesis.size=320"])
    assert ok.loss.resolution == "network"
    with pytest.raises(ConfigError) as e:
        load_config(None, ["model.downscale=4", "loss.resolution=network", "synthesis.size=96"])
    msg = str(e.value)
    assert msg.startswith("loss.resolution:") and "multiple of 2**(model.depth-1) * model.downscale = 64" in msg
    assert "\n" not in msg
