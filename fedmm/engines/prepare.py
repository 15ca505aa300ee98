"""Build a federation from a config: dataset (synthcxr in the cache when absent), partition,
tokenizer, encoded splits. Every step is cached on disk and keyed by what determines it."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from fedmm.data.encode import EncodedSplit, encode_split, hide_modality
from fedmm.data.manifest import load_manifest
from fedmm.data.partition import PartitionConfig, PartitionError, partition_dataset
from fedmm.data.synth import SynthConfig, generate_synthcxr
from fedmm.data.tokenizer import load_tokenizer, train_wordpiece
from fedmm.federated.attacks import resolve_attackers
from fedmm.federated.client import ClientData
from fedmm.federated.strategies import pools_data


@dataclass
class Federation:
    root: Path                       # CLIENT_ROOT
    classes: list[str]
    multilabel: bool
    vocab_size: int
    clients: list[ClientData]
    public: EncodedSplit
    test: EncodedSplit
    issues: list[str] = field(default_factory=list)


def cache_root(cfg) -> Path:
    """``cfg.cache`` or $FEDMM_CACHE or ~/.cache/fedmm."""
    return Path(cfg.cache or os.environ.get("FEDMM_CACHE") or Path.home() / ".cache" / "fedmm")


def _key(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _build_once(target: Path, marker: str, build) -> Path:
    """Run ``build(tmp_dir)`` unless ``target/marker`` exists; publish by atomic rename."""
    if (target / marker).exists():
        return target
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        build(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)   # a failed build leaves nothing half-made behind
        raise
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


def dataset_folder(cfg) -> Path:
    """The dataset folder: a user folder, or synthcxr generated into the cache (benchmark seed 0)."""
    if cfg.data.dataset != "synthcxr":
        folder = Path(cfg.data.dataset)
        if not (folder / "manifest.csv").exists():
            what = "has no manifest.csv" if folder.is_dir() else "does not exist"
            raise FileNotFoundError(f"data.dataset: {folder} {what}; give a fedmm dataset folder "
                                    "(with manifest.csv, e.g. made by 'fedmm data synth') or synthcxr")
        return folder
    scfg = SynthConfig(n_samples=cfg.data.n_samples, image_size=cfg.data.image_size, seed=0)
    target = cache_root(cfg) / f"synthcxr-{_key(asdict(scfg))}"
    return _build_once(target, "manifest.csv", lambda tmp: generate_synthcxr(tmp, scfg))


def partition_config(cfg) -> PartitionConfig:
    d = cfg.data
    return PartitionConfig(n_clients=d.n_clients, mode=d.partition, n_image_only=d.n_image_only,
                           n_text_only=d.n_text_only, p_drop_modality=d.p_drop_modality,
                           sample_missing=tuple(d.sample_missing),
                           dirichlet_alpha=d.dirichlet_alpha if d.dirichlet_alpha > 0 else None,
                           public_size=d.public_size, val_fraction=d.val_fraction, seed=int(cfg.seed))


def client_root(cfg) -> Path:
    """Partitioned CLIENT_ROOT in the cache (built when absent) with its tokenizer."""
    src = dataset_folder(cfg)
    pcfg = partition_config(cfg)
    target = cache_root(cfg) / "partitions" / f"{src.name}-{_key([str(src.resolve()), asdict(pcfg), cfg.data.vocab_size])}"

    def build(tmp: Path) -> None:
        try:
            partition_dataset(src, tmp, pcfg)
        except PartitionError as exc:
            more = f"raise data.n_samples={cfg.data.n_samples}" if cfg.data.dataset == "synthcxr" else \
                "use a larger data.dataset"
            raise PartitionError(f"data.dataset={cfg.data.dataset}, data.n_clients={pcfg.n_clients}: {exc.detail}",
                                 f"lower data.n_clients or {more}") from exc
        public = load_manifest(tmp / "public", require_labels=False)
        train_wordpiece([r.text for r in public.records if r.text], tmp / "tokenizer", cfg.data.vocab_size)

    return _build_once(target, "partition.json", build)


def concat_splits(splits: list[EncodedSplit]) -> EncodedSplit:
    """Rows of several encoded splits, in order (used to pool data for the centralized baseline)."""
    first = splits[0]
    fields = {k: torch.cat([getattr(s, k) for s in splits]) for k in
              ("images", "input_ids", "attention_mask", "has_image", "has_text", "labels")}
    return type(first)(ids=[i for s in splits for i in s.ids], **fields)


def prepare_federation(cfg, root: Path | None = None) -> Federation:
    """Load (building if needed) CLIENT_ROOT and encode every split the simulation needs."""
    root = Path(root) if root else client_root(cfg)
    info = json.loads((root / "partition.json").read_text())
    classes = info["classes"]
    tok = load_tokenizer(cfg.data.tokenizer or root / "tokenizer")
    issues: list[str] = []

    def encode(folder: Path, require_labels: bool = True) -> EncodedSplit:
        data = load_manifest(folder, classes=classes, require_labels=require_labels)
        split = encode_split(data, tok, cfg.data.image_size, cfg.data.max_len)
        issues.extend(str(i) for i in data.issues)
        return hide_modality(split, cfg.data.modalities)

    public, test = encode(root / "public", require_labels=False), encode(root / "test")
    multilabel = test.labels.dim() == 2
    clients = []
    for k, c in enumerate(info["clients"]):
        train, val = encode(root / c["name"] / "train"), encode(root / c["name"] / "val")
        clients.append(ClientData(c["name"], k, train, val, public, classes, multilabel))
    if pools_data(cfg.fed.strategy):   # the centralized baseline: one site holds every client's rows
        clients = [ClientData("central", 0, concat_splits([c.train for c in clients]),
                              concat_splits([c.val for c in clients]), public, classes, multilabel)]
    resolve_attackers(cfg, [(c.name, c.modality) for c in clients])   # attack.*: fills cfg.attack.clients (off: no-op)
    return Federation(root, classes, multilabel, len(tok), clients, public, test, issues)
