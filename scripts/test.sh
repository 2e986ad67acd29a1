#!/usr/bin/env bash
# Runs the whole test suite on a Debian/Ubuntu machine: installs what is missing,
# starts PostgreSQL, RabbitMQ (with its management API), builds, and runs
#   1. every test in parallel (one vhost and one database per test),
#   2. the crash drills, with the test hooks compiled in (feature crash-hooks),
#   3. the tests that restart the broker, alone,
#   4. the README's local run, end to end (--check),
#   5. the offline validation of the Kubernetes manifests,
#   6. one drill past one machine: kill -9 of the node leading the validator's quorum
#      queue, two replicas of every service on a three-node cluster (issue 20),
#   7. schemathesis against every service from docs/openapi.yaml, at CI size.
# The TLS backends (scripts/tls-backends.sh: a TLS-only RabbitMQ node and an ssl-only
# PostgreSQL cluster of their own, for e2e/tests/tls.rs) start during the build and
# stop at the end; so does that three-node cluster (scripts/cluster.sh), with node
# names, ports and a directory of the run's own (meter-ci1…3, 5711-5713), so that a
# developer's cluster (meter-c1…3 on 5701-5703) is never touched.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_toolchain
start_postgres
start_rabbitmq
scripts/kannel.sh install
# Jasmin (ingest/tests/jasmin.rs: MO; notifier/tests/jasmin.rs: replies and delivery
# reports) in a venv of its own, with the DLR fix of jookies/jasmin#1236 applied, and
# Redis on 127.0.0.1:6379.
start_redis
apt_install python3-venv
scripts/jasmin.py install
bash scripts/tls-backends.sh install
pip_install aiosmtpd -- aiosmtpd
pip_install opentelemetry.proto -- opentelemetry-proto
pip_install kubernetes_validate jsonschema yaml -- -r deploy/requirements.txt
# e2e/tests/docs.rs reads docs/openapi.yaml (PyYAML) and validates it; the last step
# runs schemathesis against the services.
pip_install yaml openapi_spec_validator -- pyyaml openapi-spec-validator
pip_install schemathesis -- schemathesis
ensure_kubectl
# promtool (Debian's prometheus package) checks the PrometheusRule; its daemon is not started.
command -v promtool >/dev/null || apt_install prometheus
# The console's browser test (console/tests/browser.rs) drives Debian's Chromium.
apt_install chromium chromium-driver

if ! cargo nextest --version >/dev/null 2>&1; then
    log "installing cargo-nextest"
    cargo install --locked cargo-nextest >/dev/null
fi

log "starting the TLS backends (while building)"
tls_log=$(mktemp)
bash scripts/tls-backends.sh start >"$tls_log" 2>&1 &
tls_start=$!

log "starting the three-node cluster (while building)"
export CLUSTER_NAME=meter-ci CLUSTER_PORT=5711 CLUSTER_TIMEOUT=900
CLUSTER_DIR=$(mktemp -d /tmp/meter-ci-cluster.XXXXXX)
export CLUSTER_DIR
export TEST_CLUSTER_AMQP_BASES="amqp://guest:guest@127.0.0.1:5711,amqp://guest:guest@127.0.0.1:5712,amqp://guest:guest@127.0.0.1:5713"
export TEST_CLUSTER_APIS="http://127.0.0.1:15711,http://127.0.0.1:15712,http://127.0.0.1:15713"
cluster_log=$(mktemp)
bash scripts/cluster.sh start >"$cluster_log" 2>&1 &
cluster_start=$!
stop_backends() {
    bash scripts/tls-backends.sh stop >/dev/null 2>&1 || true
    bash scripts/cluster.sh stop --purge >/dev/null 2>&1 || true
    rm -rf "$CLUSTER_DIR"
}
trap stop_backends EXIT

log "building"
cargo build --workspace --all-targets --locked
wait "$tls_start" || { cat "$tls_log" >&2; die "the TLS backends did not start"; }

log "tests (parallel)"
cargo nextest run --workspace --locked --no-fail-fast

# The crash drills need test hooks that release builds leave out (the `crash-hooks`
# feature): their `crash` targets are skipped above (required-features) and built
# here with the feature named on the command line. No Cargo.toml enables it, so the
# binaries the other steps run stay hook-free (the next cargo command without the
# feature links those back into target/debug/).
log "crash drills (feature crash-hooks)"
cargo nextest run --locked --no-fail-fast -p validator -p billing-export \
    --features validator/crash-hooks,billing-export/crash-hooks --test crash

# Tests that restart the broker are #[ignore]d and named *broker_restart*: they take
# the broker away from every other test, so they run after the others, one at a time.
# (Other ignored tests are benchmarks, run by hand: see docs/performance.md.)
log "tests that restart the broker (alone)"
cargo nextest run --workspace --locked --run-ignored only --test-threads 1 --no-fail-fast -E 'test(/broker_restart|postgres_restart/)'

log "the local run (scripts/run-local.sh --check)"
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}" LOCAL_DATABASE=meter_local_check bash scripts/run-local.sh --check

log "Kubernetes manifests (offline)"
python3 deploy/check.py
# The check's own tests: each injects a defect (an unmapped setting, a misspelt metric)
# and requires the check to fail on it, so a check that cannot fail is caught.
(cd deploy && python3 -m unittest discover -s checks/tests -t .)

# At CI size (e2e::drill::Settings: 1,000 messages at 100/s, the node down 5 s); the
# other cluster drills, and all of them at 5,000, are in scripts/drills.sh.
log "a drill past one machine: kill -9 the validator queue's leader (cluster, 2 replicas)"
wait "$cluster_start" || { cat "$cluster_log" >&2; die "the three-node cluster did not start"; }
cargo nextest run -p e2e --locked --run-ignored only --no-fail-fast --test cluster_drills \
    -E 'test(=drill_cluster_kill9_queue_leader)'

# Every operation of docs/openapi.yaml against the running services, each with its
# credentials (e2e/tests/bad_input.rs, schemathesis_every_endpoint): 25 cases per
# operation, about two minutes here; scripts/bad-input.sh runs 1,000. `timeout`
# bounds it: a hung service must fail the run, not stall it.
log "schemathesis against every service (docs/openapi.yaml, 25 cases per operation)"
SCHEMATHESIS_EXAMPLES=25 timeout 900 cargo nextest run -p e2e --locked --no-fail-fast \
    --run-ignored only --test bad_input -E 'test(=schemathesis_every_endpoint)'
