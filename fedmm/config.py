"""Run configuration: nested dataclasses, loaded from TOML, overridden by ``key=value`` strings."""
from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedmm.models.model import ModelConfig


@dataclass
class DataConfig:
    dataset: str = "synthcxr"          # "synthcxr" (generated into the cache) or a dataset folder
    n_samples: int = 4800              # synthcxr size (train pool + test)
    image_size: int = 64
    max_len: int = 48
    vocab_size: int = 2000
    tokenizer: str = ""                # local tokenizer / HF folder; default: WordPiece built from the public set
    partition: str = "structural"      # structural | client | sample | site
    n_clients: int = 30
    n_image_only: int = 2
    n_text_only: int = 2
    p_drop_modality: float = 0.3
    sample_missing: list = field(default_factory=lambda: [0.2, 0.2, 0.05])
    dirichlet_alpha: float = 0.0       # 0 = IID labels
    public_size: int = 500
    val_fraction: float = 0.15
    modalities: str = "both"           # both | image | text: hide a modality everywhere (complementarity study)


@dataclass
class TrainConfig:
    local_epochs: int = 2
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    kd_weight: float = 1.0
    kd_temperature: float = 2.0
    kd_batch_size: int = 8
    kd_public_per_round: int = 128     # public samples whose logits are exchanged each round
    logit_adjust_tau: float = 1.0      # fed.balance: task loss on logits + tau * log(own label prior)
    balance_paired: bool = False       # fed.balance also on rows with both modalities (default: single-modality rows only)
    paired_federation_prior: bool = False  # balance_paired off: paired rows calibrated to the federation's prior
    align_weight: float = 0.1          # fed.align: weight of the image-text InfoNCE term
    align_temperature: float = 0.1
    views_weight: float = 0.5          # fed.missing_views: weight of each hidden-modality view's CE
    rep_kd_weight: float = 0.1         # fed.rep_kd: weight of the pull toward global public representations
    rep_kd_temperature: float = 0.1
    rep_kd_every: int = 1              # fed.rep_kd: the term on every k-th step only, weighted k x (same
                                       # expected pull, 1/k of its encoder passes)
    prox_mu: float = 0.01              # fedprox only
    eval_batch_size: int = 256
    amp: str = "none"                  # none | bf16: bfloat16 autocast of local training steps on CUDA
                                       # (ignored on CPU; fedmm/federated/train.py autocast_context)


@dataclass
class FedConfig:
    strategy: str = "fedmm"            # fedmm | fedavg | fedprox | local | centralized
    rounds: int = 5
    min_clients: int = 1               # a round fails unless at least this many valid uploads arrive
    encoders: str = "shared"           # shared (federated per modality) | local (never leave the site)
    bn: str = "recompute"              # BatchNorm of shared encoders: recompute (averaged + statistics pass
                                       # after the last round) | shared (averaged) | local (FedBN)
    baseline_dropout: bool = False     # fedavg/fedprox/local train with model.modality_dropout too
    weighting: str = "performance"     # performance | samples | uniform
    tau: float = 0.1                   # performance weighting temperature
    aggregation: str = "mean"          # mean | median | trimmed_mean | krum
    trim: float = 0.1
    n_byzantine: int = 0
    kd: bool = False                   # modality-aware logit KD on the public set
    rep_kd: bool = True                # representation-level KD on the public set
    align: bool = True                 # cross-modal InfoNCE alignment of paired samples
    balance: bool = True               # logit-adjusted loss (each client's own label prior)
    missing_views: bool = True         # paired rows also trained with the image / the report hidden
    server_lr: float = 1.0             # fedmm: global = broadcast + server_lr * averaged update
    prototypes: bool = True
    pairing: str = "hungarian"         # hungarian | random
    kd_threshold: float = -1.0         # < 0: median of the validation scores
    n_centers: int = 16
    local_centers: int = 8
    min_cluster_size: int = 5
    pair_alpha: float = 1.0
    pair_beta: float = 1.0
    calib_steps: int = 20
    calib_lr: float = 1e-3
    dp_clip: float = 0.0               # > 0: clip pooled vectors to this norm before clustering
    dp_noise: float = 0.0              # noise on centroids (std dp_noise * dp_clip / count): no formal guarantee
    clip_norm: float = 0.0             # > 0: clip each client's update (all its federated tensors) to this L2 norm
    clip_quantile: float = 0.0         # in (0, 1]: clip to this quantile of the round's update norms (adaptive)
    dp: str = "none"                   # none | client: client-level DP-FedAvg on the shared weights
                                       # (fedmm/federated/mechanisms/client_dp.py; epsilon: federated/privacy.py)
    dp_noise_multiplier: float = 1.0   # fed.dp=client: z, noise std z * dp_clip_norm / n on the averaged update
    dp_clip_norm: float = 1.0          # fed.dp=client: C, each client's update clipped to this L2 norm
    dp_delta: float = 1e-5             # fed.dp=client: the delta epsilon is reported at
    dp_clients: int = 0                # fed.dp=client: n, clients expected per round (0 = data.n_clients)
    dp_fresh_noise: bool = False       # fed.dp=client: noise seeded from the OS, not from (seed, round)


