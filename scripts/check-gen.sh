#!/usr/bin/env bash
# Fails when src/images/gen/ is not what `deno task gen` makes from proto/.
set -euo pipefail
root=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
cd "$root"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# buf.gen.yaml itself, writing elsewhere: the same plugin options as `deno task gen`.
sed -e "s#out: src/images/gen#out: $tmp/gen#" -e '/^clean:/d' buf.gen.yaml >"$tmp/buf.gen.yaml"
node_modules/.bin/buf generate --template "$tmp/buf.gen.yaml"
if ! diff -r "$tmp/gen" src/images/gen >/dev/null; then
  echo "src/images/gen is out of date with proto/: run 'deno task gen'" >&2
  diff -r "$tmp/gen" src/images/gen | head -20 >&2
  exit 1
fi
echo "generated code is up to date"
