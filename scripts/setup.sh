#!/usr/bin/env bash
# Create .venv (Python 3.11) with every dependency and fedmm installed in editable mode.
# Idempotent: re-running only installs what is missing. Nothing here downloads models or data.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip setuptools wheel
# torch first, pinned: a bare 'torch' requirement would pull another build.
$PIP install -q "torch==2.14.1" "torchvision==0.29.1"
# every other package at the version of constraints.txt, so a setup on another day reproduces the results
$PIP install -q -c constraints.txt pybind11 cmake
$PIP install -q --no-build-isolation -c constraints.txt -e ".[test,deploy]"
