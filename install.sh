#!/usr/bin/env bash
# Installs what PTalker needs on a fresh Debian/Ubuntu machine: system libraries for headless
# rendering and speech synthesis (when run as root with apt), then the Python packages.
# A CPU-only machine gets the CPU build of torch (a plain `pip install torch` pulls GBs of CUDA).
set -euo pipefail
cd "$(dirname "$0")"
export PIP_DISABLE_PIP_VERSION_CHECK=1
pkgs=$(grep -v '^#' .ci/apt.txt | xargs || true)
if [ -n "$pkgs" ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  missing=$(for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
  if [ -n "$missing" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  fi
fi
if ! python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null; then pip install -q torch; else pip install -q torch==2.13.0; fi
fi
pip install -q -r requirements.txt
