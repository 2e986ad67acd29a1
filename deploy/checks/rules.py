"""The rules every rendered target must follow. Each function records its checks on
a Report; subjects start with the target name so a failure says where it is."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from .contract import Contract
from .envscan import EnvRead
from .report import Report
from .workloads import Container, containers, environment, pod_labels, pod_spec, selector_matches

RUN_AS_USER = 10001
TERMINATION_GRACE_SECONDS = 45
HEALTH_PATHS = {"/healthz", "/readyz"}
#: For the services: which endpoint each probe must call.
PROBE_PATHS = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}


def is_service(c: Container, contract: Contract) -> bool:
    return c.obj["kind"] == "Deployment" and c.name in contract.services


def code_of(c: Container, contract: Contract) -> str | None:
    """Which service's binary a container runs: the service containers, and the
    migration Job's `migrate-<service>` containers (same binary, same settings)."""
    if is_service(c, contract):
        return c.name
    if c.obj["kind"] == "Job" and c.name.startswith("migrate-"):
        service = c.name[len("migrate-"):]
        return service if service in contract.services else None
    return None


# --- security -------------------------------------------------------------------


def security_problems(c: Container) -> list[str]:
    pod_sc = c.pod.get("securityContext") or {}
    sc = c.spec.get("securityContext") or {}

    def effective(key):
        return sc.get(key, pod_sc.get(key))

    problems = []
    if effective("runAsNonRoot") is not True:
        problems.append("runAsNonRoot is not true")
    if effective("runAsUser") != RUN_AS_USER:
        problems.append(f"runAsUser is {effective('runAsUser')}, not {RUN_AS_USER}")
    if sc.get("readOnlyRootFilesystem") is not True:
        problems.append("readOnlyRootFilesystem is not true")
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation is not false")
    if sc.get("privileged"):
        problems.append("privileged")
    caps = sc.get("capabilities") or {}
    if "ALL" not in (caps.get("drop") or []):
        problems.append("capabilities.drop lacks ALL")
    if caps.get("add"):
        problems.append(f"capabilities.add {caps['add']}")
    seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
    if seccomp != "RuntimeDefault":
        problems.append(f"seccompProfile is {seccomp}, not RuntimeDefault")
    resources = c.spec.get("resources") or {}
    for kind in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            if resource not in (resources.get(kind) or {}):
                problems.append(f"no {kind}.{resource}")
    volumes = {v.get("name"): v for v in c.pod.get("volumes") or []}
    tmp = [m for m in c.spec.get("volumeMounts") or [] if m.get("mountPath") == "/tmp"]
    if not tmp or "emptyDir" not in volumes.get(tmp[0].get("name"), {}):
        problems.append("/tmp is not an emptyDir mount (the root filesystem is read-only)")
    return problems


def pod_problems(obj: dict) -> list[str]:
    pod = pod_spec(obj) or {}
    problems = []
    if pod.get("automountServiceAccountToken") is not False:
        problems.append("automountServiceAccountToken is not false (no service calls the API)")
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            problems.append(f"{key} is true")
    return problems


def check_security(objs: list[dict], report: Report, target: str) -> None:
    for obj in objs:
        if pod_spec(obj) is not None:
            problems = pod_problems(obj)
            report.check(not problems, f"{target}: {obj['kind']}/{obj['metadata']['name']}: pod security", "; ".join(problems))
    for c in containers(objs):
        problems = security_problems(c)
        report.check(not problems, f"{target}: {c.long_name}: security context", "; ".join(problems))


# --- probes ---------------------------------------------------------------------


def probe_problems(c: Container, service: bool) -> list[str]:
    problems = []
    ports = c.port_numbers()
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = c.spec.get(kind)
        if probe is None:
            if c.obj["kind"] != "Job" and c.role != "init":
                problems.append(f"no {kind}")
            continue
        handler = probe.get("httpGet") or probe.get("tcpSocket") or probe.get("grpc")
        if probe.get("exec") is not None:
            if service:
                problems.append(f"{kind} uses exec (the image has no shell)")
            continue
        if handler is None:
            problems.append(f"{kind} has no handler")
            continue
        port = handler.get("port")
        number = ports.get(str(port))
        if number is None:
            problems.append(f"{kind} port {port!r} is not a port of the container {sorted(ports)}")
        elif service and number != ports.get("http"):
            problems.append(f"{kind} port {port!r} is not the http port {ports.get('http')}")
        if "httpGet" in probe:
            path = handler.get("path")
            if path not in HEALTH_PATHS:
                problems.append(f"{kind} path {path!r} is not one of {sorted(HEALTH_PATHS)}")
            elif service and path != PROBE_PATHS[kind]:
                problems.append(f"{kind} path {path} should be {PROBE_PATHS[kind]}")
    return problems


