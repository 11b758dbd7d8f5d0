#!/usr/bin/env bash
# Installs the Debian packages retro needs to build (Faiss is compiled from source by the faiss crate's `static`
# feature: it needs cmake, a C++ compiler, BLAS and LAPACK; `retro plot` reads the DejaVu font), but only those
# that are missing.
set -euo pipefail
packages=(cmake g++ make libopenblas-dev liblapack-dev pkg-config fonts-dejavu-core "$@")
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing missing system packages: ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
