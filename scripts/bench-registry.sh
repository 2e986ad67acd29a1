#!/usr/bin/env bash
# Registry import benchmark (not a test): generates a registry CSV of N rows (default
# 1,000,000: one-, two- and three-zone meters, some closed, some accounts with two
# meters, last readings on most), imports it with the release `validator
# import-registry` into a scratch database, and prints the tool's own rows/s line.
#
#   scripts/bench-registry.sh [ROWS]
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS="${1:-1000000}"
DB="meter_bench_registry"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --locked -p validator >&2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$ROWS" > "$work/registry.csv" <<'PY'
import random, sys
rows = int(sys.argv[1]); rnd = random.Random(1)
out = sys.stdout
out.write("account,meter,zones,digits,status,last_period,last_t1,last_t2,last_t3,normative_kwh\n")
i = 0; account = 10_000_000
while i < rows:
    account += 1
    meters = 2 if rnd.random() < 0.02 else 1
    for m in range(meters):
        if i >= rows: break
        zones = rnd.choice((1, 1, 1, 2, 2, 3)); digits = rnd.choice((5, 6, 6, 7))
        status = "closed" if rnd.random() < 0.03 else "active"
        vals = [str(rnd.randrange(0, 10 ** digits)) for _ in range(zones)] + [""] * (3 - zones)
        last = ("2026-10", *vals) if rnd.random() < 0.9 else ("", "", "", "")
        out.write(f"{account:012d},EM-{account}-{m},{zones},{digits},{status},{last[0]},{last[1]},{last[2]},{last[3]},{rnd.randrange(80, 300)}\n")
        i += 1
PY
psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB" RUST_LOG=warn \
    "$CARGO_TARGET_DIR/release/validator" import-registry "$work/registry.csv"
psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
