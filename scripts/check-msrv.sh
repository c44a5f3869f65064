#!/usr/bin/env bash
# Checks that the workspace's `rust-version` is what its dependency graph really needs: reads
# every package's declared `rust-version` from `cargo metadata --format-version 1` (the locked
# graph, every target platform, normal, build and dev dependencies), and fails when a
# dependency declares more than the workspace, or a member declares something else than the
# workspace. Prints the dependencies that set the floor.
#
# usage: scripts/check-msrv.sh            (from anywhere in the repository)
set -euo pipefail
cd "$(dirname "$0")/.."

command -v python3 >/dev/null || { echo "check-msrv: python3 is required" >&2; exit 2; }

check=$(cat <<'PY'
import json
import sys

meta = json.load(sys.stdin)

def version(text):
    parts = [int(p) for p in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))

members = set(meta["workspace_members"])
in_graph = {node["id"] for node in meta["resolve"]["nodes"]}
packages = {p["id"]: p for p in meta["packages"]}

declared = {packages[m]["rust_version"] for m in members}
if len(declared) != 1 or None in declared:
    print(f"check-msrv: workspace members declare different rust-versions: {sorted(map(str, declared))}")
    sys.exit(1)
msrv = declared.pop()

deps = [packages[i] for i in in_graph - members if packages[i].get("rust_version")]
deps.sort(key=lambda p: version(p["rust_version"]), reverse=True)
too_new = [p for p in deps if version(p["rust_version"]) > version(msrv)]
need = deps[0]["rust_version"] if deps else "none"
floor = [f"{p['name']} {p['version']}" for p in deps if deps and p["rust_version"] == need]

print(f"check-msrv: workspace rust-version {msrv}; {len(in_graph - members)} dependencies, "
      f"{len(deps)} of which declare one; the highest is {need} ({', '.join(floor)})")
if too_new:
    for p in too_new:
        print(f"check-msrv: {p['name']} {p['version']} needs Rust {p['rust_version']} > {msrv}")
    print("check-msrv: raise [workspace.package] rust-version, or hold those dependencies back")
    sys.exit(1)
if deps and version(need) < version(msrv):
    print(f"check-msrv: note: no dependency needs more than {need}; the workspace asks for {msrv} "
          "(fine if the code itself needs it)")
PY
)
cargo metadata --format-version 1 --locked | python3 -c "$check"
