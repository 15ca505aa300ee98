"""Server steps (docs/ARCHITECTURE.md §5): aggregation, global K-Means, pairing, late fusion + calibration, teachers."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from fedmm.federated.mechanisms import client_dp, logit_kd, rep_kd, server_lr, update_clipping
from fedmm.federated.mechanisms.claims import bounded_summaries, check_sizes
from fedmm.federated.mechanisms.contribution import client_weights, effective_clients, weights_and_events
from fedmm.federated.messages import Message
from fedmm.federated.strategies import Strategy
from fedmm.federated.params import ENCODER_GROUPS, param_group
from fedmm.models.head import SharedHead
from fedmm.models.surrogate import GlobalVectors
from fedmm.ops import aggregate, kmeans, krum_scores, linear_sum_assignment


@dataclass
class ServerState:
    """Everything the server publishes and needs to resume."""

    round: int                                    # number of finished rounds
    shared: dict[str, np.ndarray]                 # federated name -> float32 array (fedmm.federated.params)
    gv: GlobalVectors | None = None
    public_index: np.ndarray | None = None        # [M'] rows whose logits / representations clients return
    students: list[str] = field(default_factory=list)
    published: dict[str, np.ndarray] = field(default_factory=dict)   # mechanisms' arrays (teacher/, repkd/)

    def broadcast(self, meta: dict | None = None) -> Message:
        arrays = {f"shared/{k}": v for k, v in self.shared.items()}
        if self.gv is not None:
            arrays.update(self.gv.to_arrays())
        arrays.update(self.published)
        if self.public_index is not None:
            arrays["public/index"] = self.public_index
        return Message("broadcast", arrays, {"round": self.round, "students": list(self.students), **(meta or {})})

    @classmethod
    def from_message(cls, msg: Message) -> "ServerState":
        a = msg.arrays
        shared = {k[len("shared/"):]: v for k, v in a.items() if k.startswith("shared/")}
        published = {k: v for k, v in a.items() if k.startswith(("teacher/", "repkd/"))}
        return cls(int(msg.meta["round"]), shared, GlobalVectors.from_arrays(a), a.get("public/index"),
                   list(msg.meta.get("students", [])), published)


AGG_CHUNK_BYTES = 32 << 20   # all clients' slices of one tensor gathered per aggregation call


def _flat_slice(a, begin: int, end: int) -> np.ndarray:
    """Elements ``[begin, end)`` of a flattened upload tensor: a numpy array, or one read from
    disk on demand (anything with ``read(begin, end)``, e.g. fedmm.engines.disk_arrays.DiskArray)."""
    if isinstance(a, np.ndarray):
        return a.reshape(-1)[begin:end]
    return a.read(begin, end)


def global_update(shared: dict[str, np.ndarray], uploads: list[Message], weighting: str = "samples",
                  tau: float = 0.1, method: str = "mean", trim: float = 0.1, n_byzantine: int = 0,
                  weights: np.ndarray | None = None) -> dict:
    """Server step 1: per parameter group, combine the uploads of the clients that trained it
    (``weights``: one per upload; default :func:`client_weights` of ``weighting``).

    The rules are coordinate-wise, so each tensor is combined slice by slice
    (:data:`AGG_CHUNK_BYTES` of all clients' values at a time): memory stays flat in the number
    of clients when the uploads' tensors are read from disk. ``krum`` scores whole groups and
    holds one group of every client while it does."""
    if weights is None:
        weights = client_weights(uploads, weighting, tau)
    groups: dict[str, list[str]] = {}
    for name in shared:
        groups.setdefault(param_group(name), []).append(name)
    new = dict(shared)
    for names in groups.values():
        who = [i for i, u in enumerate(uploads) if all(f"shared/{n}" in u.arrays for n in names)]
        if not who:
            continue
        w = weights[who]
        agg_method = method
        if method == "krum":
            flat = [np.concatenate([np.asarray(uploads[i].arrays[f"shared/{n}"]).ravel() for n in names])
                    for i in who]
            keep = np.argsort(krum_scores(flat, n_byzantine))[: max(1, len(flat) - n_byzantine)]
            del flat
            who, w, agg_method = [who[i] for i in keep], w[keep], "mean"
        step = max(1, AGG_CHUNK_BYTES // (4 * len(who)))
        for n in names:
            out = np.empty(shared[n].size, np.float32)   # [P] this tensor, flat
            for b in range(0, out.size, step):
                e = min(out.size, b + step)
                out[b:e] = aggregate([_flat_slice(uploads[i].arrays[f"shared/{n}"], b, e) for i in who],
                                     weights=w, method=agg_method, trim=trim)
            new[n] = out.reshape(shared[n].shape)
    return new


def _js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Pairwise Jensen-Shannon divergence (natural log) between rows of p [A, C] and q [B, C]."""
    p = p / np.maximum(p.sum(1, keepdims=True), 1e-12)
    q = q / np.maximum(q.sum(1, keepdims=True), 1e-12)
    m = 0.5 * (p[:, None] + q[None])  # [A, B, C]
    kl = lambda a, b: np.where(a > 0, a * np.log(np.maximum(a, 1e-12) / np.maximum(b, 1e-12)), 0).sum(-1)  # noqa: E731
    return 0.5 * kl(p[:, None], m) + 0.5 * kl(q[None], m)


def _global_centers(uploads: list[Message], mod: str, k: int, seed: int, n_classes: int,
                    allowed: dict[str, float] | None = None, events: list | None = None):
    """Server step 2 for ``mod``: weighted K-Means over the uploaded centroids after the count cap
    (``allowed``: client -> bound on its counts) and the norm check of
    :func:`~fedmm.federated.mechanisms.claims.bounded_summaries` (their events appended to ``events``).
    Returns (centers [k', d], label histograms [k', C], counts [k']) or None without centroids."""
    x, counts, hists, found = bounded_summaries(uploads, mod, allowed)
    if events is not None:
        events += found
    if x is None or len(x) == 0:
        return None
    centers, assign = kmeans(x, k, weights=counts, seed=seed % (2**31))
    hist = np.zeros((len(centers), n_classes), np.float32)
    np.add.at(hist, assign, hists)
    total = np.zeros(len(centers), np.float32)
    np.add.at(total, assign, counts)
    return centers, hist, total


def pair_centers(ci, hi, ct, ht, alpha: float, beta: float, mode: str, seed: int):
    """Server step 3: cost = alpha (1 - cos) + beta JS(hist); Hungarian (or random) pairing."""
    if mode == "random":
        rng = np.random.default_rng(seed)
        p = min(len(ci), len(ct))
        return rng.permutation(len(ci))[:p], rng.permutation(len(ct))[:p]
    nci = ci / np.maximum(np.linalg.norm(ci, axis=1, keepdims=True), 1e-12)
    nct = ct / np.maximum(np.linalg.norm(ct, axis=1, keepdims=True), 1e-12)
    cost = alpha * (1 - nci @ nct.T) + beta * _js_divergence(hi, ht)  # [Ki, Kt]
    rows, cols = linear_sum_assignment(cost)
    return rows.astype(np.int64), cols.astype(np.int64)


def calibrate(head: SharedHead, gv: GlobalVectors, steps: int, lr: float, balanced: bool = False,
              counts: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Server step 4: fuse each center pair (Lq = Lk = 1) into prototypes R [P, 2d] and fit
    fusion + classifier a few steps on (pair, mean of the pair's label histograms).

    ``balanced`` (with the clients' logit adjustment): the loss sees ``logits + log prior``
    (prior = the federation's label histogram), so calibration keeps the raw logits
    class-balanced instead of pulling them back toward the frequent classes.
    ``counts`` (multi-label data: the rows behind each image / text center, [Ki], [Kt]): the
    target of a pair is instead the mean of its two centers' per-class positive rates
    (histogram / count, in [0, 1]) and the loss is binary cross-entropy on independent
    sigmoids, as the clients train; ``balanced`` is ignored (no logit adjustment for multi-label)."""
    ci = torch.from_numpy(gv.img_centers[gv.pair_img])[:, None]  # [P, 1, d]
    ct = torch.from_numpy(gv.txt_centers[gv.pair_txt])[:, None]  # [P, 1, d]
    mask = torch.ones(ci.shape[0], 1, dtype=torch.bool)
    hi, ht = gv.hist_img[gv.pair_img], gv.hist_txt[gv.pair_txt]  # [P, C] each
    if counts is not None:
        ni, nt = (np.maximum(c, 1e-12)[:, None] for c in (counts[0][gv.pair_img], counts[1][gv.pair_txt]))
        target = torch.from_numpy(np.clip((hi / ni + ht / nt) / 2, 0.0, 1.0)).float()  # [P, C] positive rates
    else:
        target = hi / np.maximum(hi.sum(1, keepdims=True), 1e-12) + ht / np.maximum(ht.sum(1, keepdims=True), 1e-12)
        target = torch.from_numpy(target / 2).float()  # [P, C] label distributions
    totals = gv.hist_img.sum(0) + gv.hist_txt.sum(0) + 1.0  # [C] add-one smoothed
    use_prior = balanced and counts is None
    adjust = torch.from_numpy(np.log(totals / totals.sum())).float() if use_prior else torch.zeros(target.shape[1])
    params = list(head.fusion.parameters()) + list(head.classifier.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    head.train()
    for _ in range(steps):
        logits = head.classifier(head.fuse(ci, mask, ct, mask)) + adjust  # [P, C]
        if counts is not None:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
        else:
            loss = -(target * torch.log_softmax(logits, -1)).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    head.eval()
    with torch.no_grad():
        return head.fuse(ci, mask, ct, mask).numpy().astype(np.float32)  # [P, 2d]


def run_clustering_and_fusion(uploads: list[Message], head: SharedHead, fcfg, n_classes: int,
                              seed: int, balanced: bool = False, allowed: dict[str, float] | None = None,
                              events: list | None = None, multilabel: bool = False) -> GlobalVectors | None:
    """Server steps 2-4 on ``head`` (already holding the aggregated weights; calibrated in place).
    ``allowed`` / ``events``: as for :func:`_global_centers`; ``multilabel``: see :func:`calibrate`."""
    gi = _global_centers(uploads, "image", fcfg.n_centers, seed, n_classes, allowed, events)
    gt = _global_centers(uploads, "text", fcfg.n_centers, seed + 1, n_classes, allowed, events)
    if gi is None or gt is None:
        return None
    (ci, hi, ni), (ct, ht, nt) = gi, gt
    with torch.no_grad():  # compare image and text centers in the alignment space
        pci = head.project(torch.from_numpy(ci), "image").numpy()
        pct = head.project(torch.from_numpy(ct), "text").numpy()
    pi, pt = pair_centers(pci, hi, pct, ht, fcfg.pair_alpha, fcfg.pair_beta, fcfg.pairing, seed)
    gv = GlobalVectors(ci, ct, pi, pt, hi, ht, np.zeros((len(pi), 2 * head.d), np.float32))
    gv.prototypes = calibrate(head, gv, fcfg.calib_steps, fcfg.calib_lr, balanced, (ni, nt) if multilabel else None)
    return gv


def server_round(state: ServerState, uploads: list[Message], strategy: Strategy, cfg, head: SharedHead,
                 n_public: int, multilabel: bool = False) -> tuple[ServerState, dict]:
    """All server steps for one round; returns the new state and round metrics.
    ``multilabel``: the federation's labels are multi-hot (calibration by BCE, see :func:`calibrate`).

    The metrics hold ``robust``: every exclusion or down-weighting of a claim this round
    (:mod:`fedmm.federated.mechanisms.claims`), a list of {"client", "what", "reason"}."""
    f, r, seed = cfg.fed, state.round, int(cfg.seed)
    n_classes = head.classifier.net[-1].out_features
    shared = state.shared
    sizes = check_sizes(uploads)                  # bounded n_train / n_val claims, untrusted clients
    info: dict = {"n_uploads": len(uploads), "robust": []}
    if strategy.share and client_dp.enabled(f):   # fed.dp = client: DP-FedAvg (off by default)
        shared, dp_info = client_dp.server_update(shared, uploads, strategy, cfg, r)
        info.update(dp_info)
    elif strategy.share:
        weights, events = weights_and_events(uploads, strategy.weighting, f.tau, n_classes, sizes)
        info["robust"] += events
        info["effective_clients"] = effective_clients(weights)
        info["weights"] = {u.meta["client"]: float(w) for u, w in zip(uploads, weights)}
        combined = uploads
        if update_clipping.enabled(f):   # fed.clip_norm / fed.clip_quantile (off by default)
            combined, info["clipped"], info["clip_bound"] = update_clipping.clip_updates(
                shared, uploads, float(f.clip_norm), float(f.clip_quantile))
        shared = global_update(shared, combined, method=f.aggregation, trim=f.trim, n_byzantine=f.n_byzantine,
                               weights=weights)
        if server_lr.enabled(strategy.server_lr):   # fed.server_lr (fedmm; 1 = plain averaging)
            shared = server_lr.server_step(state.shared, shared, strategy.server_lr)
    gv = None
    if strategy.prototypes:
        head.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in shared.items()
                              if param_group(k) not in ENCODER_GROUPS})
        with torch.random.fork_rng(devices=[]):  # calibration uses dropout: make it a function of the round
            torch.manual_seed(seed * 7919 + r)
            allowed = {u.meta["client"]: float(n) for u, n in zip(uploads, sizes.n_train)}
            gv = run_clustering_and_fusion(uploads, head, f, n_classes, seed * 7919 + r, strategy.balance,
                                           allowed, info["robust"], multilabel)
        if gv is not None:
            shared = {**shared, **{k: v.detach().numpy().copy() for k, v in head.state_dict().items()}}
    new = ServerState(r + 1, shared, gv)
    if strategy.kd:
        teachers, students, probs, events = logit_kd.choose_teachers(uploads, f.kd_threshold,
                                                                     cfg.train.kd_temperature, sizes.untrusted)
        info["robust"] += events
        if probs and state.public_index is not None:
            new.published["teacher/index"] = state.public_index
            new.published.update({f"teacher/{v}_probs": p for v, p in probs.items()})
            new.students = students
        info.update(teachers=sorted({c for names in teachers.values() for c in names}), students=students)
    if strategy.rep_kd and state.public_index is not None:
        reps = rep_kd.global_representations(uploads)
        if reps:
            new.published["repkd/index"] = state.public_index
            new.published.update({f"repkd/{m}": v for m, v in reps.items()})
    if strategy.kd or strategy.rep_kd:
        rng = np.random.default_rng(seed * 1_000_003 + r + 1)
        m = min(cfg.train.kd_public_per_round, n_public)
        new.public_index = np.sort(rng.choice(n_public, m, replace=False)).astype(np.int64)
    return new, info
