#!/usr/bin/env bash
# The README's results: every strategy x 3 seeds on the default config, plus the synthcxr
# complementarity study (centralized on images only / reports only). Finished runs are reused,
# so the script can be re-run after an interruption. Runs go one after another: each one
# already spreads its clients over every core (one worker process per core).
set -euo pipefail
cd "$(dirname "$0")/.."
FEDMM=.venv/bin/fedmm
for s in 0 1 2; do
  $FEDMM sweep --strategies fedmm,fedavg,local,centralized,fedprox --seeds $s --out runs/bench
  $FEDMM sweep --strategies centralized --seeds $s --out runs/bench-image-only -c data.modalities=image
  $FEDMM sweep --strategies centralized --seeds $s --out runs/bench-text-only -c data.modalities=text
done
$FEDMM sweep --strategies fedmm,fedavg,fedprox,local,centralized --seeds 0,1,2 --out runs/bench  # table
