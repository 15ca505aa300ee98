"""Checks before anything is written: a config from the command line, and a run directory to resume.

Problems found here are usage errors (exit code 2) that name the option, config key
or file at fault; a run directory is only created once they all pass.
"""
from __future__ import annotations

import difflib
import re
import tomllib
from pathlib import Path
from typing import Any, Iterable

from fedmm.cli.errors import reason, usage_error
from fedmm.config import PRESETS, RunConfig, load_config, read_config, set_key, to_dict
from fedmm.data.modality import DATA_MODALITIES
from fedmm.data.partition import MODES
from fedmm.engines.loop import check_checkpoint
from fedmm.engines.prepare import partition_config
from fedmm.engines.tracking import TRACKERS
from fedmm.engines.workers import resolve_device
from fedmm.federated.strategies import STRATEGIES, strategy_from_config
from fedmm.federated.train import AMP_MODES
from fedmm.models.encoders import TEXT_SIZES
from fedmm.ops.attention import ATTENTION_BACKENDS

DEVICES = ("auto", "cpu", "cuda")
IMAGE_ARCHS = ("small", "large")
FUSIONS = ("gated", "concat")


def _flat(table: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in table.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _keys(table: dict) -> list[str]:
    return list(_flat(table))


def _current(cfg: RunConfig, key: str) -> Any:
    obj = cfg
    for part in key.split("."):
        obj = getattr(obj, part, None)
    return obj


def _expected(value: Any) -> str:
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, list):
        return "a JSON list such as [0.2, 0.2, 0.05]"
    return "a string"


def _set(cfg: RunConfig, key: str, value: Any, where: str) -> None:
    """``set_key`` whose errors name ``where`` the value came from and what the key expects."""
    try:
        set_key(cfg, key, value)
    except KeyError as exc:
        table = to_dict(cfg)
        close = difflib.get_close_matches(key, _keys(table), n=1) if "." in key else []
        sections = ", ".join(k for k, v in table.items() if isinstance(v, dict))
        hint = f" (did you mean {close[0]}?)" if close else f"; keys are section.name with section one of {sections}"
        raise usage_error(f"{where}: {reason(exc)}{hint}") from exc
    except ValueError as exc:
        current = _current(cfg, key)
        raise usage_error(f"{where}: {key} expects {_expected(current)}, got {value!r}") from exc


def load_cli_config(config_file: Path | None, overrides: Iterable[str], preset: str,
                    options: dict[str, Any] | None = None, runs_here: bool = True) -> RunConfig:
    """Defaults <- ``--preset`` <- ``--config`` TOML <- ``-c key=value`` <- ``options`` (config key -> value,
    ``None`` = not given), then :func:`check_config`; every problem is a usage error naming its source."""
    if preset not in PRESETS:
        raise usage_error(f"unknown preset {preset!r} (--preset); choose from {', '.join(PRESETS)}")
    cfg = load_config(None, [], preset)
    if config_file is not None:   # as load_config reads it, with errors naming file and key
        try:
            with open(config_file, "rb") as fh:
                table = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise usage_error(f"--config {config_file}: {reason(exc)}; fix the TOML file") from exc
        for key, value in _flat(table).items():
            _set(cfg, key, value, f"--config {config_file}")
    for item in overrides:
        if "=" not in item:
            raise usage_error(f"-c {item}: expected section.key=value, e.g. -c fed.rounds=3")
        key, value = (part.strip() for part in item.split("=", 1))
        _set(cfg, key, value, f"-c {item}")
    for key, value in (options or {}).items():
        if value is not None:
            _set(cfg, key, str(value), f"option for {key}")
    check_config(cfg, runs_here)
    return cfg


def _choice(value: Any, choices: Iterable[str], key: str, what: str = "") -> None:
    choices = tuple(choices)
    if value not in choices:
        name = f"{what} {value!r} ({key})" if what else f"{key} {value!r}"
        raise usage_error(f"unknown {name}; choose from {', '.join(choices)}")


def check_config(cfg: RunConfig, runs_here: bool = True) -> None:
    """Raise a usage error for a config value a run would only trip over later (strategy, device,
    backend, model, partition, dataset folder); ``runs_here``: the device must exist on this machine."""
    _choice(cfg.fed.strategy, STRATEGIES, "fed.strategy / --strategy", "strategy")
    try:
        strategy_from_config(cfg)              # fed.encoders, fed.bn
    except ValueError as exc:
        raise usage_error(reason(exc)) from exc
    if not re.fullmatch(r"cuda:\d+", str(cfg.device)):
        _choice(cfg.device, DEVICES, "device / --device", "device")
    try:
        if runs_here:
            resolve_device(cfg.device)
    except RuntimeError as exc:
        raise usage_error(f"{reason(exc)}; use --device cpu") from exc
    m = cfg.model
    _choice(m.attention_backend, ("auto", *ATTENTION_BACKENDS), "model.attention_backend", "backend")
    _choice(m.image_arch, IMAGE_ARCHS, "model.image_arch")
    _choice(m.text_size, TEXT_SIZES, "model.text_size")
    _choice(m.fusion, FUSIONS, "model.fusion")
    _choice(cfg.train.amp, AMP_MODES, "train.amp")
    if cfg.train.rep_kd_every < 1:
        raise usage_error(f"train.rep_kd_every={cfg.train.rep_kd_every} must be >= 1 (1 = every step)")
    if m.heads < 1 or m.d % m.heads:
        raise usage_error(f"model.heads={m.heads} must divide model.d={m.d}")
    _choice(cfg.data.modalities, DATA_MODALITIES, "data.modalities")
    _choice(cfg.tracking, TRACKERS, "tracking")
    _choice(cfg.data.partition, MODES, "data.partition")
    try:
        partition_config(cfg).validate()
    except ValueError as exc:   # PartitionConfig's field names are the data section's keys
        text = re.sub(r"\b(n_clients|n_image_only|n_text_only|p_drop_modality|val_fraction|sample_missing|"
                      r"dirichlet_alpha|public_size)\b", r"data.\1", reason(exc))
        raise usage_error(f"data: {text}") from exc
    if cfg.data.dataset != "synthcxr":
        folder = Path(cfg.data.dataset)
        if not folder.is_dir():
            raise usage_error(f"data.dataset: no folder {folder}; give a dataset folder with manifest.csv "
                              "(e.g. made by 'fedmm data synth') or synthcxr")
        if not (folder / "manifest.csv").is_file():
            raise usage_error(f"data.dataset: {folder} has no manifest.csv; give a fedmm dataset folder")
    if cfg.data.tokenizer and not Path(cfg.data.tokenizer).exists():
        raise usage_error(f"data.tokenizer: {cfg.data.tokenizer} not found; give a local tokenizer folder "
                          "or leave it empty")


def load_resume_config(run_dir: Path) -> RunConfig:
    """The config of the run in ``run_dir`` after checking it can be resumed: not a run directory is a
    usage error; a damaged config.toml or checkpoint raises ValueError naming the file."""
    if not run_dir.is_dir():
        raise usage_error(f"--resume {run_dir}: no such folder; give a run directory made by 'fedmm run'")
    if not (run_dir / "config.toml").is_file():
        raise usage_error(f"--resume {run_dir}: not a run directory (no config.toml); "
                          "give a run directory made by 'fedmm run'")
    cfg = read_config(run_dir / "config.toml")
    check_checkpoint(run_dir)
    return cfg

