#!/usr/bin/env bash
# Static checks (deno task check): formatting, lint, and the type check of every module and test
# (the test run itself then skips type checking, as it is done here once).
set -euo pipefail
root=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
cd "$root"
deno=node_modules/.bin/deno
"$deno" fmt --check
"$deno" lint
"$deno" check src/ mod.ts tests/ ffi/ scripts/*.ts  # every module, tests beside their code too
