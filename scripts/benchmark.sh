#!/usr/bin/env bash
# The README's results, one sweep after another (each run already spreads its clients over
# every core). Finished runs are reused, so the script can be re-run after an interruption.
#   bash scripts/benchmark.sh            main table (shared encoders) + strict mode + fedavg controls
#   bash scripts/benchmark.sh ablations  fedmm with one mechanism switched off, 3 seeds each
#   bash scripts/benchmark.sh shift      label skew (Dirichlet 0.3) and a federation with more uni-modal sites
#   bash scripts/benchmark.sh complementarity   centralized on images only / reports only
#   bash scripts/benchmark.sh attacks    3 of 30 clients hostile, each attack kind, plain vs robust settings
#   bash scripts/benchmark.sh dp         client-level DP at three noise levels (epsilon in summary.json)
#   bash scripts/benchmark.sh covid      the real covid-cxr-notes set by site (COVID_DATA=folder)
set -euo pipefail
cd "$(dirname "$0")/.."
FEDMM=.venv/bin/fedmm
SEEDS=${SEEDS:-0,1,2}
what=${1:-main}
case "$what" in
  main)
    $FEDMM sweep --strategies fedmm,fedavg,fedprox,local,centralized --seeds "$SEEDS" --out runs/bench
    $FEDMM sweep --strategies fedmm,fedavg,fedprox --seeds "$SEEDS" --out runs/bench-strict -c fed.encoders=local
    $FEDMM sweep --strategies fedavg --seeds "$SEEDS" --out runs/bench-fedavg-dropout -c fed.baseline_dropout=true
    # fedavg with fedmm's uni-modal image head (and the fusion path's loss on the same rows): the control
    # for what the head alone buys without the federated mechanisms
    $FEDMM sweep --strategies fedavg --seeds "$SEEDS" --out runs/bench-fedavg-unihead -c model.unimodal_heads=image
    ;;
  ablations)
    for switch in model.unimodal_heads=none model.unimodal_fusion_loss=0 fed.missing_views=false fed.align=false fed.rep_kd=false fed.balance=false fed.prototypes=false \
                  model.surrogate_fill=both train.balance_paired=true fed.kd=true fed.bn=shared fed.bn=local \
                  fed.weighting=samples; do
      $FEDMM sweep --strategies fedmm --seeds "$SEEDS" --out "runs/ablation-${switch//[.=]/-}" -c "$switch"
    done
    ;;
  shift)
    $FEDMM sweep --strategies fedmm,fedavg,local --seeds "$SEEDS" --out runs/shift-dirichlet0.3 -c data.dirichlet_alpha=0.3
    $FEDMM sweep --strategies fedmm,fedavg,local --seeds "$SEEDS" --out runs/shift-unimodal8 \
      -c data.n_image_only=8 -c data.n_text_only=8
    ;;
  covid)
    # the small real set (275 radiographs, 85 without a note), federated by site (country)
    data=${COVID_DATA:-../shared/data/covid-cxr-notes}
    $FEDMM sweep --strategies fedmm,fedavg,local,centralized --seeds "$SEEDS" --out runs/covid \
      -c "data.dataset=$data" -c data.partition=site -c data.public_size=40 -c fed.n_centers=4 \
      -c fed.local_centers=2 -c fed.min_cluster_size=2 -c train.kd_public_per_round=20
    ;;
  attacks)
    # 3 of 30 clients hostile, each attack kind, with plain mean + performance weighting and with the
    # robust settings (ROBUST, overridable: a candidate until the table says otherwise); clean runs
    # of both settings are the references
    ROBUST=${ROBUST:-"-c fed.aggregation=trimmed_mean -c fed.clip_quantile=0.5"}
    $FEDMM sweep --strategies fedmm --seeds "$SEEDS" --out runs/attack-clean-plain -c fed.aggregation=mean
    $FEDMM sweep --strategies fedmm --seeds "$SEEDS" --out runs/attack-clean-robust $ROBUST
    for kind in signflip scale noise claims logits centroids; do
      $FEDMM sweep --strategies fedmm --seeds "$SEEDS" --out "runs/attack-$kind-plain" \
        -c attack.kind=$kind -c attack.n=3 -c fed.aggregation=mean
      $FEDMM sweep --strategies fedmm --seeds "$SEEDS" --out "runs/attack-$kind-robust" \
        -c attack.kind=$kind -c attack.n=3 $ROBUST
    done
    ;;
  dp)
    # client-level DP-FedAvg (fed.dp=client) at three noise multipliers; epsilon at delta 1e-5 in summary.json
    for z in 0.5 1.0 2.0; do
      $FEDMM sweep --strategies fedmm --seeds "$SEEDS" --out "runs/dp-z$z" -c fed.dp=client -c fed.dp_noise_multiplier=$z
    done
    ;;
  complementarity)
    $FEDMM sweep --strategies centralized --seeds "$SEEDS" --out runs/bench-image-only -c data.modalities=image
    $FEDMM sweep --strategies centralized --seeds "$SEEDS" --out runs/bench-text-only -c data.modalities=text
    ;;
  *) echo "usage: $0 [main|ablations|shift|covid|complementarity|attacks|dp]" >&2; exit 2 ;;
esac
