"""Split one dataset folder into the federated client layout.

Stages (each with its own seeded random stream, so the output is a pure
function of source + config): global test set -> public set -> clients
(IID, Dirichlet label skew, or by ``site``) -> train/val per client ->
missing-modality pattern (structural / client-level / sample-level) -> files.
Patients (``patient_id``) are kept whole at every stage, so one patient never
spans two clients or two splits. The files are written by
:mod:`fedmm.data.layout`.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .layout import check_target, write_layout
from .missingness import apply_modality, client_kinds, observed_kind, sample_drop
from .manifest import Record, load_manifest

MODES = ("structural", "client", "sample", "site")
PUBLIC_CAP = 0.2   # the public set takes at most this fraction of the training pool


@dataclass
class PartitionConfig:
    """How to split a dataset into clients (see module docstring)."""

    n_clients: int = 30
    mode: str = "structural"        # structural | client | sample | site
    n_image_only: int = 2           # structural mode
    n_text_only: int = 2            # structural mode
    p_drop_modality: float = 0.3    # client mode: each client drops each modality with prob p (never both)
    sample_missing: tuple[float, float, float] = (0.2, 0.2, 0.05)  # sample mode: lose image, text, both
    dirichlet_alpha: float | None = None   # label skew; None = IID
    public_size: int = 500
    val_fraction: float = 0.15
    test_fraction: float = 0.15     # used only if the source has no split=="test" rows
    min_train_per_client: int = 10
    seed: int = 0

    def validate(self) -> None:
        """Raise ``ValueError`` on an inconsistent configuration."""
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.mode != "site" and self.n_clients < 1:
            raise ValueError("n_clients must be >= 1")
        if self.mode == "structural" and self.n_image_only + self.n_text_only > self.n_clients:
            raise ValueError("n_image_only + n_text_only exceeds n_clients")
        if min(self.n_image_only, self.n_text_only, self.public_size, self.min_train_per_client) < 0:
            raise ValueError("counts must be >= 0")
        if not (0 <= self.p_drop_modality <= 1 and 0 <= self.val_fraction < 1 and 0 <= self.test_fraction < 1):
            raise ValueError("probabilities/fractions must lie in [0, 1)")
        if len(self.sample_missing) != 3 or min(self.sample_missing) < 0 or sum(self.sample_missing) > 1:
            raise ValueError("sample_missing must be three fractions summing to <= 1")
        if self.dirichlet_alpha is not None and self.dirichlet_alpha <= 0:
            raise ValueError("dirichlet_alpha must be > 0")


@dataclass
class _Group:
    """All rows of one patient."""

    rows: list[int]
    label: str
    site: str
    complete: bool   # every row has both modalities


def _groups(records: list[Record]) -> list[_Group]:
    by_patient: dict[str, list[int]] = {}
    for i, rec in enumerate(records):
        by_patient.setdefault(rec.patient_id, []).append(i)
    out = []
    for rows in by_patient.values():
        labels = [records[i].labels[0] for i in rows if records[i].labels]
        sites = [records[i].site for i in rows if records[i].site]
        label = max(sorted(set(labels)), key=labels.count) if labels else ""
        site = max(sorted(set(sites)), key=sites.count) if sites else "unknown"
        complete = all(records[i].image is not None and records[i].text is not None for i in rows)
        out.append(_Group(rows, label, site, complete))
    return out


def _take(groups: list[_Group], candidates: list[int], target: float, rng: np.random.Generator) -> list[int]:
    """Pick whole candidate groups, stratified by label, for at most ``target`` rows.

    Each label gets its share (rounded down to whole patients); remaining room
    is then filled with any groups that still fit, so the total reaches
    ``target`` exactly whenever group sizes allow.
    """
    total = sum(len(groups[g].rows) for g in candidates)
    target = min(math.floor(target), total)
    if target <= 0:
        return []
    chosen: set[int] = set()
    taken = 0
    for label in sorted({groups[g].label for g in candidates}):
        pool = [g for g in candidates if groups[g].label == label]
        want = target * sum(len(groups[g].rows) for g in pool) / total
        got = 0
        for g in (pool[i] for i in rng.permutation(len(pool))):
            if got + len(groups[g].rows) <= want:
                chosen.add(g)
                got += len(groups[g].rows)
        taken += got
    rest = [g for g in candidates if g not in chosen]
    for g in (rest[i] for i in rng.permutation(len(rest))):
        if taken >= target:
            break
        if taken + len(groups[g].rows) <= target:
            chosen.add(g)
            taken += len(groups[g].rows)
    return sorted(chosen)


class PartitionError(ValueError):
    """The dataset cannot give the asked-for clients enough rows: ``detail`` says how many there are,
    ``hint`` what to change."""

    def __init__(self, detail: str, hint: str = "use fewer clients or more data") -> None:
        super().__init__(f"{detail}; {hint}")
        self.detail, self.hint = detail, hint


def _assign_clients(groups: list[_Group], pool: list[int], cfg: PartitionConfig, need: int,
                    rng: np.random.Generator) -> list[list[int]]:
    """Spread pool groups over clients (IID balanced or Dirichlet per class), then top up small clients."""
    k = cfg.n_clients
    sizes = {g: len(groups[g].rows) for g in pool}
    if sum(sizes.values()) < k * need:
        raise PartitionError(f"{sum(sizes.values())} training rows cannot give {k} clients "
                             f"{need} rows each (min_train_per_client={cfg.min_train_per_client})")
    members: list[list[int]] = [[] for _ in range(k)]
    load = np.zeros(k, dtype=np.int64)
    if cfg.dirichlet_alpha is None:
        for g in (pool[i] for i in rng.permutation(len(pool))):
            c = int(np.argmin(load))
            members[c].append(g)
            load[c] += sizes[g]
    else:
        for label in sorted({groups[g].label for g in pool}):
            cls = [g for g in pool if groups[g].label == label]
            cls = [cls[i] for i in rng.permutation(len(cls))]
            cuts = np.cumsum(rng.dirichlet(np.full(k, cfg.dirichlet_alpha)))
            pos, total = 0, sum(sizes[g] for g in cls)
            for g in cls:
                c = min(int(np.searchsorted(cuts, (pos + sizes[g] / 2) / total)), k - 1)
                members[c].append(g)
                load[c] += sizes[g]
                pos += sizes[g]
    for _ in range(len(pool) + k):   # top-up: move groups from the largest client to the smallest
        small, big = int(np.argmin(load)), int(np.argmax(load))
        if load[small] >= need:
            break
        movable = [g for g in members[big] if load[big] - sizes[g] >= need]
        if not movable:
            raise PartitionError(f"cannot give every one of {k} clients {need} training rows "
                                 f"(min_train_per_client={cfg.min_train_per_client})")
        g = movable[int(rng.integers(len(movable)))]
        members[big].remove(g)
        members[small].append(g)
        load[big] -= sizes[g]
        load[small] += sizes[g]
    return [sorted(m) for m in members]


def _split_val(groups: list[_Group], members: list[int], cfg: PartitionConfig,
               rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """Train/val rows of one client, split by patient; train keeps >= min_train_per_client rows."""
    total = sum(len(groups[g].rows) for g in members)
    val: list[int] = []
    if cfg.val_fraction > 0 and len(members) > 1:
        want, taken = max(1, round(cfg.val_fraction * total)), 0
        for g in (members[i] for i in rng.permutation(len(members))):
            size = len(groups[g].rows)
            if taken >= want or len(val) + 1 == len(members):
                break
            if (taken and taken + size / 2 > want) or total - taken - size < cfg.min_train_per_client:
                continue   # would overshoot the target or starve the training split
            val.append(g)
            taken += size
    val_set = set(val)
    train = sorted(r for g in members if g not in val_set for r in groups[g].rows)
    return train, sorted(r for g in val for r in groups[g].rows)


def partition_dataset(src_folder: str | os.PathLike, out_root: str | os.PathLike,
                      cfg: PartitionConfig = PartitionConfig(), overwrite: bool = False) -> dict:
    """Partition ``src_folder`` into ``out_root`` (client/public/test layout); return the summary.

    The summary is also written to ``out_root/partition.json``. Raises
    ``ValueError`` when the data cannot satisfy the config and
    ``FileExistsError`` when ``out_root`` already holds a partition and
    ``overwrite`` is False.
    """
    cfg.validate()
    check_target(Path(out_root), overwrite)
    data = load_manifest(src_folder)
    recs, groups = data.records, _groups(data.records)
    seqs = np.random.SeedSequence(cfg.seed).spawn(6)
    r_test, r_pub, r_cli, r_val, r_mod, r_drop = (np.random.default_rng(s) for s in seqs)
    warnings: list[str] = []

    marked = [g for g, grp in enumerate(groups) if any(recs[i].split == "test" for i in grp.rows)]
    complete = [g for g, grp in enumerate(groups) if grp.complete]
    test = marked or _take(groups, complete, cfg.test_fraction * len(recs), r_test)
    test_rows = [i for g in test for i in groups[g].rows
                 if recs[i].image is not None and recs[i].text is not None]
    if len(test_rows) < sum(len(groups[g].rows) for g in test):
        warnings.append("test rows lacking a modality were left out of the test set")
    test_set = set(test)
    pool = [g for g in range(len(groups)) if g not in test_set]
    pool_rows = sum(len(groups[g].rows) for g in pool)
    n_pub = min(cfg.public_size, int(PUBLIC_CAP * pool_rows))
    if n_pub < cfg.public_size:
        warnings.append(f"public set capped at {n_pub} rows ({PUBLIC_CAP:.0%} of the training pool)")
    public = _take(groups, [g for g in pool if groups[g].complete], n_pub, r_pub)
    public_rows = sorted(i for g in public for i in groups[g].rows)
    public_set = set(public)
    pool = [g for g in pool if g not in public_set]

    need = math.ceil(cfg.min_train_per_client / (1 - cfg.val_fraction))
    if cfg.mode == "sample":
        need = math.ceil(need / (1 - cfg.sample_missing[2]))
    if cfg.mode == "site":
        by_site: dict[str, list[int]] = {}
        for g in pool:
            by_site.setdefault(groups[g].site, []).append(g)
        names = sorted(by_site)
        small = [s for s in names if sum(len(groups[g].rows) for g in by_site[s]) < need]
        names = [s for s in names if s not in small]
        members = [by_site[s] for s in names]
        site_lists = [[s] for s in names]
        if small:
            members.append(sorted(g for s in small for g in by_site[s]))
            site_lists.append(small)
            warnings.append(f"{len(small)} site(s) with fewer than {need} rows merged into one client")
    else:
        try:
            members = _assign_clients(groups, pool, cfg, need, r_cli)
        except PartitionError as exc:
            if not data.issues:
                raise
            first = data.issues[0]
            raise PartitionError(f"{exc.detail}; {len(data.issues)} source row(s) were skipped, the first "
                                 f"at {first.file}:{first.row}: {first.reason.split(';')[0]}", exc.hint) from exc
        site_lists = [None] * len(members)
    kinds = client_kinds(cfg, len(members), r_mod)

    clients = []
    for k, (mem, kind, sites) in enumerate(zip(members, kinds, site_lists)):
        train_idx, val_idx = _split_val(groups, mem, cfg, r_val)
        split_recs = []
        for split, idx in (("train", train_idx), ("val", val_idx)):
            out = [dataclasses.replace(recs[i], split=split) for i in idx]
            if cfg.mode == "sample":
                out = sample_drop(out, cfg.sample_missing, cfg.min_train_per_client if split == "train" else 0,
                                   r_drop)
            else:
                out = [r for r in (apply_modality(r, kind) for r in out) if r is not None]
            split_recs.append(out)
        train, val = split_recs
        if cfg.mode == "site":
            kind = observed_kind(train + val)
        if len(train) < cfg.min_train_per_client:
            warnings.append(f"client_{k} has only {len(train)} training rows")
        hist = {c: 0 for c in data.classes}
        for r in train:
            for name in r.labels:
                hist[name] += 1
        entry = {"name": f"client_{k}", "modality": kind, "n_train": len(train), "n_val": len(val),
                 "label_hist": hist, "n_train_image": sum(r.image is not None for r in train),
                 "n_train_text": sum(r.text is not None for r in train)}
        if sites is not None:
            entry["sites"] = sites
        clients.append((entry, train, val))

    config = dataclasses.asdict(cfg)
    config["sample_missing"] = list(cfg.sample_missing)
    summary = {
        "config": config, "classes": list(data.classes), "multilabel": data.multilabel,
        "clients": [c[0] for c in clients], "n_public": len(public_rows), "n_test": len(test_rows),
        "source": str(data.root), "n_source_rows": len(recs), "warnings": warnings,
        "source_issues": [str(i) for i in data.issues],
    }
    public_recs = [dataclasses.replace(recs[i], labels=(), split="public") for i in public_rows]
    test_recs = [dataclasses.replace(recs[i], split="test") for i in sorted(test_rows)]
    write_layout(Path(out_root), summary, [(c[1], c[2]) for c in clients], public_recs, test_recs,
                 data.classes, data.multilabel, overwrite)
    return summary
