#!/usr/bin/env bash
# Bundles the sources into dist/bundle/current/ (one chunk per command, loaded when it runs), which
# the launcher runs instead of src/: Deno loads a few chunks much faster than ~200 modules, and
# startup is most of what a short `criu` command costs. Each build goes to a new directory and
# `current` is switched with one rename, so a criu already running keeps the chunks it started
# with; builds older than a day are removed.
set -euo pipefail
root=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
dir="$root/dist/bundle"
mkdir -p "$dir"
build=$(mktemp -d "$dir/build-XXXXXX")
if ! "$root/node_modules/.bin/deno" bundle --quiet --platform deno --code-splitting --format esm \
  --config "$root/deno.json" --outdir "$build" "$root/src/main.ts" >"$build.log" 2>&1; then
  cat "$build.log" >&2
  rm -rf "$build" "$build.log"
  exit 1
fi
rm -f "$build.log"
chmod 755 "$build"
ln -sfn "$(basename "$build")" "$dir/current.$$"
mv -T "$dir/current.$$" "$dir/current"
find "$dir" -mindepth 1 -maxdepth 1 -name 'build-*' -mmin +1440 ! -name "$(basename "$build")" \
  -exec rm -rf {} +