@dataclass
class AttackConfig:
    """Simulated hostile clients (fedmm/federated/attacks.py); kind none = off."""

    kind: str = "none"                 # none | signflip | scale | noise | claims | logits | centroids
    n: int = 0                         # attackers: the first n of a seeded order of the multimodal clients
    clients: list = field(default_factory=list)   # attacker names (empty: the seeded choice, filled in at start)
    scale: float = 10.0                # scale: upload = broadcast + scale * update
    noise: float = 1.0                 # noise: Gaussian std = noise * RMS of the update
    claim_n: int = 1_000_000           # claims: the n_train and n_val claimed
    target_class: int = -1             # logits: class of the confident public logits (index mod C)
    logit_margin: float = 10.0         # logits: that class's logit (the others 0)
    centroid_scale: float = 100.0      # centroids: local centroids multiplied by this
    count_scale: float = 100.0         # centroids: cluster counts and label histograms multiplied by this


@dataclass
class RunConfig:
    name: str = ""
    out: str = "runs"
    seed: int = 0
    device: str = "auto"
    threads: int = 0                   # CPU threads for torch (0 = library default; per worker: cores / workers)
    workers: int = 0                   # client processes on CPU (0 = one per core, 1 = all in this process)
    cache: str = ""                    # where generated data lives (default: $FEDMM_CACHE or ~/.cache/fedmm)
    tracking: str = "tensorboard"      # tensorboard (event files in RUN_DIR/tensorboard/) | none
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    fed: FedConfig = field(default_factory=FedConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)


PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "smoke": {"data.n_samples": 900, "data.n_clients": 6, "data.n_image_only": 1, "data.n_text_only": 1,
              "data.public_size": 100, "fed.rounds": 3, "fed.n_centers": 6, "fed.local_centers": 4,
              "train.kd_public_per_round": 48, "fed.calib_steps": 5},
    # Many small clients (benchmarks/bench_scale.py): 300 clients of ~33 rows (~28 train, ~5 val),
    # 20 image-only + 20 text-only (the default's 2 in 15). The source size follows
    # n_samples = SCALE_ROWS_PER_CLIENT * n_clients + SCALE_EXTRA_ROWS (17% of it is the test set,
    # 200 rows the public set); scale_overrides(k) gives the -c overrides for k clients of the same
    # size, e.g. 30: -c data.n_clients=30 -c data.n_samples=1440 -c data.n_image_only=2 -c data.n_text_only=2
    "scale": {"data.n_samples": 12240, "data.n_clients": 300, "data.n_image_only": 20, "data.n_text_only": 20,
              "data.public_size": 200, "fed.rounds": 3, "fed.local_centers": 4,
              "train.kd_public_per_round": 32},
}

SCALE_ROWS_PER_CLIENT = 40   # source rows per client in the scale preset (test share included)
SCALE_EXTRA_ROWS = 240       # source rows for the public set (and its share of the test set)


