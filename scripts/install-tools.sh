#!/usr/bin/env bash
# Installs the distribution packages the CI checks run, when they are missing (Debian/Ubuntu,
# apt-get; run as root, as .ci/run is). Idempotent: a tool already on PATH is not reinstalled,
# and nothing is downloaded when everything is there.
#
# Usage: scripts/install-tools.sh [TOOL...]   (default: every tool in TOOLS)
#
# To add a tool: one line in TOOLS, "command-on-PATH package-name".
set -euo pipefail

TOOLS=(
  # scripts/check-dashboard.sh: the dashboard's queries against a real Prometheus (2.42 in
  # Debian 12).
  "prometheus prometheus"
  # scripts/render-report.sh: the lab's --html report rendered headless to PNG.
  "chromium chromium"
)

# package_for COMMAND: the package that provides COMMAND, from TOOLS.
package_for() {
  local entry
  for entry in "${TOOLS[@]}"; do
    if [ "${entry%% *}" = "$1" ]; then
      echo "${entry#* }"
      return 0
    fi
  done
  echo "install-tools: unknown tool $1 (known: ${TOOLS[*]%% *})" >&2
  return 1
}

wanted=("$@")
if [ ${#wanted[@]} -eq 0 ]; then
  for entry in "${TOOLS[@]}"; do wanted+=("${entry%% *}"); done
fi

missing=()
for tool in "${wanted[@]}"; do
  pkg="$(package_for "$tool")"
  if command -v "$tool" >/dev/null 2>&1; then
    echo "install-tools: $tool present ($(command -v "$tool"))"
  else
    missing+=("$pkg")
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "install-tools: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # No recommends: the prometheus package recommends node exporters and the like.
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
  for tool in "${wanted[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || {
      echo "install-tools: $tool still missing after installing its package" >&2
      exit 1
    }
  done
fi

