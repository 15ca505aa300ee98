"""The federated mechanisms, one module each, with their client and server halves side by side.

docs/ARCHITECTURE.md §6 describes each half and lists the switches; in short:

| module | client half | server half |
|---|---|---|
| :mod:`.balance` | logit-adjusted task loss (the client's own label prior) | the ``balanced`` flag of ``server.calibrate`` |
| :mod:`.alignment` | symmetric InfoNCE between paired image and text vectors | ``server.run_clustering_and_fusion`` pairs centers in the same space |
| :mod:`.logit_kd` | public-set logits per modality view; KD term for students | teachers and soft labels per view |
| :mod:`.rep_kd` | public-set representations; pull toward the global ones | coordinate-wise median of the representations |
| :mod:`.missing_views` | paired rows also classified with one modality hidden | — |
| :mod:`.prox` | proximal term toward the broadcast weights | — |
| :mod:`.contribution` | — | contribution weights of the uploads |
| :mod:`.claims` | — | bounds on self-reported sizes, teacher eligibility and K-Means summaries; their events |
| :mod:`.bn_stats` | BatchNorm statistics of the final model (statistics pass) | statistics pooled exactly |
| :mod:`.update_clipping` | — | each client's update clipped to an L2 bound before aggregation |
| :mod:`.server_lr` | — | server step ``broadcast + eta * averaged update`` |
| :mod:`.client_dp` | — | DP-FedAvg (``fed.dp = client``): updates clipped, weights 1/n, Gaussian noise; epsilon in :mod:`fedmm.federated.privacy` |

Prototypes and surrogates (summaries, global K-Means, pairing, calibration) live in
:mod:`fedmm.federated.summary`, :mod:`fedmm.federated.server` and
:mod:`fedmm.models.surrogate`. ``client_round`` and ``server_round`` only call the
enabled mechanisms; a training term is any callable
``term(model, batch, out, gv, generator) -> loss`` (see :mod:`fedmm.federated.train`).
"""
