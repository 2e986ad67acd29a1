#!/usr/bin/env bash
# The five service images, built here from the project's own deploy/Dockerfile, on a
# machine that cannot pull from a container registry: the base images are local
# stand-ins made from Debian's packages, named through the Dockerfile's build
# arguments. Then each image is shown to run as the manifests say.
#
#   scripts/images.sh              # stand-ins, build, check
#   scripts/images.sh stand-ins    # the two base images (once; kept in podman's storage)
#   scripts/images.sh build [SERVICE...]   # meter-readings/<service>:$IMAGE_TAG
#   scripts/images.sh check [SERVICE...]   # uid 10001, read-only root, no shell, CA bundle, probes
#
# Environment (defaults):
#   IMAGE_TAG=dev                  the dev overlay's tag
#   IMAGES_DIR=${TMPDIR:-/tmp}/meter-images   the builder's root file system is made here
#   DATABASE_URL=postgres://postgres@127.0.0.1:5432/meter_images_check
#   AMQP_URL=amqp://guest:guest@127.0.0.1:5672/meter-images-check   (check: a vhost of its own)
#
# The stand-ins (podman import of a root file system):
#   localhost/meter-builder:bookworm   for rust:1.95-bookworm: debootstrap's minbase
#       Debian 12 with gcc, libc6-dev, make, pkg-config, ca-certificates, and this
#       machine's Rust toolchain copied into /usr/local (Debian's rustc is too old for
#       the workspace, and no toolchain can be downloaded here), plus the machine's own
#       CA certificates from /usr/local/share/ca-certificates, if any (a network that
#       inspects TLS; cargo fetches through it). The Dockerfile's own
#       builder stage then runs unchanged: cargo build --release --locked in the
#       container, with its cache mounts. Building outside and copying the binaries in
#       would have skipped the very stage a retailer's build runs.
#   localhost/meter-runtime:cc-debian12   for gcr.io/distroless/cc-debian12:nonroot: the
#       files of Debian's base-files, netbase, tzdata, ca-certificates, libc6,
#       libgcc-s1, libgomp1, libstdc++6 and libssl3 (dpkg-deb -x, no maintainer scripts,
#       no /bin, /sbin, /usr/bin, /usr/sbin: no shell, no package manager), the CA
#       bundle /etc/ssl/certs/ca-certificates.crt made from the package's certificates,
#       passwd/group with root, nobody and nonroot (65532), and distroless's
#       configuration: USER 65532, SSL_CERT_FILE set to the bundle.
#
# Containers run with podman (Debian's podman and runc; CONTAINERS_CONF names
# scripts/podman/containers.conf) on the host's network: loopback only, no addresses of
# podman's bridge. The build's RUN steps use the host's network too (cargo fetches
# crates from the registry).
set -euo pipefail
cd "$(dirname "$0")/.."
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/scripts/podman/containers.conf}

SERVICES=(ingest validator notifier billing-export console)
TAG=${IMAGE_TAG:-dev}
DIR=${IMAGES_DIR:-${TMPDIR:-/tmp}/meter-images}
BUILDER=localhost/meter-builder:bookworm
RUNTIME=localhost/meter-runtime:cc-debian12
RUNTIME_DEBS=(base-files netbase tzdata ca-certificates libc6 libgcc-s1 libgomp1 libstdc++6 libssl3)

