#!/usr/bin/env bash
# The README's results: every strategy x 3 seeds on the default config, plus the synthcxr
# complementarity study (centralized on images only / reports only). Finished runs are reused,
# so the script can be re-run after an interruption. Each run uses one torch thread, which makes
# several runs side by side (one per seed) use a multi-core machine well.
set -euo pipefail
cd "$(dirname "$0")/.."
FEDMM=.venv/bin/fedmm
for s in 0 1 2; do
  $FEDMM sweep --strategies fedmm,fedavg,local,centralized,fedprox --seeds $s --out runs/bench -c threads=1 &
done
wait
$FEDMM sweep --strategies centralized --seeds 0,1,2 --out runs/bench-image-only -c data.modalities=image -c threads=1
$FEDMM sweep --strategies centralized --seeds 0,1,2 --out runs/bench-text-only -c data.modalities=text -c threads=1
$FEDMM sweep --strategies fedmm,fedavg,fedprox,local,centralized --seeds 0,1,2 --out runs/bench -c threads=1  # table
