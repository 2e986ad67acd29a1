"""Prometheus can reach what it is told to scrape: every workload whose pods carry
`prometheus.io/scrape: "true"` is admitted, on the port its `prometheus.io/port`
names, from the `monitoring` namespace by some NetworkPolicy that selects its pods
(the namespace denies everything else). A service Prometheus cannot scrape fires no
alert: the console's NetworkPolicy admitted only the staff network, once."""

from __future__ import annotations

from .report import Report
from .workloads import POD_TEMPLATE_PATHS, pod_spec, selector_matches

#: The labels of the namespace Prometheus runs in.
MONITORING = {"kubernetes.io/metadata.name": "monitoring"}


def _template_metadata(obj: dict) -> dict:
    node = obj
    for key in POD_TEMPLATE_PATHS[obj["kind"]][:-1]:
        node = node.get(key) or {}
    return node.get("metadata") or {}


def _port_matches(rule_port, number: int, names: dict[str, int]) -> bool:
    if rule_port is None:
        return True
    if isinstance(rule_port, int):
        return rule_port == number
    return names.get(str(rule_port)) == number


def _peer_admits_monitoring(peer: dict) -> bool:
    """A `from` entry that lets every pod of the monitoring namespace in."""
    if "ipBlock" in peer or ("podSelector" in peer and peer["podSelector"]):
        # A podSelector alone means this namespace; with a namespaceSelector, only
        # some pods of it: Prometheus' labels are not ours to know.
        return False
    ns = peer.get("namespaceSelector")
    return ns is not None and selector_matches(ns, MONITORING)


def admits(policy: dict, labels: dict, port: int, port_names: dict[str, int]) -> bool:
    spec = policy.get("spec") or {}
    if not selector_matches(spec.get("podSelector") or {}, labels):
        return False
    if "Ingress" not in (spec.get("policyTypes") or ["Ingress"]):
        return False
    for rule in spec.get("ingress") or []:
        peers = rule.get("from")
        if peers and not any(_peer_admits_monitoring(p) for p in peers):
            continue
        ports = rule.get("ports")
        if not ports or any(_port_matches(p.get("port"), port, port_names) for p in ports):
            return True
    return False


def check_scraping(objs: list[dict], report: Report, target: str) -> None:
    policies = [o for o in objs if o.get("kind") == "NetworkPolicy"]
    for obj in objs:
        pod = pod_spec(obj)
        if pod is None or obj["kind"] == "Job":
            continue
        meta = _template_metadata(obj)
        annotations = meta.get("annotations") or {}
        if str(annotations.get("prometheus.io/scrape", "")).lower() != "true":
            continue
        subject = f"{target}: {obj['kind']}/{obj['metadata']['name']}: Prometheus may scrape it"
        port_names: dict[str, int] = {}
        for c in pod.get("containers") or []:
            for p in c.get("ports") or []:
                if p.get("name"):
                    port_names[p["name"]] = p.get("containerPort")
        try:
            port = int(annotations.get("prometheus.io/port", ""))
        except ValueError:
            report.check(False, subject, "prometheus.io/port is not a port number")
            continue
        labels = meta.get("labels") or {}
        ok = not policies or any(admits(p, labels, port, port_names) for p in policies)
        report.check(ok, subject, f"no NetworkPolicy admits the namespace `monitoring` on port {port}")
