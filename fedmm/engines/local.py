"""The local engine: the round loop in one process, client state on disk (memory stays flat)."""
from __future__ import annotations

import json
import time
import tomllib
from pathlib import Path

import numpy as np
import torch

from fedmm.config import RunConfig, from_dict, to_toml
from fedmm.engines.evaluate import evaluate_federation
from fedmm.engines.prepare import Federation, prepare_federation
from fedmm.engines.report import write_outputs
from fedmm.federated.client import ClientStore, build_model, client_round, model_state, stable_seed
from fedmm.federated.messages import Message, check_arrays
from fedmm.federated.server import ServerState, server_round
from fedmm.federated.strategies import strategy_from_config
from fedmm.io import append_jsonl, read_json, write_json


class NullReporter:
    """Progress hooks; the CLI passes a rich implementation."""

    def start_round(self, r: int, total_rounds: int, n_clients: int) -> None: ...
    def client_done(self, name: str, meta: dict) -> None: ...
    def end_round(self, r: int, info: dict) -> None: ...
    def message(self, text: str) -> None: ...


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda requested but no CUDA device is available")
    return torch.device(name)


def upload_spec(head_shapes: dict[str, tuple], d: int, n_classes: int) -> dict[str, tuple]:
    """Every array a client may upload, with its shape (None = any length)."""
    spec = {f"shared/{k}": s for k, s in head_shapes.items()}
    for mod in ("image", "text"):
        spec.update({f"summary/{mod}_centroids": (None, d), f"summary/{mod}_counts": (None,),
                     f"summary/{mod}_hist": (None, n_classes)})
    spec["public/logits"] = (None, n_classes)
    return spec


def new_run_dir(cfg: RunConfig) -> Path:
    name = cfg.name or f"{cfg.fed.strategy}-seed{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(cfg.out) / name
    if (run_dir / "checkpoints").exists():
        raise FileExistsError(f"{run_dir} already holds a run; use --resume {run_dir} or another --name")
    return run_dir


def load_run_config(run_dir: Path) -> RunConfig:
    with open(run_dir / "config.toml", "rb") as fh:
        return from_dict(tomllib.load(fh))


def run_simulation(cfg: RunConfig, run_dir: Path, resume: bool = False, reporter=None) -> dict:
    """Run (or resume) a simulated federation; returns summary.json's content."""
    reporter = reporter or NullReporter()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.toml").write_text(to_toml(cfg))
    device = resolve_device(cfg.device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    strategy = strategy_from_config(cfg)
    fed: Federation = prepare_federation(cfg)
    for issue in fed.issues[:20]:
        reporter.message(f"data issue: {issue}")
    n_classes, seed = len(fed.classes), int(cfg.seed)
    head = build_model(cfg, fed.vocab_size, n_classes, stable_seed(seed, 0xC0FFEE)).head
    spec = upload_spec({k: tuple(v.shape) for k, v in head.state_dict().items()}, head.d, n_classes)
    stores = {c.name: ClientStore(run_dir / "clients" / c.name) for c in fed.clients}
    ckpt_dir, metrics_path = run_dir / "checkpoints", run_dir / "metrics.jsonl"
    wall_before = 0.0
    if resume and (ckpt_dir / "latest.json").exists():
        latest = read_json(ckpt_dir / "latest.json")
        state = ServerState.from_message(Message.load(ckpt_dir / f"server_round_{latest['round']:04d}", "broadcast"))
        wall_before = float(latest.get("wall_s", 0.0))
        _truncate_metrics(metrics_path, state.round)
        reporter.message(f"resuming after round {state.round}")
    else:
        metrics_path.unlink(missing_ok=True)
        state = ServerState(0, model_state(head))
        if strategy.kd:
            rng = np.random.default_rng(seed * 1_000_003)
            m = min(cfg.train.kd_public_per_round, len(fed.public))
            state.public_index = np.sort(rng.choice(len(fed.public), m, replace=False)).astype(np.int64)
    t0 = time.time()
    for r in range(state.round, cfg.fed.rounds):
        reporter.start_round(r, cfg.fed.rounds, len(fed.clients))
        broadcast, uploads = state.broadcast({"strategy": strategy.name}), []
        for data in fed.clients:
            up = client_round(data, broadcast, cfg, strategy, stores[data.name], fed.vocab_size, device)
            check_arrays(up.arrays, spec, f"upload of {data.name} (round {r})")
            uploads.append(up)
            reporter.client_done(data.name, up.meta)
        state, info = server_round(state, uploads, strategy, cfg, head, len(fed.public))
        wall = wall_before + time.time() - t0
        rows = [{"round": r, "client": u.meta["client"], "modality": u.meta["modality"],
                 "val_macro_f1": u.meta["val_score"], "train_loss": u.meta["train_loss"],
                 "n_train": u.meta["n_train"], "role": "student" if u.meta["client"] in info.get("students", [])
                 else "teacher" if u.meta["client"] in info.get("teachers", []) else ""} for u in uploads]
        scores = [u.meta["val_score"] for u in uploads]
        rows.append({"round": r, "client": "global", "val_macro_f1_mean": float(np.mean(scores)),
                     "n_uploads": len(uploads), "n_prototypes": 0 if state.gv is None else len(state.gv.pair_img),
                     "wall_s": wall})
        append_jsonl(metrics_path, rows)
        state.broadcast().save(ckpt_dir / f"server_round_{state.round:04d}")
        write_json(ckpt_dir / "latest.json", {"round": state.round, "wall_s": wall})
        reporter.end_round(r, {**info, "val_macro_f1_mean": float(np.mean(scores)), "wall_s": wall})
    wall = wall_before + time.time() - t0
    results = evaluate_federation(fed, cfg, strategy, state, stores, device)
    return write_outputs(run_dir, cfg, results, wall)


def _truncate_metrics(path: Path, rounds_done: int) -> None:
    """Drop metric rows of rounds that were not checkpointed (a run killed mid-round)."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["round"] < rounds_done]
    path.write_text("".join(line + "\n" for line in keep))
