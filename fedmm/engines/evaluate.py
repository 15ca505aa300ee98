"""Final evaluation on the global test set: per client, per modality view, per client type."""
from __future__ import annotations

import hashlib

import numpy as np
import torch

from fedmm.data.modality import SCENARIOS
from fedmm.engines.workers import WorkerPool
from fedmm.engines.store import ClientStore
from fedmm.federated.client import assemble_model
from fedmm.federated.train import client_views, own_view, predict, view_rows
from fedmm.metrics import classification_metrics, mean_metrics
from fedmm.models.model import FedMMModel


def deployed_model(cfg, vocab_size: int, n_classes: int, data_index: int, store: ClientStore,
                   shared: dict | None, device) -> FedMMModel:
    """A client's deployed model: its own state after the last round (``store``) with every federated
    tensor replaced by the final global one (``shared``, by federated name; None when nothing is shared)."""
    return assemble_model(cfg, vocab_size, n_classes, data_index, device, state=store.read(int(cfg.fed.rounds) - 1),
                          shared=shared, shared_prefix="")


def model_digest(model: torch.nn.Module) -> str:
    """SHA-256 of a model's state dict (names, dtypes, shapes, bytes): equal digests, equal predictions
    in eval mode. BatchNorm's ``num_batches_tracked`` is left out: an eval-mode forward never reads it
    (a report-only site's never-run image encoder differs from the others' only there)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        if name.endswith("num_batches_tracked"):
            continue
        a = t.detach().cpu().contiguous()
        h.update(f"{name}|{a.dtype}|{tuple(a.shape)}|".encode())
        h.update(a.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def client_validation(data_index: int, views: tuple, cfg, fed_facts: tuple, shared: dict | None,
                      gv, store: ClientStore, device, val=None) -> dict:
    """A client's deployed model: its digest and its predictions on its own validation rows."""
    vocab_size, classes, _ = fed_facts
    model = deployed_model(cfg, vocab_size, len(classes), data_index, store, shared, device)
    out = {"digest": model_digest(model)}
    if val is not None and len(val):  # the client's own validation rows, for model selection
        vlog = predict(model, val, device, gv, views, cfg.train.eval_batch_size)
        out["val"] = {v: (vlog[v], val.labels.numpy()[view_rows(val, v)]) for v in views if len(vlog[v])}
    return out


def model_test_metrics(data_index: int, views: tuple, cfg, fed_facts: tuple, shared: dict | None,
                       gv, store: ClientStore, test, device) -> dict:
    """Test metrics per view of one client's deployed model (on behalf of every client with the same digest)."""
    vocab_size, classes, multilabel = fed_facts
    model = deployed_model(cfg, vocab_size, len(classes), data_index, store, shared, device)
    logits = predict(model, test, device, gv, views, cfg.train.eval_batch_size)
    labels = test.labels.numpy()
    return {v: classification_metrics(logits[v], labels[view_rows(test, v)], classes, multilabel)
            for v in views if len(logits[v])}


