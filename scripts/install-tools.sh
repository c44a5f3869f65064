#!/usr/bin/env bash
# Installs the distribution packages CI's tool steps need, when missing (Debian/Ubuntu, apt-get).
# Each package is listed once below with the command that proves it is present; a package whose
# command is found is not touched, so the script is quick (and needs no network) on a machine
# that already has everything. Run as root (CI runs as root), or with sudo available.
set -euo pipefail

# "package command" pairs, one per line: add a tool here.
TOOLS=(
  "chromium chromium"  # scripts/render-report.sh: the lab's --html report rendered headless to PNG
)

missing=()
for entry in "${TOOLS[@]}"; do
  read -r package command <<<"$entry"
  if ! command -v "$command" >/dev/null 2>&1; then
    missing+=("$package")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-tools: everything present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
echo "install-tools: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
