# scripts/images.sh check (sourced): each image run as the manifests run it — the
# host's network, a read-only root with /tmp a tmpfs, every capability dropped, no
# privilege escalation, the image's own user — and shown to
#   - start as uid/gid 10001 (the image's USER; /proc/PID/status of its process),
#   - have a read-only root (the process's own mount table) and no shell (no sh, bash,
#     dash or busybox in its file system; `--entrypoint /bin/sh` cannot start),
#   - find its CA bundle: the image's SSL_CERT_FILE is loaded at start (a bundle that
#     cannot be read or holds no certificate stops the service); for ingest also the
#     system store with SSL_CERT_FILE unset, and the refusal of a missing bundle,
#   - answer its probes: GET /healthz and /readyz 200 (broker and database reached).
# PostgreSQL and RabbitMQ are the machine's: a database and a vhost of the check's own.

check_port() { # service -> a port of its own for the check
    case $1 in ingest) echo 18180 ;; validator) echo 18181 ;; notifier) echo 18182 ;;
    billing-export) echo 18183 ;; console) echo 18184 ;; esac
}

check_env() { # service -> podman -e arguments
    local db=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/meter_images_check}
    local amqp=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/meter-images-check}
    printf -- '-e\0%s\0' "HTTP_ADDR=127.0.0.1:$(check_port "$1")" "AMQP_URL=$amqp" "DATABASE_URL=$db" \
        "INGEST_TOKEN=images-check-token-0123" "EMAIL_DIR=/tmp/mail" "LOG_FORMAT=json" "OTEL_SDK_DISABLED=true"
}

run_hardened() { # name image [podman run args...] -- [service args...]
    local name=$1 image=$2
    shift 2
    local extra=()
    while [[ $1 != -- ]]; do extra+=("$1"); shift; done
    shift
    podman run -d --name "$name" --network host --read-only --read-only-tmpfs=false \
        --tmpfs /tmp:rw,size=64m,mode=1777 --cap-drop ALL --security-opt no-new-privileges \
        "${extra[@]}" "$image" "$@" >/dev/null
}

wait_http() { # port path seconds -> 0 once it answers 200
    local deadline=$((SECONDS + $3))
    until [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1$2") == 200 ]]; do
        ((SECONDS < deadline)) || return 1
        sleep 0.5
    done
}

check_one() { # service -> 0 if every property holds; prints one line per property
    local s=$1 image="meter-readings/$1:$TAG" name="meter-images-check-$1" port pid env=()
    port=$(check_port "$s")
    mapfile -d '' env < <(check_env "$s")
    podman rm -f "$name" >/dev/null 2>&1 || true

    local user
    user=$(podman image inspect -f '{{.Config.User}}' "$image")
    [[ $user == 10001:10001 ]] || { log "$s: image USER is '$user', not 10001:10001"; return 1; }

    local shells
    podman create --name "$name-fs" "$image" >/dev/null
    shells=$(podman export "$name-fs" | tar -t | grep -E '(^|/)(sh|bash|dash|ash|busybox)$' || true)
    podman rm "$name-fs" >/dev/null
    [[ -z $shells ]] || { log "$s: a shell in the image: $shells"; return 1; }
    if podman run --rm --network none --entrypoint /bin/sh "$image" -c true >/dev/null 2>&1; then
        log "$s: /bin/sh ran"; return 1
    fi
    log "$s: no shell (none in the file system; --entrypoint /bin/sh cannot start)"

    run_hardened "$name" "$image" "${env[@]}" -- serve
    if ! wait_http "$port" /healthz 60 || ! wait_http "$port" /readyz 60; then
        podman logs "$name" 2>&1 | tail -n 20 >&2
        podman rm -f "$name" >/dev/null
        log "$s: probes did not answer 200"
        return 1
    fi
    log "$s: GET /healthz 200, GET /readyz 200 (broker and database reached) on 127.0.0.1:$port"
    pid=$(podman inspect -f '{{.State.Pid}}' "$name")
    local uid gid root_opts
    uid=$(awk '/^Uid:/ {print $2 "/" $3 "/" $4 "/" $5}' "/proc/$pid/status")
    gid=$(awk '/^Gid:/ {print $2 "/" $3 "/" $4 "/" $5}' "/proc/$pid/status")
    root_opts=$(awk '$5 == "/" {print $6}' "/proc/$pid/mountinfo" | tail -n 1)
    local ok=1
    [[ $uid == 10001/10001/10001/10001 && $gid == 10001/10001/10001/10001 ]] || ok=""
    log "$s: process $(tr '\0' ' ' <"/proc/$pid/cmdline")runs as uid $uid, gid $gid"
    [[ $root_opts == ro,* || $root_opts == ro ]] || ok=""
    log "$s: its root file system is mounted $root_opts"
    local logs
    logs=$(podman logs "$name" 2>&1)
    if grep -q 'trusted certificates could not be loaded' <<<"$logs"; then ok=""; log "$s: CA bundle NOT found"; fi
    log "$s: SSL_CERT_FILE=$(podman inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$name" | sed -n 's/^SSL_CERT_FILE=//p') loaded at start"
    podman stop -t 40 "$name" >/dev/null
    local code
    code=$(podman inspect -f '{{.State.ExitCode}}' "$name")
    podman rm "$name" >/dev/null
    log "$s: SIGTERM -> exit code $code"
    [[ $code == 0 ]] || ok=""
    [[ -n $ok ]]
}