def evaluate_federation(fed, cfg, strategy, state, stores: dict[str, ClientStore], device,
                        pool: WorkerPool | None = None) -> dict:
    """Metrics of each client's deployed model (its encoders + the global head when shared).

    ``test[scenario]`` averages the clients able to run that scenario; ``client_types``
    averages each client type on its own modalities. The centralized baseline has one
    model, evaluated on each view. ``pool`` evaluates clients side by side. Clients whose
    deployed models are identical (same state-dict digest: e.g. every client once all
    tensors are federated) are scored on the test set once, on the union of their views.
    """
    pool = pool or WorkerPool(1, 0)
    facts = (fed.vocab_size, list(fed.classes), fed.multilabel)
    shared = state.shared if strategy.share else None
    gv = state.gv if strategy.prototypes else None
    views = [SCENARIOS if strategy.pools_data else client_views(d.modality) for d in fed.clients]  # by position
    jobs = [(d.index, views[i], cfg, facts, shared, gv, stores[d.name], device, d.val)
            for i, d in enumerate(fed.clients)]
    checked = dict(pool.run(client_validation, jobs))                  # position -> digest, val
    groups: dict[str, list[int]] = {}                                  # digest -> positions
    for i in sorted(checked):
        groups.setdefault(checked[i]["digest"], []).append(i)
    members = list(groups.values())
    test_jobs = []
    for g in members:   # one test pass per distinct model, on the union of its clients' views
        first = fed.clients[g[0]]
        union = tuple(v for v in SCENARIOS if any(v in views[i] for i in g))
        test_jobs.append((first.index, union, cfg, facts, shared, gv, stores[first.name], fed.test, device))
    scored = dict(pool.run(model_test_metrics, test_jobs))             # group position -> view metrics
    done = {}
    for gi, g in enumerate(members):
        for i in g:
            own = {v: m for v, m in scored[gi].items() if v in views[i]}
            done[i] = {"modality": fed.clients[i].modality, **own,
                       **({"val": checked[i]["val"]} if "val" in checked[i] else {})}
    per_client = {fed.clients[i].name: done[i] for i in sorted(done)}
    val = pooled_validation([m.pop("val", {}) for m in per_client.values()], facts[1], facts[2])
    test = {s: mean_metrics([m[s] for m in per_client.values() if s in m]) for s in SCENARIOS}
    if strategy.pools_data:
        only = next(iter(per_client.values()))
        # a view with no scorable rows (e.g. text_only when reports are hidden everywhere) is left out
        types = {t: only[own_view(t)] for t in ("image_only", "text_only", "multimodal") if own_view(t) in only}
    else:
        types = {}
        for t in ("image_only", "text_only", "multimodal", "mixed"):
            members = [m[own_view(t)] for m in per_client.values() if m["modality"] == t and own_view(t) in m]
            if members:
                types[t] = mean_metrics(members)
    recall = test["full"].get("per_class_recall") or test["image_only"].get("per_class_recall", {})
    strip = lambda m: {k: v for k, v in m.items() if k != "per_class_recall"}  # noqa: E731
    return {"test": {s: strip(m) for s, m in test.items() if m}, "val": val,
            "client_types": {t: strip(m) for t, m in types.items()},
            "per_class_recall": recall, "per_client": per_client}


def pooled_validation(per_client: list[dict], classes: list[str], multilabel: bool) -> dict:
    """Metrics per scenario on the pooled validation rows of every client that can run it
    (each row scored by its own client's deployed model): what hyperparameters are chosen on."""
    out = {}
    for v in SCENARIOS:
        parts = [m[v] for m in per_client if v in m]
        if parts:
            logits, labels = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
            m = classification_metrics(logits, labels, classes, multilabel)
            out[v] = {k: x for k, x in m.items() if k != "per_class_recall"}
    return out


def summarize_seeds(summaries: list[dict]) -> dict:
    """Mean and std over runs of every numeric leaf of the summaries' test / client_types / val
    sections (a per-class dict such as ``per_class_auroc``: per class), and of the per-class recall."""
    out = {}
    for section in ("test", "client_types", "val"):
        keys = {(a, b) for s in summaries for a, m in s.get(section, {}).items() for b in m}
        for a, b in sorted(keys):
            vals = [s[section][a][b] for s in summaries if a in s.get(section, {}) and b in s[section][a]]
            if isinstance(vals[0], dict):   # {class: value} -> {class: [mean, std]} over the runs that have it
                per = {c: [v[c] for v in vals if c in v] for c in sorted({c for v in vals for c in v})}
                stat = {c: [float(np.mean(x)), float(np.std(x))] for c, x in per.items()}
            else:
                stat = [float(np.mean(vals)), float(np.std(vals))]
            out.setdefault(section, {}).setdefault(a, {})[b] = stat
    classes = sorted({c for s in summaries for c in s.get("per_class_recall", {})})
    for c in classes:
        vals = [s["per_class_recall"][c] for s in summaries if c in s.get("per_class_recall", {})]
        out.setdefault("per_class_recall", {})[c] = [float(np.mean(vals)), float(np.std(vals))]
    return out
