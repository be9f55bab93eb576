#!/usr/bin/env bash
# The test command (npm test): setup, the static checks, generated code up to date, then every
# test. Ends with one plain "N passed, N failed" line.
set -uo pipefail
root=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
cd "$root"
bash scripts/setup.sh || exit 1
export NO_COLOR=1 PATH="$root/node_modules/.bin:$PATH"
status=0
echo "== static checks (fmt, lint, types)"
bash scripts/check.sh || status=1
echo "== generated code matches proto/"
bash scripts/check-gen.sh || status=1
echo "== tests"
log=$(mktemp)
deno test -A --no-check "$@" tests/ ffi/ src/ 2>&1 | tee "$log"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
summary=$(grep -E '^(ok|FAILED) \| [0-9]+ passed' "$log" | tail -n 1)
rm -f "$log"
passed=$(sed -E 's/.* ([0-9]+) passed.*/\1/' <<<"$summary")
failed=$(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"$summary")
echo "${passed:-0} passed, ${failed:-0} failed"
[ -n "$summary" ] || status=1
exit $status
