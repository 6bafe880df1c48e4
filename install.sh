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
# The Khronos glTF validator (web/package-lock.json) for the export tests; Debian ships npm apart from node.
if command -v node >/dev/null; then
  if ! command -v npm >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null
  fi
  installed='const p = (f) => require("./web/" + f); process.exit(p("node_modules/gltf-validator/package.json").version
    === p("package-lock.json").packages["node_modules/gltf-validator"].version ? 0 : 1)'
  if command -v npm >/dev/null && ! node -e "$installed" 2>/dev/null; then
    (cd web && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  fi
fi
