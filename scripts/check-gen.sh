#!/usr/bin/env bash
# Fails when src/images/gen/ is not what `deno task gen` makes from proto/.
set -euo pipefail
root=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
cd "$root"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
node_modules/.bin/buf generate --template '{"version":"v2","plugins":[{"local":"node_modules/.bin/protoc-gen-es","out":"'"$tmp"'","opt":["target=ts","import_extension=ts"]}]}' proto
if ! diff -r "$tmp" src/images/gen >/dev/null; then
  echo "src/images/gen is out of date with proto/: run 'deno task gen'" >&2
  diff -r "$tmp" src/images/gen | head -20 >&2
  exit 1
fi
echo "generated code is up to date"
