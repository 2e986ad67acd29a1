#!/usr/bin/env bash
# The README's two commands on a fresh Debian 12 machine: a new root file system made
# with debootstrap, given a loopback of its own (network, PID, mount, UTS and IPC
# namespaces), with nothing brought in but the Rust toolchain and a clone of this
# repository (and the network's settings: a proxy, and the machine's own CA
# certificates if it has any). Inside, as a newcomer would:
#
#   scripts/run-local.sh --check && scripts/test.sh
#
#   scripts/fresh-machine.sh                  # both commands
#   scripts/fresh-machine.sh run-local        # only the first
#   scripts/fresh-machine.sh shell            # a shell in the fresh machine (to look around)
#   scripts/fresh-machine.sh test             # only scripts/test.sh, on the root file system
#                                             # a run kept (FRESH_KEEP=1), its clone pulled to
#                                             # this commit first: the same machine, a step later
#
# Environment (defaults):
#   FRESH_DIR=${TMPDIR:-/tmp}/meter-fresh     where the pristine root file system (base/) is
#                                             kept between runs and each run's copy (run/) lives
#   FRESH_KEEP=0        1: keep run/ afterwards (its target/, logs, installed packages)
#   FRESH_PROXY_PORT=18888                    the forward proxy on the machine's loopback
#
# The machine's registries are reached without giving the namespace any address but
# its own loopback: Debian's tinyproxy listens on the machine's 127.0.0.1; socat
# bridges it to a Unix socket, and inside, another socat serves that socket on the
# namespace's 127.0.0.1:3128, where apt, pip and cargo are pointed (configuration
# files only, no *_proxy variables: the tests' own HTTP clients stay on loopback).
# Whatever runs inside (PostgreSQL, RabbitMQ, the 3-node cluster, the TLS backends,
# Kannel, Jasmin, Chromium) binds in that namespace only, and ends with it: the
# namespace's first process exits last, and the kernel stops everything left in it.
#
# Needs root (namespaces, chroot, mounts); installs debootstrap, tinyproxy-bin and
# socat on this machine if they are missing. Nothing else of this machine is used
# inside: not its PostgreSQL, RabbitMQ, Python packages, kubectl or Chromium.
set -euo pipefail
SELF=$(readlink -f "$0")
cd "$(dirname "$SELF")/.."
REPO=$PWD

log() { printf '==> %s fresh-machine: %s\n' "$(date +%T)" "$*" >&2; }
die() { printf 'fresh-machine: %s\n' "$*" >&2; exit 1; }

# Inside the namespaces (this script runs itself there): loopback up, the proxy's
# inner end, the mounts, then chroot. Everything after this point dies with us.
if [[ ${1:-} == --inside ]]; then
    root=$2 sock=$3 what=$4
    ip link set lo up
    socat TCP-LISTEN:3128,bind=127.0.0.1,reuseaddr,fork "UNIX-CONNECT:$sock" &
    hostname fresh-meter
    mount --make-rprivate /
    mount -t proc proc "$root/proc"
    mount --rbind /sys "$root/sys"
    mount -t tmpfs -o mode=755,size=64m dev "$root/dev"
    for d in null zero full random urandom tty; do
        touch "$root/dev/$d"
        mount --bind "/dev/$d" "$root/dev/$d"
    done
    mkdir -p "$root/dev/pts" "$root/dev/shm"
    mount -t devpts -o newinstance,ptmxmode=0666 devpts "$root/dev/pts"
    ln -s pts/ptmx "$root/dev/ptmx"
    ln -s /proc/self/fd "$root/dev/fd"
    mount -t tmpfs -o mode=1777 shm "$root/dev/shm"
    clean_env=(env -i HOME=/root TERM=dumb LANG=C.UTF-8
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)
    cd_repo='cd /root/meter-readings'
    case $what in
    shell) exec chroot "$root" "${clean_env[@]}" bash -c "$cd_repo && exec bash -i" ;;
    test)
        chroot "$root" "${clean_env[@]}" bash -c "$cd_repo && s=\$SECONDS && scripts/test.sh && \
            echo \"fresh-machine: test.sh passed in \$((SECONDS - s)) s\""
        ;;
    *)
        # Each command timed on its own; the log lines carry the durations.
        chroot "$root" "${clean_env[@]}" bash -c "$cd_repo && \
            s=\$SECONDS && scripts/run-local.sh --check && \
            echo \"fresh-machine: run-local.sh --check passed in \$((SECONDS - s)) s\" && \
            { [ '$what' = run-local ] || { s=\$SECONDS && scripts/test.sh && \
              echo \"fresh-machine: test.sh passed in \$((SECONDS - s)) s\"; }; }"
        ;;
    esac
    exit $?
fi

WHAT=${1:-all}
case $WHAT in all | run-local | shell | test) ;; *) sed -n '2,/^set -euo/p' "$0" | grep '^#' >&2; exit 2 ;; esac
[[ $(id -u) -eq 0 ]] || die "needs root (namespaces, chroot, mounts)"

DIR=${FRESH_DIR:-${TMPDIR:-/tmp}/meter-fresh}
BASE=$DIR/base
RUN=$DIR/run
PROXY_PORT=${FRESH_PROXY_PORT:-18888}
mkdir -p "$DIR"

