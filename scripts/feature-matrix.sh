#!/usr/bin/env bash
# Checks that each feature combination of the saga crate builds, and the facade's saga features
# with it: the SQL drivers are features (`sqlite`, the default, and `postgres`), so a build with
# one, the other, both or neither must compile on its own (a `cargo test --all-features` run only
# ever sees all of them).
#
# usage: scripts/feature-matrix.sh        (from anywhere in the repository; `cargo check` only)
set -euo pipefail
cd "$(dirname "$0")/.."

# Fails on a warning too (a feature combination that leaves code unused is a bug), without
# RUSTFLAGS, which would rebuild every dependency.
check() {
  echo "feature-matrix: cargo check $*"
  local out
  out=$(cargo check --quiet --color never "$@" 2>&1) || { printf '%s\n' "$out"; return 1; }
  if grep -q '^warning' <<<"$out"; then
    printf '%s\n' "$out"
    echo "feature-matrix: warnings with: cargo check $*" >&2
    return 1
  fi
}

# steadfast-saga: no SQL store, PostgreSQL only, the default (SQLite), everything.
check -p steadfast-saga --no-default-features
check -p steadfast-saga --no-default-features --features postgres
check -p steadfast-saga
check -p steadfast-saga --all-features
# The facade: `saga` (the SQLite log) and `saga-postgres` (the PostgreSQL log) each on their own.
check -p steadfast --no-default-features --features saga
check -p steadfast --no-default-features --features saga-postgres
# The configuration types (`serde`): on the layers alone, on the HTTP glue, and through the facade
# without HTTP.
check -p steadfast-layers --features serde
check -p steadfast-http --features serde
check -p steadfast --no-default-features --features layers,serde
echo "feature-matrix: every combination builds"
