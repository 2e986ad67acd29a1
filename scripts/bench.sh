#!/usr/bin/env bash
# Load benchmark (issue #8): the release build of the whole system under loadgen —
# a system of its own (four services, fresh vhost and database, billing and SMS-gateway
# HTTP doubles, e-mails to files), 100,000 accounts imported, a plan of SMS whose every
# outcome is known, each message accounted for. Two phases, each with the bare-broker
# baseline first (one quorum queue, confirms, one acking consumer) for scale:
#   1. throughput: as fast as the system takes them (`--rate max`, 64 in flight);
#   2. latency: a steady 200 messages/s for 30 s (open loop).
# Prints both reports (Markdown tables). Exit status non-zero if any message was lost,
# duplicated or wrong in either phase.
#
#   scripts/bench.sh
#   BENCH_MESSAGES=50000 BENCH_RATE=300 BENCH_SECONDS=60 scripts/bench.sh
#   BENCH_BROKER=cluster BENCH_REPLICAS=2 scripts/bench.sh   # on scripts/cluster.sh's cluster
#
# Knobs (environment): BENCH_ACCOUNTS (100000), BENCH_MESSAGES (30000, throughput
# phase), BENCH_IN_FLIGHT (64), BENCH_RATE (200, latency phase), BENCH_SECONDS (30),
# BENCH_BASELINE_SECONDS (10), BENCH_JSON_DIR (unset: no JSON files), BENCH_BROKER
# (machine, or cluster: the project's three-node cluster, which must be running —
# `scripts/cluster.sh start`; its nodes' CPU time is then reported too), BENCH_REPLICAS
# (1: replicas of every service, 1-3), BENCH_PROBE_MESSAGES (0: the one-at-a-time
# crossing probe before the latency phase, this many messages per node),
# BENCH_PHASES ("throughput latency": either or both), BENCH_SKIP_BUILD (unset).
# Needs what scripts/test.sh sets up (PostgreSQL, RabbitMQ with the management plugin);
# run that once first. Run it on an otherwise idle machine: the figures are this
# machine's.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/meter-readings-target}"
ACCOUNTS="${BENCH_ACCOUNTS:-100000}"
MESSAGES="${BENCH_MESSAGES:-30000}"
IN_FLIGHT="${BENCH_IN_FLIGHT:-64}"
RATE="${BENCH_RATE:-200}"
SECONDS_AT_RATE="${BENCH_SECONDS:-30}"
BASELINE="${BENCH_BASELINE_SECONDS:-10}"
BROKER="${BENCH_BROKER:-machine}"
REPLICAS="${BENCH_REPLICAS:-1}"
PROBE="${BENCH_PROBE_MESSAGES:-0}"
PHASES="${BENCH_PHASES:-throughput latency}"

if [ -z "${BENCH_SKIP_BUILD:-}" ]; then
    log "building (release)"
    cargo build --release --workspace --bins --locked
fi
loadgen="$CARGO_TARGET_DIR/release/loadgen"

# Where the system runs, and (on the cluster) the nodes' VMs, watched for CPU time.
system_args=(--broker "$BROKER" --replicas "$REPLICAS")
if [ "$BROKER" = cluster ]; then
    scripts/cluster.sh status >/dev/null || die "the cluster is not running: scripts/cluster.sh start"
    for n in 1 2 3; do
        system_args+=(--watch "rabbitmq-c$n=$(scripts/cluster.sh pid "$n")")
    done
else
    # The machine's node, when its VM is visible (its CPU time includes whatever else
    # uses that broker meanwhile).
    pid=$(pgrep -u rabbitmq -o beam.smp 2>/dev/null || true)
    [ -n "$pid" ] && system_args+=(--watch "rabbitmq=$pid")
fi

json_args() { # phase
    if [ -n "${BENCH_JSON_DIR:-}" ]; then
        mkdir -p "$BENCH_JSON_DIR"
        echo "--json $BENCH_JSON_DIR/$1.json"
    fi
}

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
status=0
case " $PHASES " in *" throughput "*)
log "phase 1: throughput ($MESSAGES messages, --rate max, $IN_FLIGHT in flight, $ACCOUNTS accounts; $BROKER, $REPLICAS replica(s))"
# shellcheck disable=SC2046
"$loadgen" --label throughput --accounts "$ACCOUNTS" --messages "$MESSAGES" --rate max \
    --in-flight "$IN_FLIGHT" --baseline-seconds "$BASELINE" "${system_args[@]}" $(json_args throughput) \
    > "$out/throughput.md" || status=$?
esac

case " $PHASES " in *" latency "*)
log "phase 2: latency ($RATE messages/s for $SECONDS_AT_RATE s, $ACCOUNTS accounts; $BROKER, $REPLICAS replica(s))"
# shellcheck disable=SC2046
"$loadgen" --label latency --accounts "$ACCOUNTS" --rate "$RATE" --seconds "$SECONDS_AT_RATE" \
    --in-flight "$IN_FLIGHT" --baseline-seconds "$BASELINE" --probe-messages "$PROBE" \
    "${system_args[@]}" $(json_args latency) \
    > "$out/latency.md" || status=$?
esac

if [ -s "$out/throughput.md" ]; then
    echo
    echo "## Throughput (--rate max, $MESSAGES messages; $BROKER, $REPLICAS replica(s))"
    echo
    cat "$out/throughput.md"
fi
if [ -s "$out/latency.md" ]; then
    echo
    echo "## Latency (--rate $RATE for $SECONDS_AT_RATE s; $BROKER, $REPLICAS replica(s))"
    echo
    cat "$out/latency.md"
fi
exit "$status"