def check_probes(objs: list[dict], report: Report, target: str, contract: Contract) -> None:
    for c in containers(objs):
        if c.role == "init":
            continue  # plain init containers cannot have probes
        problems = probe_problems(c, is_service(c, contract))
        report.check(not problems, f"{target}: {c.long_name}: probes", "; ".join(problems))


# --- environment ----------------------------------------------------------------


def _port_of(address: str) -> int | None:
    m = re.fullmatch(r"(?:\[[^\]]*\]|[^:]*):(\d+)", address.strip())
    return int(m.group(1)) if m else None


def check_environment(
    objs: list[dict],
    report: Report,
    target: str,
    contract: Contract,
    needed: dict[str, dict[str, EnvRead]],
    all_reads: set[str],
) -> None:
    """Every variable a service's code reads reaches that service's container."""
    running = {c.name for c in containers(objs) if is_service(c, contract)}
    for service in contract.services:
        report.check(service in running, f"{target}: service {service}: has a Deployment",
                     f"no Deployment has a container named {service}")
    for c in containers(objs):
        service = code_of(c, contract)
        if service is None:
            continue
        env = environment(c, objs)
        problems = list(env.problems)
        for name, read in sorted(needed.get(service, {}).items()):
            if name not in env.values and not contract.is_optional(service, name):
                problems.append(
                    f"{name} (read at {read.where()}) is not set from a ConfigMap or Secret "
                    f"and not listed as optional for {service} in deploy/env-contract.yaml"
                )
        if (c.obj["kind"] == "Job" and "DATABASE_URL" not in env.values
                and not contract.is_optional(service, "DATABASE_URL")):
            problems.append("migrate needs DATABASE_URL")
        addr = env.values.get("HTTP_ADDR")
        if is_service(c, contract):
            http = c.port_numbers().get("http")
            if http is None:
                problems.append("no container port named http")
            elif addr is not None and _port_of(addr) != http:
                problems.append(f"HTTP_ADDR {addr} does not listen on containerPort {http}")
        report.check(not problems, f"{target}: {c.long_name}: environment", "; ".join(problems))
        unread = sorted(k for k, src in env.sources.items()
                        if src.startswith("ConfigMap/") and k not in all_reads)
        if is_service(c, contract) and needed.get(service) and unread and report.verbose:
            report.note(f"{target}: {c.long_name}: set but not read by the code (yet): {', '.join(unread)}")


