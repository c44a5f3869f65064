#!/usr/bin/env bash
# Builds and runs steadfast's examples and the README's Rust snippets the way a user's crate
# would: in a throwaway crate outside the workspace, whose only steadfast dependency is the
# facade (a path dependency, features = ["full"]). Its other dependencies are the facade's
# [dev-dependencies] minus steadfast's own crates, at the versions and features of
# [workspace.dependencies]; the workspace's Cargo.lock is copied, so versions match and nothing
# is downloaded (`--offline`: run it after the workspace has been built, as .ci/run does).
#
# It also checks the README's dependency blocks: every `steadfast` feature they name exists,
# and every other crate's version is the workspace's.
#
# Usage: scripts/user-crate.sh
#   CARGO_TARGET_DIR   the user crate builds in $CARGO_TARGET_DIR/user-crate (default
#                      target/user-crate), so repeated runs are incremental.
#   STEADFAST_REQUIRE_SERVICES=1  run the examples that need Redis even if it does not answer
#                      (they fail then); otherwise they are skipped, loudly.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
manifest="$root/Cargo.toml"
readme="$root/README.md"
target="${CARGO_TARGET_DIR:-$root/target}/user-crate"
work="$(mktemp -d "${TMPDIR:-/tmp}/steadfast-user-crate.XXXXXX")"
trap 'rm -rf "$work"' EXIT

fail() {
  echo "user-crate: $*" >&2
  exit 1
}

# The lines of one [section] of the root manifest.
section() {
  awk -v want="[$1]" '
    /^\[/ { inside = ($0 == want); next }
    inside && NF && $0 !~ /^#/ { print }
  ' "$manifest"
}

# field LINE KEY: the value of `KEY = "..."` in a one-line TOML entry.
field() {
  sed -n "s/.*[{ ,]$2 = \"\([^\"]*\)\".*/\1/p" <<<"$1"
}

# features LINE: the quoted names inside `features = [...]`, comma-separated.
features() {
  sed -n 's/.*features = \[\([^]]*\)\].*/\1/p' <<<"$1" | tr -d ' '
}

workspace_deps="$(section workspace.dependencies)"
dev_deps="$(section dev-dependencies)"
facade_features="$(section features | sed -n 's/^\([a-z0-9_-]*\) = .*/\1/p')"
package_version="$(section workspace.package | sed -n 's/^version = "\(.*\)"/\1/p')"

# workspace_line NAME: NAME's entry in [workspace.dependencies].
workspace_line() {
  grep -E "^$1 = " <<<"$workspace_deps" | head -n1
}

# workspace_version NAME
workspace_version() {
  local line
  line="$(workspace_line "$1")"
  [ -n "$line" ] || return 0
  if [[ "$line" =~ ^[a-z0-9_-]+\ =\ \"([^\"]*)\" ]]; then
    echo "${BASH_REMATCH[1]}"
  else
    field "$line" version
  fi
}

# --- The README's dependency blocks -------------------------------------------------------
blocks="$(awk '/^```toml/ { inside = 1; next } /^```/ { inside = 0 } inside' "$readme")"
[ -n "$blocks" ] || fail "README.md has no \`\`\`toml dependency blocks"
checked=0
while IFS= read -r line; do
  [[ "$line" =~ ^([a-z0-9_-]+)\ =\ (.*)$ ]] || continue
  name="${BASH_REMATCH[1]}"
  value="${BASH_REMATCH[2]}"
  if [[ "$value" == \"* ]]; then
    version="$(sed -n 's/^"\([^"]*\)".*/\1/p' <<<"$value")"
  else
    version="$(field "$line" version)"
  fi
  if [ "$name" = steadfast ]; then
    [[ "$package_version" == "$version" || "$package_version" == "$version".* ]] ||
      fail "README: steadfast = \"$version\" does not match the package version $package_version"
    for f in $(features "$line" | tr ',' ' ' | tr -d '"'); do
      grep -qx "$f" <<<"$facade_features" || fail "README: steadfast has no feature \`$f\`: $line"
    done
  else
    expected="$(workspace_version "$name")"
    [ -n "$expected" ] || fail "README: $name is not a workspace dependency: $line"
    [ "$version" = "$expected" ] ||
      fail "README: $name = \"$version\", the workspace builds with \"$expected\": $line"
  fi
  checked=$((checked + 1))
done <<<"$blocks"
echo "user-crate: README dependency blocks: $checked entries match the workspace"

# --- The crate --------------------------------------------------------------------------------
deps=""
while IFS= read -r line; do
  [[ "$line" =~ ^([a-z0-9_-]+)\ = ]] || continue
  name="${BASH_REMATCH[1]}"
  case "$name" in steadfast | steadfast-*) continue ;; esac
  ws="$(workspace_line "$name")"
  [ -n "$ws" ] || fail "dev-dependency $name is not in [workspace.dependencies]"
  version="$(workspace_version "$name")"
  all="$(features "$ws"),$(features "$line")"
  all="$(tr ',' '\n' <<<"$all" | sed '/^$/d' | sort -u | paste -sd, - | sed 's/,/, /g')"
  default=true
  grep -q 'default-features = false' <<<"$ws" && default=false
  deps+="$name = { version = \"$version\", default-features = $default, features = [$all] }"$'\n'
done <<<"$dev_deps"

mkdir -p "$work/src" "$work/examples"
cat >"$work/Cargo.toml" <<TOML
[package]
name = "steadfast-user-crate"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
steadfast = { path = "$root", features = ["full"] }
$deps
# Not a member of any workspace above the temporary directory.
[workspace]
TOML
echo '//! A crate that uses steadfast as a user would: see examples/.' >"$work/src/lib.rs"
cp "$root/Cargo.lock" "$work/Cargo.lock"

# The examples, and the files they read beside them (`include_str!("policies.toml")`).
for f in "$root"/examples/*.rs "$root"/examples/*.toml "$root"/examples/*.json; do
  [ -e "$f" ] && cp "$f" "$work/examples/"
done

# The README's Rust snippets, as rustdoc compiles them (`# ` hides a line, keeps its code).
awk -v dir="$work/examples" '
  /^```rust/ { n++; file = sprintf("%s/readme_%d.rs", dir, n); inside = 1; next }
  /^```/ { inside = 0; next }
  inside { line = $0; if (line == "#") line = ""; else sub(/^# /, "", line); print line > file }
' "$readme"

cd "$work"
export CARGO_TARGET_DIR="$target"
echo "user-crate: building $(ls examples/*.rs | wc -l) examples in $work (target $target)"
cargo build --offline --quiet --examples

needs_redis() { grep -v '^ *//' "examples/$1.rs" | grep -q 'RedisStore::connect'; }
redis_up() {
  local url="${REDIS_URL:-redis://127.0.0.1:6379}" hostport
  hostport="${url#redis://}"
  hostport="${hostport%%/*}"
  (exec 3<>"/dev/tcp/${hostport%:*}/${hostport##*:}") 2>/dev/null
}

for f in examples/*.rs; do
  name="$(basename "$f" .rs)"
  if needs_redis "$name" && ! redis_up && [ "${STEADFAST_REQUIRE_SERVICES:-}" != 1 ]; then
    echo "user-crate: SKIPPED example $name: Redis does not answer at ${REDIS_URL:-redis://127.0.0.1:6379}" >&2
    continue
  fi
  log="$work/$name.log"
  if ! cargo run --offline --quiet --example "$name" >"$log" 2>&1; then
    cat "$log" >&2
    fail "example $name failed"
  fi
  echo "user-crate: ran example $name"
done
echo "user-crate: ok"
