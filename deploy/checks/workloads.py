"""Reading rendered objects: pod templates, containers, and the environment a
container actually gets from its env, envFrom, ConfigMaps and Secrets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

#: Kinds that carry a pod template, and where it is.
POD_TEMPLATE_PATHS = {
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}


def pod_spec(obj: dict) -> dict | None:
    path = POD_TEMPLATE_PATHS.get(obj.get("kind", ""))
    if path is None:
        return None
    node = obj
    for key in path:
        node = node.get(key) or {}
    return node


def pod_labels(obj: dict) -> dict:
    path = POD_TEMPLATE_PATHS.get(obj.get("kind", ""))
    if path is None:
        return {}
    node = obj
    for key in path[:-1]:
        node = node.get(key) or {}
    return (node.get("metadata") or {}).get("labels") or {}


@dataclass(frozen=True)
class Container:
    """A container with the pod it runs in. `role`: init, sidecar (restartable init
    container) or main."""

    obj: dict
    pod: dict
    spec: dict
    role: str

    @property
    def name(self) -> str:
        return self.spec.get("name", "?")

    @property
    def long_name(self) -> str:
        return f"{self.obj['kind']}/{self.obj['metadata']['name']} container {self.name}"

    def port_numbers(self) -> dict[str, int]:
        """Port name -> number, plus str(number) -> number for unnamed ports."""
        ports = {}
        for port in self.spec.get("ports") or []:
            number = port.get("containerPort")
            ports[str(number)] = number
            if port.get("name"):
                ports[port["name"]] = number
        return ports


def containers(objs: list[dict]) -> Iterator[Container]:
    for obj in objs:
        pod = pod_spec(obj)
        if pod is None:
            continue
        for spec in pod.get("initContainers") or []:
            role = "sidecar" if spec.get("restartPolicy") == "Always" else "init"
            yield Container(obj, pod, spec, role)
        for spec in pod.get("containers") or []:
            yield Container(obj, pod, spec, "main")


@dataclass
class Environment:
    """What a container's process will find in its environment, and from where."""

    #: variable -> value (None when it comes from a Secret or a field reference)
    values: dict[str, str | None] = field(default_factory=dict)
    #: variable -> "ConfigMap/x", "Secret/y key K", "value", ...
    sources: dict[str, str] = field(default_factory=dict)
    #: problems found while resolving (a ConfigMap missing from the render, ...)
    problems: list[str] = field(default_factory=list)
    #: (secret name, key, optional) of every Secret reference
    secret_refs: list[tuple[str, str, bool]] = field(default_factory=list)


def environment(container: Container, objs: list[dict]) -> Environment:
    """Resolves envFrom and env in Kubernetes' order (env overrides envFrom)."""
    config_maps = {
        o["metadata"]["name"]: o.get("data") or {} for o in objs if o.get("kind") == "ConfigMap"
    }
    env = Environment()
    for source in container.spec.get("envFrom") or []:
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            name = source["configMapRef"].get("name")
            if name not in config_maps:
                if not source["configMapRef"].get("optional"):
                    env.problems.append(f"envFrom ConfigMap {name} is not in the rendered output")
                continue
            for key, value in config_maps[name].items():
                env.values[prefix + key] = value
                env.sources[prefix + key] = f"ConfigMap/{name}"
        elif "secretRef" in source:
            env.problems.append(
                "envFrom secretRef hides which keys are read; use env[].valueFrom.secretKeyRef"
            )
    for var in container.spec.get("env") or []:
        name = var.get("name")
        if "value" in var:
            env.values[name] = var["value"]
            env.sources[name] = "value"
            continue
        value_from = var.get("valueFrom") or {}
        if "configMapKeyRef" in value_from:
            ref = value_from["configMapKeyRef"]
            data = config_maps.get(ref.get("name"))
            if data is None or ref.get("key") not in data:
                if not ref.get("optional"):
                    env.problems.append(
                        f"{name}: ConfigMap {ref.get('name')} key {ref.get('key')} is not in the render"
                    )
                continue
            env.values[name] = data[ref["key"]]
            env.sources[name] = f"ConfigMap/{ref['name']}"
        elif "secretKeyRef" in value_from:
            ref = value_from["secretKeyRef"]
            env.values[name] = None
            env.sources[name] = f"Secret/{ref.get('name')} key {ref.get('key')}"
            env.secret_refs.append((ref.get("name"), ref.get("key"), bool(ref.get("optional"))))
        elif value_from:
            env.values[name] = None
            env.sources[name] = "valueFrom"
        else:
            env.values[name] = ""
            env.sources[name] = "value"
    return env


def selector_matches(selector: dict, labels: dict) -> bool:
    """A LabelSelector (matchLabels and matchExpressions) against a label set."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True
