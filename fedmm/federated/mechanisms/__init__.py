"""The federated mechanisms, one module each, with their client and server halves side by side.

| module | client half | server half |
|---|---|---|
| :mod:`.balance` | logit-adjusted task loss (the client's own label prior) | — |
| :mod:`.alignment` | symmetric InfoNCE between paired image and text vectors | — |
| :mod:`.logit_kd` | public-set logits per modality view; KD term for students | teachers and soft labels per view |
| :mod:`.rep_kd` | public-set representations; pull toward the global ones | robust mean of the representations |
| :mod:`.missing_views` | paired rows also classified with one modality hidden | — |
| :mod:`.prox` | proximal term toward the broadcast weights | — |
| :mod:`.contribution` | — | contribution weights of the uploads |
| :mod:`.claims` | — | bounds on self-reported sizes, teacher eligibility and K-Means summaries; their events |
| :mod:`.update_clipping` | — | each client's update clipped to an L2 bound before aggregation |
| :mod:`.client_dp` | — | DP-FedAvg (``fed.dp = client``): updates clipped, weights 1/n, Gaussian noise; epsilon in :mod:`fedmm.federated.privacy` |

Prototypes and surrogates (summaries, global K-Means, pairing, calibration) live in
:mod:`fedmm.federated.summary`, :mod:`fedmm.federated.server` and
:mod:`fedmm.models.surrogate`. ``client_round`` and ``server_round`` only call the
enabled mechanisms; a training term is any callable
``term(model, batch, out, gv, generator) -> loss`` (see :mod:`fedmm.federated.train`).
"""