missing=()
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v tinyproxy >/dev/null || missing+=(tinyproxy-bin)
command -v socat >/dev/null || missing+=(socat)
if ((${#missing[@]})); then
    log "installing ${missing[*]} on this machine"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

started=$SECONDS
if [[ $WHAT == test ]]; then
    [[ -d $RUN/root/meter-readings ]] || die "no kept run in $RUN (FRESH_KEEP=1 scripts/fresh-machine.sh run-local)"
    git -C "$RUN/root/meter-readings" fetch -q "$REPO" HEAD
    git -C "$RUN/root/meter-readings" reset -q --hard FETCH_HEAD
    # Its daemons ended with the last run's namespace: as after a reboot, no pid files.
    rm -f "$RUN"/var/lib/postgresql/*/main/postmaster.pid
    log "the kept machine, its clone at $(git -C "$RUN/root/meter-readings" log -1 --format='%h %s' | cut -c1-80)"
fi
# 1. The pristine root file system, made once and never entered: each run copies it.
if [[ $WHAT == test ]]; then
    :
elif [[ ! -e $BASE/.complete ]]; then
    log "debootstrap --variant=minbase bookworm (a few minutes)"
    rm -rf "$BASE"
    debootstrap --variant=minbase bookworm "$BASE" >"$DIR/debootstrap.log" 2>&1 ||
        die "debootstrap failed: $DIR/debootstrap.log"
    touch "$BASE/.complete"
fi

make_run() { # a fresh copy of the base, set up as a new machine on this network
log "a fresh copy of the root file system"
rm -rf "$RUN"
cp -a "$BASE" "$RUN"
rm -f "$RUN/.complete"

# 2. What a newly installed Debian 12 on this network has: the machine's apt sources
#    (its mirror, bookworm-updates and -security, as the installer writes them), a
#    host name that resolves, and the proxy settings (files, read by apt, pip, cargo).
rm -f "$RUN/etc/apt/sources.list"
cp /etc/apt/sources.list.d/*.sources "$RUN/etc/apt/sources.list.d/" 2>/dev/null || true
[[ -f /etc/apt/sources.list ]] && grep -q '^deb ' /etc/apt/sources.list && cp /etc/apt/sources.list "$RUN/etc/apt/"
echo fresh-meter >"$RUN/etc/hostname"
printf '127.0.0.1\tlocalhost fresh-meter\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$RUN/etc/hosts"
proxy=http://127.0.0.1:3128
printf 'Acquire::http::Proxy "%s";\nAcquire::https::Proxy "%s";\n' $proxy $proxy >"$RUN/etc/apt/apt.conf.d/90fresh-machine-proxy"
printf '[global]\nproxy = %s\n' $proxy >"$RUN/etc/pip.conf"
# The network's own CA certificates, if the machine has any (/usr/local/share/ca-certificates:
# a network that inspects TLS on its way out). Debian's ca-certificates, when apt installs
# it, adds them to the system's bundle, which curl, cargo and pip read.
if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    mkdir -p "$RUN/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$RUN/usr/local/share/ca-certificates/"
fi
mkdir -p "$RUN/root/.cargo"
printf '[http]\nproxy = "%s"\n' $proxy >"$RUN/root/.cargo/config.toml"

# 3. The Rust toolchain: the only thing brought in. No toolchain can be downloaded on
#    this network (rustup's installer would fail), so the machine's own is copied,
#    without its documentation, and put on PATH through /usr/local/bin.
sysroot=$(rustc --print sysroot)
"$sysroot/bin/rustc" --version | grep -qE '^rustc 1\.(9[4-9]|[1-9][0-9]{2})' || die "Rust >= 1.94 needed, found $("$sysroot/bin/rustc" --version)"
log "bringing in $("$sysroot/bin/rustc" --version)"
mkdir -p "$RUN/usr/local/lib/rust"
tar -C "$sysroot" --exclude=./share/doc -cf - . | tar -C "$RUN/usr/local/lib/rust" -xf -
for b in "$RUN"/usr/local/lib/rust/bin/*; do ln -s "../lib/rust/bin/${b##*/}" "$RUN/usr/local/bin/${b##*/}"; done

# 4. The repository as CI gets it: a clone of what is committed.
git clone -q --no-hardlinks "$REPO" "$RUN/root/meter-readings"
log "repository at $(git -C "$RUN/root/meter-readings" log -1 --format='%h %s' | cut -c1-80)"
}
[[ $WHAT == test ]] || make_run

# 5. The proxy: tinyproxy on the machine's loopback, and the outer end of the bridge.
tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
    if [[ ${FRESH_KEEP:-0} != 1 ]]; then
        # The mounts lived in the namespace, which is gone: nothing is mounted under RUN.
        rm -rf "$RUN"
    fi
}
trap cleanup EXIT
cat >"$tmp/tinyproxy.conf" <<CONF
Port $PROXY_PORT
Listen 127.0.0.1
Allow 127.0.0.1
Timeout 600
MaxClients 64
User nobody
Group nogroup
LogLevel Warning
ConnectPort 443
CONF
tinyproxy -d -c "$tmp/tinyproxy.conf" >"$DIR/tinyproxy.log" 2>&1 &
pids+=($!)
sock=$RUN/run/fresh-machine-proxy.sock
mkdir -p "$RUN/run"
socat "UNIX-LISTEN:$sock,fork,mode=600" "TCP:127.0.0.1:$PROXY_PORT" &
pids+=($!)
for _ in $(seq 1 50); do [[ -S $sock ]] && break; sleep 0.1; done
[[ -S $sock ]] || die "the proxy's socket did not appear"

# 6. Into the namespaces.
log "entering the fresh machine ($WHAT); its own loopback, PostgreSQL, RabbitMQ, ..."
set +e
unshare --net --pid --mount --uts --ipc --fork "$SELF" --inside "$RUN" "$sock" "$WHAT"
rc=$?
set -e
log "done in $((SECONDS - started)) s, exit code $rc"
exit $rc