def scale_overrides(n_clients: int) -> list[str]:
    """``key=value`` overrides that resize the ``scale`` preset to ``n_clients`` clients of the same
    size: n_samples grows with the clients, and the image-only / text-only clients keep their share."""
    if n_clients < 1:
        raise ValueError("n_clients must be >= 1")
    single = round(n_clients / 15)
    return [f"data.n_clients={n_clients}", f"data.n_samples={SCALE_ROWS_PER_CLIENT * n_clients + SCALE_EXTRA_ROWS}",
            f"data.n_image_only={single}", f"data.n_text_only={single}"]


def _coerce(value: str, current: Any) -> Any:
    if isinstance(current, bool):
        if value.lower() in ("true", "1", "yes"):
            return True
        if value.lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"expected true/false, got {value!r}")
    if isinstance(current, int):
        return int(value)
    if isinstance(current, float):
        return float(value)
    if isinstance(current, list):
        parsed = json.loads(value)
        if not isinstance(parsed, list):
            raise ValueError(f"expected a JSON list, got {value!r}")
        return parsed
    return value


def set_key(cfg: RunConfig, key: str, value: Any) -> None:
    """Set dotted ``key`` (e.g. ``fed.rounds``) on ``cfg``; strings are coerced to the field's type."""
    *path, leaf = key.split(".")
    obj = cfg
    for part in path:
        if not dataclasses.is_dataclass(obj) or not hasattr(obj, part):
            raise KeyError(f"unknown config section {part!r} in {key!r}")
        obj = getattr(obj, part)
    if not dataclasses.is_dataclass(obj) or leaf not in {f.name for f in dataclasses.fields(obj)}:
        raise KeyError(f"unknown config key {key!r}")
    current = getattr(obj, leaf)
    if dataclasses.is_dataclass(current):
        raise KeyError(f"{key!r} is a section, not a value")
    try:
        if isinstance(value, str) and not isinstance(current, str):
            value = _coerce(value, current)
        elif isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        setattr(obj, leaf, value)
    except ValueError as exc:
        raise ValueError(f"config {key}: {exc}") from exc


def _flatten(table: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in table.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def load_config(toml_file: str | Path | None = None, overrides: list[str] = (), preset: str = "default") -> RunConfig:
    """Defaults <- preset <- TOML file <- ``key=value`` overrides (later wins)."""
    cfg = RunConfig()
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {list(PRESETS)}")
    for k, v in PRESETS[preset].items():
        set_key(cfg, k, v)
    if toml_file:
        with open(toml_file, "rb") as fh:
            for k, v in _flatten(tomllib.load(fh)).items():
                set_key(cfg, k, v)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key=value")
        k, v = item.split("=", 1)
        set_key(cfg, k.strip(), v.strip())
    return cfg


def to_dict(cfg: RunConfig) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(table: dict) -> RunConfig:
    cfg = RunConfig()
    for k, v in _flatten(table).items():
        set_key(cfg, k, v)
    return cfg


def read_config(path: str | Path, missing: str = "not a run directory") -> RunConfig:
    """The resolved config a run saved to ``path`` (``config.toml``, written by :func:`to_toml`).

    Raises FileNotFoundError naming the file, with ``missing`` saying what its absence means,
    and ValueError naming the file when it is damaged."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing ({missing})")
    try:
        with open(path, "rb") as fh:
            return from_dict(tomllib.load(fh))
    except (tomllib.TOMLDecodeError, KeyError, ValueError) as exc:
        why = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        raise ValueError(f"{path}: damaged run config ({why}); restore it or start a new run") from exc


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))


def to_toml(cfg: RunConfig) -> str:
    """Resolved config as TOML (round-trips through :func:`load_config`)."""
    table = to_dict(cfg)
    lines = [f"{k} = {_toml_value(v)}" for k, v in table.items() if not isinstance(v, dict)]
    for section, values in table.items():
        if isinstance(values, dict):
            lines += ["", f"[{section}]"] + [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"
