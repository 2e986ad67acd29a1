#!/usr/bin/env bash
# The bad-input drills at full size (issue 7), each printing its counts:
#   - schemathesis (PyPI) against every service (the console too, logged in), from
#     docs/openapi.yaml (SCHEMATHESIS_EXAMPLES per operation, default 1000; 25 in
#     scripts/test.sh);
#   - the Rust HTTP probes (garbage, truncated, oversized, wrong-typed, wrongly
#     encoded requests over a raw socket) and the broker garbage (dead letters);
#   - the long parser fuzz run (FUZZ_CASES per parser, default 1,000,000; FUZZ_SEED).
# The CI-sized versions of the last two run in scripts/test.sh with every other test.
# Needs what scripts/test.sh sets up (PostgreSQL, RabbitMQ with management, aiosmtpd).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

pip_install schemathesis -- schemathesis
export SCHEMATHESIS_EXAMPLES="${SCHEMATHESIS_EXAMPLES:-1000}"
export FUZZ_CASES="${FUZZ_CASES:-1000000}"

log "building"
cargo build --workspace --bins --locked
cargo build -p e2e --tests --locked

log "bad input: schemathesis ($SCHEMATHESIS_EXAMPLES examples per operation), HTTP probes, broker garbage, parser fuzz ($FUZZ_CASES inputs per parser)"
out="$(mktemp)"
status=0
# Everything in bad_input.rs but the CI-sized fuzz run (the long one replaces it).
cargo nextest run -p e2e --locked --test bad_input --run-ignored all --no-fail-fast \
    --success-output final -E 'not test(=parser_fuzz)' 2>&1 | tee "$out" || status=$?

echo
echo "Bad-input counts:"
grep -E '^ *(schemathesis:|HTTP bad input:|broker bad input:|parser fuzz|[a-z-]+\.dead:)|^ +(PASS|FAIL) ' "$out" | sed 's/^ *//' | sort -u || true
rm -f "$out"
exit "$status"
