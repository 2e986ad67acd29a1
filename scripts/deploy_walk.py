#!/usr/bin/env python3
"""Helpers of scripts/deploy-walk.sh: the rendered dev overlay cut into what
`podman kube play` runs, and a stand-in for the few `kubectl` calls the documented
scripts make against a cluster.

  deploy_walk.py play RENDERED.yaml OUTDIR
      OUTDIR/configmaps.list              every ConfigMap, a file each (for --configmap)
      OUTDIR/migrate.yaml                 the Job meter-migrate's pod template, as a Pod
      OUTDIR/<deployment>.yaml            each service's Deployment (+ its PVCs)
      OUTDIR/policies.tsv                 the RabbitMQ Policy objects: name, pattern, apply-to, priority, definition
      OUTDIR/transformations.txt          what was changed, object by object
  deploy_walk.py kubectl ARGS...          (installed as `kubectl` on the scripts' PATH)
  deploy_walk.py paper BASE LOGIN ACCOUNT T1 [T2]   (password on stdin) a staff member logs
      in to the console at BASE and types one paper slip; prints its id and decision

Transformations, and nothing else: `hostNetwork: true` on every pod played (loopback
only, no bridge addresses), and so no containerPort declarations (podman 4.3 refuses
them on the host's network; the probes' named port becomes its number); the Job becomes a Pod (podman plays no Jobs: same
template, restartPolicy Never); the infrastructure the operators would make
(RabbitmqCluster, CNPG Cluster, Policy) is not played — servers in the walk's
namespace stand in, with the operators' Secrets, and the Policies are applied with
rabbitmqctl; Services resolve through the namespace's /etc/hosts (every name to its
loopback); objects podman has no use for (Namespace, Service, NetworkPolicy,
PodDisruptionBudget) are not played; Kannel (dev's fake SMSC) is not played.
Environment, ConfigMaps, Secrets, securityContext, volumes, probes, images and
commands are the rendered ones.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

SERVICES = ["ingest", "validator", "notifier", "billing-export", "console"]
NOT_PLAYED = {"Namespace", "Service", "NetworkPolicy", "PodDisruptionBudget",
              "HorizontalPodAutoscaler", "PrometheusRule"}
INFRA = {"RabbitmqCluster", "Cluster", "Policy"}


def play(rendered: Path, out: Path) -> None:
    objs = [d for d in yaml.safe_load_all(rendered.read_text()) if d]
    out.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    by_kind: dict[str, list[dict]] = {}
    for o in objs:
        by_kind.setdefault(o["kind"], []).append(o)

    # podman reads one ConfigMap per --configmap file.
    (out / "configmaps").mkdir(exist_ok=True)
    files = []
    for cm in by_kind.get("ConfigMap", []):
        path = out / "configmaps" / f"{cm['metadata']['name']}.yaml"
        yaml.safe_dump(cm, path.open("w"))
        files.append(str(path))
    (out / "configmaps.list").write_text(",".join(files))
    notes.append(f"ConfigMap: {len(files)} played as they are (--configmap)")

    pvcs = {p["metadata"]["name"]: p for p in by_kind.get("PersistentVolumeClaim", [])}
    for d in by_kind.get("Deployment", []):
        name = d["metadata"]["name"]
        if name not in SERVICES:
            notes.append(f"Deployment/{name}: not played (Kannel, dev's fake SMSC: the SMS goes to "
                         "ingest's POST /v1/sms as an aggregator's would)")
            continue
        d["spec"]["template"]["spec"]["hostNetwork"] = True
        unport(d["spec"]["template"]["spec"])
        claims = [v["persistentVolumeClaim"]["claimName"]
                  for v in d["spec"]["template"]["spec"].get("volumes") or []
                  if "persistentVolumeClaim" in v]
        docs = [pvcs[c] for c in claims] + [d]
        yaml.safe_dump_all(docs, (out / f"{name}.yaml").open("w"))
        notes.append(f"Deployment/{name}: hostNetwork: true; its containerPorts dropped and the probes' "
                     "named port replaced by its number (podman 4.3 refuses port declarations on the "
                     "host's network; the service binds HTTP_ADDR itself)"
                     + (f"; with PVC {', '.join(claims)}" if claims else ""))

    for job in by_kind.get("Job", []):
        template = job["spec"]["template"]
        template["spec"]["hostNetwork"] = True
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": job["metadata"]["name"],
                            "labels": template.get("metadata", {}).get("labels", {})},
               "spec": template["spec"]}
        yaml.safe_dump(pod, (out / "migrate.yaml").open("w"))
        notes.append(f"Job/{job['metadata']['name']}: its pod template played as a Pod "
                     "(restartPolicy Never, init containers in order), hostNetwork: true")

    with (out / "policies.tsv").open("w") as f:
        for p in by_kind.get("Policy", []):
            s = p["spec"]
            f.write("\t".join([s["name"], s["pattern"], s.get("applyTo", "all"),
                               str(s.get("priority", 0)), json.dumps(s["definition"])]) + "\n")
    for kind in sorted(INFRA):
        for o in by_kind.get(kind, []):
            instead = {"RabbitmqCluster": "the walk's own RabbitMQ node stands in",
                       "Cluster": "the walk's own PostgreSQL stands in",
                       "Policy": "applied with rabbitmqctl set_policy to the walk's node"}[kind]
            notes.append(f"{kind}/{o['metadata']['name']}: not played; {instead}")
    for kind in sorted(NOT_PLAYED):
        n = len(by_kind.get(kind, []))
        if n:
            notes.append(f"{kind}: {n} not played (podman has no use for them)"
                         + ("; their names resolve to the loopback" if kind == "Service" else ""))
    (out / "transformations.txt").write_text("\n".join(notes) + "\n")


def unport(pod: dict) -> None:
    """Drops each container's `ports` and writes the probes' named ports as numbers."""
    for c in pod.get("containers") or []:
        numbers = {p.get("name"): p["containerPort"] for p in c.pop("ports", None) or []}
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            get = (c.get(probe) or {}).get("httpGet")
            if get and isinstance(get.get("port"), str):
                get["port"] = numbers[get["port"]]


def kubectl(args: list[str]) -> int:
    """What create-dev-secrets.sh asks of kubectl, against a directory of Secrets
    ($WALK_SECRETS/<name>.json, Secret objects): get a Secret or one of its keys,
    `create secret ... --dry-run=client -o yaml` (the real kubectl, offline) and
    `apply -f -` (stored there)."""
    store = Path(os.environ["WALK_SECRETS"])
    rest = list(args)
    if rest[:1] == ["-n"]:
        rest = rest[2:]
    if rest[:2] == ["get", "secret"]:
        path = store / f"{rest[2]}.json"
        if not path.exists():
            print(f'Error from server (NotFound): secrets "{rest[2]}" not found', file=sys.stderr)
            return 1
        for a in rest[3:]:
            if a.startswith("jsonpath={.data.") and a.endswith("}"):
                key = a[len("jsonpath={.data."):-1]
                value = json.loads(path.read_text()).get("data", {}).get(key)
                if value is None:
                    return 1
                sys.stdout.write(value)
        return 0
    if rest[:1] == ["apply"] and rest[1:] == ["-f", "-"]:
        for doc in yaml.safe_load_all(sys.stdin.read()):
            if doc and doc.get("kind") == "Secret":
                (store / f"{doc['metadata']['name']}.json").write_text(json.dumps(doc))
                print(f"secret/{doc['metadata']['name']} configured")
        return 0
    if rest[:1] == ["create"]:
        return subprocess.run([os.environ["WALK_REAL_KUBECTL"], *args]).returncode
    print(f"deploy_walk.py kubectl: not supported here: {' '.join(args)}", file=sys.stderr)
    return 2


def paper(base: str, login: str, account: str, values: list[str], password: str) -> int:
    """Logs in as a person would (the login form, its CSRF token and cookie), opens
    the paper-slip form, types one slip, and waits for its decision in the console."""
    import re
    import time
    import urllib.error
    import urllib.parse
    import urllib.request

    jar: dict[str, str] = {}

    class Keep(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):  # see every Set-Cookie: follow by hand
            return None

    opener = urllib.request.build_opener(Keep)

    def call(path: str, form: dict | None = None) -> tuple[int, str]:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        req = urllib.request.Request(base + path, data=data)
        if jar:
            req.add_header("Cookie", "; ".join(f"{k}={v}" for k, v in jar.items()))
        try:
            resp = opener.open(req, timeout=30)
        except urllib.error.HTTPError as e:
            resp = e
        for header in resp.headers.get_all("Set-Cookie") or []:
            name, _, rest = header.partition("=")
            value = rest.split(";", 1)[0]
            if value:
                jar[name] = value
            else:
                jar.pop(name, None)
        return resp.status, resp.read().decode()

    def hidden(page: str, name: str) -> str:
        m = re.search(rf'name="{name}" value="([^"]*)"', page)
        if not m:
            raise SystemExit(f"no hidden field {name} in the page")
        return m.group(1)

    status, page = call("/login")
    assert status == 200, f"GET /login: {status}"
    status, page = call("/login", {"csrf": hidden(page, "csrf"), "username": login, "password": password})
    assert status in (302, 303), f"POST /login: {status}: {page[:300]}"
    status, page = call("/paper")
    assert status == 200, f"GET /paper: {status}"
    slip = hidden(page, "slip")
    form = {"csrf": hidden(page, "csrf"), "slip": slip, "account": account,
            "t1": values[0], "t2": values[1] if len(values) > 1 else "", "t3": ""}
    status, page = call("/paper", form)
    assert status in (302, 303), f"POST /paper: {status}: {page[:300]}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, body = call(f"/api/v1/messages/{slip}")
        if status == 200:
            found = json.loads(body)
            text = json.dumps(found, ensure_ascii=False)
            m = re.search(r'"outcome": "([a-z_]+)"', text)
            if m:
                reason = re.search(r'"reason": "([a-z_]+)"', text)
                print(f"{slip} {m.group(1)}{' ' + reason.group(1) if reason else ''}")
                return 0
        time.sleep(0.5)
    print(f"{slip}: no decision in the console within 60 s (last: {status})", file=sys.stderr)
    return 1


def secret(name: str, data: dict[str, str]) -> str:
    """A Secret object as an operator would make it (JSON)."""
    return json.dumps({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
                       "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}})


def main(argv: list[str]) -> int:
    if argv[:1] == ["play"] and len(argv) == 3:
        play(Path(argv[1]), Path(argv[2]))
        return 0
    if argv[:1] == ["kubectl"]:
        return kubectl(argv[1:])
    if argv[:1] == ["paper"] and len(argv) >= 5:
        return paper(argv[1], argv[2], argv[3], argv[4:], sys.stdin.readline().strip())
    if argv[:1] == ["secret"] and len(argv) >= 2:
        print(secret(argv[1], dict(kv.split("=", 1) for kv in argv[2:])))
        return 0
    if argv[:1] == ["data"] and len(argv) == 2:
        # A Secret object -> the JSON map podman 4.3's kube play reads for secretKeyRef.
        print(json.dumps(json.loads(Path(argv[1]).read_text()).get("data", {})))
        return 0
    if argv[:1] == ["key"] and len(argv) == 3:
        value = json.loads(Path(argv[1]).read_text())["data"][argv[2]]
        sys.stdout.write(base64.b64decode(value).decode())
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