log() { printf '==> %s images: %s\n' "$(date +%T)" "$*" >&2; }
die() { printf 'images: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "needs root (rootful podman, debootstrap)"

ensure_tools() {
    local missing=() c
    for c in podman runc debootstrap; do command -v "$c" >/dev/null || missing+=("$c"); done
    ((${#missing[@]} == 0)) && return 0
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

have_image() { podman image exists "$1"; }

make_builder() {
    local root=$DIR/builder-root
    if [[ ! -e $root/.complete ]]; then
        log "builder: debootstrap --variant=minbase bookworm with gcc, make, pkg-config (a few minutes)"
        rm -rf "$root"
        mkdir -p "$DIR"
        debootstrap --variant=minbase --include=ca-certificates,gcc,libc6-dev,make,pkg-config \
            bookworm "$root" >"$DIR/builder-debootstrap.log" 2>&1 ||
            die "debootstrap failed: $DIR/builder-debootstrap.log"
        touch "$root/.complete"
    fi
    local sysroot version
    sysroot=$(rustc --print sysroot)
    version=$("$sysroot/bin/rustc" --version)
    [[ $version =~ ^rustc\ 1\.(9[4-9]|[1-9][0-9][0-9]) ]] || die "Rust >= 1.94 needed, found $version"
    log "builder: bringing in $version"
    # The standalone installer's layout: bin/, lib/ under /usr/local.
    tar -C "$sysroot" -cf - bin lib libexec | tar -C "$root/usr/local" -xf -
    # The machine's own CA certificates (a network that inspects TLS on its way out
    # has its own): cargo in the builder reaches the registry through the same network.
    if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
        chroot "$root" update-ca-certificates >/dev/null 2>&1
    fi
    rm -f "$root/var/cache/apt/archives"/*.deb
    mkdir -p "$root/usr/local/cargo"
    tar -C "$root" --exclude=./.complete -cf - . |
        podman import --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'ENV CARGO_HOME=/usr/local/cargo' --change 'WORKDIR /' - "$BUILDER" >/dev/null
    log "builder: $BUILDER"
}

make_runtime() {
    local work=$DIR/runtime
    rm -rf "$work"
    mkdir -p "$work/debs" "$work/root"
    log "runtime: apt-get download ${RUNTIME_DEBS[*]}"
    (cd "$work/debs" && apt-get download -qq "${RUNTIME_DEBS[@]}" 2>/dev/null) ||
        (apt-get update -qq && cd "$work/debs" && apt-get download -qq "${RUNTIME_DEBS[@]}")
    local deb
    for deb in "$work"/debs/*.deb; do dpkg-deb -x "$deb" "$work/root"; done
    local r=$work/root
    # Libraries and data only: the packages' programs (ldd is a bash script, iconv,
    # update-ca-certificates, ...) are not part of distroless either.
    rm -rf "$r/bin" "$r/sbin" "$r/usr/bin" "$r/usr/sbin" "$r/usr/share/doc" "$r/usr/share/man" \
        "$r/usr/share/lintian" "$r/usr/share/locale" "$r/usr/libexec"
    mkdir -p "$r/etc/ssl/certs" "$r/tmp" "$r/home/nonroot" "$r/root"
    chmod 1777 "$r/tmp"
    # The bundle update-ca-certificates would make: every certificate the package ships.
    find "$r/usr/share/ca-certificates" -name '*.crt' -print0 | sort -z | xargs -0 cat >"$r/etc/ssl/certs/ca-certificates.crt"
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$r/etc/passwd"
    printf 'root:x:0:\nnobody:x:65534:\ntty:x:5:\nstaff:x:50:\nnonroot:x:65532:\n' >"$r/etc/group"
    chown 65532:65532 "$r/home/nonroot"
    [[ -s $r/etc/ssl/certs/ca-certificates.crt ]] || die "runtime: no CA certificates"
    ! find "$r" \( -name sh -o -name bash -o -name dash -o -name busybox \) | grep -q . || die "runtime: a shell is in the stand-in"
    tar -C "$r" --numeric-owner -cf - . |
        podman import --change 'USER 65532:65532' --change 'WORKDIR /home/nonroot' \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' - "$RUNTIME" >/dev/null
    log "runtime: $RUNTIME ($(grep -c 'BEGIN CERTIFICATE' "$r/etc/ssl/certs/ca-certificates.crt") CA certificates)"
}

cmd_stand_ins() {
    ensure_tools
    have_image "$BUILDER" && [[ ${REBUILD_STAND_INS:-0} != 1 ]] || make_builder
    have_image "$RUNTIME" && [[ ${REBUILD_STAND_INS:-0} != 1 ]] || make_runtime
}

cmd_build() {
    local services=("$@") s start
    ((${#services[@]})) || services=("${SERVICES[@]}")
    have_image "$BUILDER" && have_image "$RUNTIME" || cmd_stand_ins
    for s in "${services[@]}"; do
        start=$SECONDS
        log "building meter-readings/$s:$TAG from deploy/Dockerfile"
        podman build --network host -f deploy/Dockerfile --ignorefile deploy/Dockerfile.dockerignore \
            --build-arg SERVICE="$s" --build-arg BUILDER_IMAGE="$BUILDER" --build-arg RUNTIME_IMAGE="$RUNTIME" \
            -t "meter-readings/$s:$TAG" . >"$DIR/build-$s.log" 2>&1 ||
            { tail -n 40 "$DIR/build-$s.log" >&2; die "build of $s failed: $DIR/build-$s.log"; }
        log "built meter-readings/$s:$TAG in $((SECONDS - start)) s ($(podman image inspect -f '{{.Size}}' "meter-readings/$s:$TAG" | numfmt --to=iec) )"
    done
}

. scripts/images-check.sh

case ${1:-all} in
stand-ins) cmd_stand_ins ;;
build) shift; mkdir -p "$DIR"; cmd_build "$@" ;;
check) shift; cmd_check "$@" ;;
all) mkdir -p "$DIR"; cmd_stand_ins; cmd_build; cmd_check ;;
*) sed -n '2,/^set -euo/p' "$0" | grep '^#' >&2; exit 2 ;;
esac