check_trust_sources() { # ingest: the system store without SSL_CERT_FILE; a missing bundle refused
    local image="meter-readings/ingest:$TAG" name=meter-images-check-trust env=() port
    port=$(check_port ingest)
    mapfile -d '' env < <(check_env ingest)
    podman rm -f "$name" >/dev/null 2>&1 || true
    run_hardened "$name" "$image" "${env[@]}" --unsetenv SSL_CERT_FILE -- serve
    wait_http "$port" /healthz 60 || { podman logs "$name" >&2; podman rm -f "$name" >/dev/null; return 1; }
    local logs
    logs=$(podman logs "$name" 2>&1)
    podman rm -f "$name" >/dev/null
    if grep -q 'trusted certificates could not be loaded' <<<"$logs"; then
        log "ingest: without SSL_CERT_FILE the system store (/etc/ssl/certs) was NOT found"; return 1
    fi
    log "ingest: without SSL_CERT_FILE the system store (/etc/ssl/certs) is found (no warning)"
    run_hardened "$name" "$image" "${env[@]}" -e SSL_CERT_FILE=/nonexistent/ca.pem -- serve
    podman wait "$name" >/dev/null
    local code
    code=$(podman inspect -f '{{.State.ExitCode}}' "$name")
    logs=$(podman logs "$name" 2>&1)
    podman rm -f "$name" >/dev/null
    [[ $code != 0 ]] && grep -q 'cannot load the trusted certificates' <<<"$logs" ||
        { log "ingest: a missing bundle was not refused (exit $code)"; return 1; }
    log "ingest: SSL_CERT_FILE=/nonexistent/ca.pem refused at start (exit $code: cannot load the trusted certificates)"
}

cmd_check() {
    local services=("$@") s failed=()
    ((${#services[@]})) || services=("${SERVICES[@]}")
    local db=meter_images_check vhost=meter-images-check
    psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
    curl -fsS -u guest:guest -X PUT "http://127.0.0.1:15672/api/vhosts/$vhost" >/dev/null
    curl -fsS -u guest:guest -X PUT -H 'content-type: application/json' \
        -d '{"configure":".*","write":".*","read":".*"}' "http://127.0.0.1:15672/api/permissions/$vhost/guest" >/dev/null
    for s in "${services[@]}"; do check_one "$s" || failed+=("$s"); done
    [[ " ${services[*]} " == *" ingest "* ]] && { check_trust_sources || failed+=(ingest-trust); }
    for s in "${SERVICES[@]}"; do podman rm -f "meter-images-check-$s" >/dev/null 2>&1 || true; done
    curl -fsS -u guest:guest -X DELETE "http://127.0.0.1:15672/api/vhosts/$vhost" >/dev/null || true
    psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"
    ((${#failed[@]} == 0)) || die "check failed: ${failed[*]}"
    log "check passed: ${services[*]}"
}
