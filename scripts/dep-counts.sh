#!/usr/bin/env bash
# Prints how many crates each facade feature builds on its own: the distinct packages of
#   cargo tree -p steadfast --no-default-features --features F -e normal --prefix none
# (normal dependencies with proc-macros, for this platform, the `steadfast` crate itself
# included; build and dev dependencies left out). The README's "Crate features and dependency
# counts" table comes from this.
set -euo pipefail
cd "$(dirname "$0")/.."

count() {
  cargo tree -p steadfast --no-default-features "$@" -e normal --prefix none \
    | sed -e 's/ (\*)$//' -e 's/ (proc-macro)$//' | sort -u | wc -l
}

printf '| features | crates |\n|---|---|\n'
printf '| (none) | %s |\n' "$(count)"
for f in layers layers,serde http http,serde grpc redis postgres saga saga-postgres full; do
  printf '| `%s` | %s |\n' "$f" "$(count --features "$f")"
done