def load_secret_examples(deploy_dir: Path) -> dict[str, set[str]]:
    """Secret name -> keys, from every *secret*.example.yaml and every
    `<secret name>.example/` directory (one file per key) under deploy/."""
    examples: dict[str, set[str]] = {}
    for path in sorted(deploy_dir.rglob("*secret*.example.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc and doc.get("kind") == "Secret":
                keys = set(doc.get("stringData") or {}) | set(doc.get("data") or {})
                examples.setdefault(doc["metadata"]["name"], set()).update(keys)
    for path in sorted(deploy_dir.rglob("*.example")):
        if path.is_dir():
            keys = {p.name for p in path.iterdir() if p.is_file()}
            examples.setdefault(path.name[: -len(".example")], set()).update(keys)
    return examples


def check_secret_references(objs: list[dict], report: Report, target: str,
                            examples: dict[str, set[str]]) -> None:
    """Every Secret the manifests use is documented by an example with that key."""
    for c in containers(objs):
        refs = environment(c, objs).secret_refs
        if not refs:
            continue
        problems = [
            f"Secret {name} key {key} has no example (deploy/base/secret.example.yaml)"
            for name, key, _optional in refs
            if key not in examples.get(name, set())
        ]
        report.check(not problems, f"{target}: {c.long_name}: secret references", "; ".join(problems))
    for obj in objs:
        for volume in (pod_spec(obj) or {}).get("volumes") or []:
            name = (volume.get("secret") or {}).get("secretName")
            if name:
                report.check(name in examples, f"{target}: {obj['kind']}/{obj['metadata']['name']}: volume Secret {name}",
                             f"no example for Secret {name} (a *secret*.example.yaml or {name}.example/ directory)")


# --- references and shutdown ----------------------------------------------------


def check_references(objs: list[dict], report: Report, target: str) -> None:
    """Services, HPAs, PDBs and volumes point at things that exist in the render."""
    workloads = [o for o in objs if pod_spec(o) is not None and o["kind"] != "Job"]
    names = {(o["kind"], o["metadata"]["name"]) for o in objs}
    for obj in objs:
        kind, name = obj["kind"], obj["metadata"]["name"]
        spec = obj.get("spec") or {}
        subject = f"{target}: {kind}/{name}: references"
        if kind == "Service" and spec.get("type") != "ExternalName":
            matched = [w for w in workloads if selector_matches({"matchLabels": spec.get("selector") or {}}, pod_labels(w))]
            problems = [] if matched else [f"selector {spec.get('selector')} matches no pod template"]
            for port in spec.get("ports") or []:
                target_port = str(port.get("targetPort", port.get("port")))
                if matched and not any(target_port in c.port_numbers() for c in containers(matched)):
                    problems.append(f"targetPort {target_port} is not a container port of the selected pods")
            report.check(not problems, subject, "; ".join(problems))
        elif kind == "HorizontalPodAutoscaler":
            ref = spec.get("scaleTargetRef") or {}
            report.check((ref.get("kind"), ref.get("name")) in names, subject,
                         f"scaleTargetRef {ref.get('kind')}/{ref.get('name')} is not in the render")
        elif kind == "PodDisruptionBudget":
            ok = any(selector_matches(spec.get("selector") or {}, pod_labels(w)) for w in workloads)
            report.check(ok, subject, "selector matches no pod template")
        elif pod_spec(obj) is not None:
            problems = []
            for volume in pod_spec(obj).get("volumes") or []:
                cm = (volume.get("configMap") or {}).get("name")
                pvc = (volume.get("persistentVolumeClaim") or {}).get("claimName")
                if cm and ("ConfigMap", cm) not in names:
                    problems.append(f"volume {volume['name']}: ConfigMap {cm} is not in the render")
                if pvc and ("PersistentVolumeClaim", pvc) not in names:
                    problems.append(f"volume {volume['name']}: PersistentVolumeClaim {pvc} is not in the render")
            report.check(not problems, subject, "; ".join(problems))


def check_shutdown(objs: list[dict], report: Report, target: str, contract: Contract) -> None:
    """SIGTERM, then SHUTDOWN_GRACE_SECONDS of draining (after any preStop sleep),
    must end before the kubelet's SIGKILL."""
    for c in containers(objs):
        if not is_service(c, contract):
            continue
        grace = c.pod.get("terminationGracePeriodSeconds", 30)
        drain = environment(c, objs).values.get("SHUTDOWN_GRACE_SECONDS")
        sleep = ((((c.spec.get("lifecycle") or {}).get("preStop") or {}).get("sleep")) or {}).get("seconds", 0)
        problems = []
        if grace != TERMINATION_GRACE_SECONDS:
            problems.append(f"terminationGracePeriodSeconds is {grace}, not {TERMINATION_GRACE_SECONDS}")
        if drain is not None and drain.isdigit() and int(drain) + sleep >= grace:
            problems.append(f"preStop sleep {sleep}s + SHUTDOWN_GRACE_SECONDS {drain}s do not end before SIGKILL at {grace}s")
        report.check(not problems, f"{target}: {c.long_name}: shutdown", "; ".join(problems))


# --- TLS (prod) ------------------------------------------------------------------

#: The targets whose links must all be TLS: REQUIRE_TLS=true in every container that
#: runs a service's code (shared/src/tls.rs refuses plaintext links at start).
TLS_TARGETS = {"prod"}


def plaintext_reason(name: str, value: str, env: dict[str, str | None]) -> str | None:
    """Why a visible URL setting is not a TLS link, with the rules of shared::tls."""
    from urllib.parse import parse_qs, urlsplit

    if name == "AMQP_URL":
        nodes = [n.strip() for n in value.split(",")]
        bad = [n for n in nodes if not n.startswith("amqps://")]
        return "AMQP_URL has a node without amqps://" if bad else None
    url = urlsplit(value)
    query = parse_qs(url.query)
    if name == "DATABASE_URL":
        mode = (query.get("sslmode") or ["prefer"])[0]
        return None if mode == "verify-full" else f"DATABASE_URL has sslmode={mode}, not verify-full"
    if name == "SMTP_URL":
        if url.scheme == "smtps" or (url.scheme == "smtp" and query.get("tls") == ["required"]):
            return None
        return "SMTP_URL is neither smtps:// nor smtp://…?tls=required"
    gateway = env.get("SMS_GATEWAY") or "log"
    used = (name == "BILLING_URL"
            or (name == "SMS_HTTP_URL" and gateway == "http")
            or (name == "KANNEL_SENDSMS_URL" and gateway == "kannel")
            or (name == "JASMIN_SEND_URL" and gateway == "jasmin"))
    if used and url.scheme != "https":
        return f"{name} is {url.scheme}://, not https://"
    return None


TLS_URLS = ("AMQP_URL", "DATABASE_URL", "SMTP_URL", "BILLING_URL", "SMS_HTTP_URL", "KANNEL_SENDSMS_URL",
            "JASMIN_SEND_URL")


def check_tls(objs: list[dict], report: Report, target: str, contract: Contract) -> None:
    """prod: every service and migrate container has REQUIRE_TLS=true, and the link
    URLs visible in the manifests (ConfigMaps, values; Secrets are not) are TLS ones."""
    if target not in TLS_TARGETS:
        return
    for c in containers(objs):
        if code_of(c, contract) is None:
            continue
        env = environment(c, objs)
        problems = []
        if (env.values.get("REQUIRE_TLS") or "").lower() != "true":
            problems.append(f"REQUIRE_TLS is {env.values.get('REQUIRE_TLS')!r}, not true")
        for name in TLS_URLS:
            value = env.values.get(name)
            if value:
                reason = plaintext_reason(name, value, env.values)
                if reason:
                    problems.append(f"{reason} ({env.sources.get(name)})")
        report.check(not problems, f"{target}: {c.long_name}: TLS links", "; ".join(problems))


# --- delivery reports -------------------------------------------------------------

#: Who reports to the notifier (SPEC 4.3): the in-namespace gateways by name, others by label.
DLR_GATEWAY_PODS = ("kannel", "jasmin")
DLR_GATEWAY_LABEL = {"meter-readings/sms-gateway": "true"}
NOTIFIER_HTTP = {"http", "8082"}


def _admits(rule: dict) -> list[dict]:
    """The `from` peers of an ingress rule that reaches the notifier's http port."""
    ports = rule.get("ports") or []
    if ports and not any(str(p.get("port")) in NOTIFIER_HTTP for p in ports):
        return []
    return rule.get("from") or []


def check_dlr_ingress(objs: list[dict], report: Report, target: str) -> None:
    """Where a notifier runs, a NetworkPolicy admits the SMS gateways to its http port
    (their delivery reports: /v1/dlr/kannel, /v1/dlr/jasmin, /v1/dlr): pods named kannel
    and jasmin, and namespaces and pods labelled meter-readings/sms-gateway=true; and
    a Kannel in the render may reach the notifier (smsbox fetches the dlr-url)."""
    notifiers = [o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "notifier"]
    if not notifiers:
        return
    labels = pod_labels(notifiers[0])
    policies = [o for o in objs if o["kind"] == "NetworkPolicy"]
    peers = []
    for policy in policies:
        spec = policy.get("spec") or {}
        if "Ingress" not in (spec.get("policyTypes") or []):
            continue
        if not selector_matches(spec.get("podSelector") or {}, labels):
            continue
        for rule in spec.get("ingress") or []:
            peers.extend(_admits(rule))
    problems = []
    for name in DLR_GATEWAY_PODS:
        gateway = {"app.kubernetes.io/name": name}
        if not any("namespaceSelector" not in p and "podSelector" in p
                   and selector_matches(p["podSelector"], gateway) for p in peers):
            problems.append(f"no ingress rule admits pods named {name} to the notifier's http port")
    for kind in ("namespaceSelector", "podSelector"):
        if not any(set(p) == {kind} and (p[kind].get("matchLabels") or {}) == DLR_GATEWAY_LABEL
                   for p in peers):
            problems.append(f"no ingress rule admits a {kind} meter-readings/sms-gateway=true "
                            "to the notifier's http port")
    report.check(not problems, f"{target}: NetworkPolicy: SMS gateways reach the notifier (delivery reports)",
                 "; ".join(problems))

    kannels = [o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "kannel"]
    if kannels:
        kannel_labels = pod_labels(kannels[0])
        reaches = False
        for policy in policies:
            spec = policy.get("spec") or {}
            if "Egress" not in (spec.get("policyTypes") or []):
                continue
            if not selector_matches(spec.get("podSelector") or {}, kannel_labels):
                continue
            for rule in spec.get("egress") or []:
                ports = rule.get("ports") or []
                if ports and not any(str(p.get("port")) in NOTIFIER_HTTP for p in ports):
                    continue
                to = rule.get("to") or []
                if not to or any("podSelector" in p and selector_matches(p["podSelector"], labels) for p in to):
                    reaches = True
        report.check(reaches, f"{target}: NetworkPolicy: Kannel reaches the notifier (dlr-url)",
                     "no egress rule lets the kannel pods reach the notifier's http port")
