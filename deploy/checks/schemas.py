"""Schema validation: Kubernetes kinds with PyPI `kubernetes-validate` (bundled
schemas, strict), operator kinds with the CRD schemas vendored in deploy/crds/."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import jsonschema
import kubernetes_validate
import kubernetes_validate.utils
import yaml

#: The Kubernetes version the manifests target. Native sidecars (Kannel) need 1.29,
#: the preStop `sleep` action (ingest) 1.30.
K8S_VERSION = "1.31"

#: (apiVersion, kind) -> vendored CRD file under deploy/crds/.
CRD_FILES = {
    ("rabbitmq.com/v1beta1", "RabbitmqCluster"): "rabbitmq.com_rabbitmqclusters.yaml",
    ("rabbitmq.com/v1beta1", "Policy"): "rabbitmq.com_policies.yaml",
    ("postgresql.cnpg.io/v1", "Cluster"): "postgresql.cnpg.io_clusters.yaml",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com_prometheusrules.yaml",
}

# kubernetes-validate re-reads its (large) definitions file for every object.
kubernetes_validate.utils.schema_contents = functools.lru_cache(maxsize=None)(
    kubernetes_validate.utils.schema_contents
)


def kubernetes_errors(obj: dict, version: str = K8S_VERSION) -> list[str] | None:
    """Errors against the built-in schema; None when kubernetes-validate has none."""
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return None
    except kubernetes_validate.ValidationError as e:
        return [f"{_path(e.path)}: {e.message}"]
    return []


def strict(schema: dict) -> dict:
    """A CRD's structural schema as the API server applies it with field validation
    `Strict` (kubectl's default): unknown fields are errors, except under
    `x-kubernetes-preserve-unknown-fields`. `nullable` allows null."""
    schema = copy.deepcopy(schema)

    def walk(node: dict) -> None:
        if not isinstance(node, dict):
            return
        if node.get("nullable") and "type" in node:
            node["type"] = [node["type"], "null"]
        if (
            "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        for key in ("properties", "patternProperties"):
            for child in (node.get(key) or {}).values():
                walk(child)
        for key in ("items", "additionalProperties", "not"):
            if isinstance(node.get(key), dict):
                walk(node[key])
        for key in ("allOf", "anyOf", "oneOf"):
            for child in node.get(key) or []:
                walk(child)

    walk(schema)
    # metadata is `type: object` in every CRD; the API server checks it as ObjectMeta.
    meta = schema.setdefault("properties", {}).setdefault("metadata", {"type": "object"})
    meta.setdefault("required", ["name"])
    return schema


class CrdSchemas:
    """The vendored CRDs, loaded once."""

    def __init__(self, crd_dir: Path) -> None:
        self.crd_dir = crd_dir
        self._validators: dict[tuple[str, str], jsonschema.protocols.Validator] = {}

    def handles(self, obj: dict) -> bool:
        return (obj.get("apiVersion"), obj.get("kind")) in CRD_FILES

    def validator(self, api_version: str, kind: str) -> jsonschema.protocols.Validator:
        key = (api_version, kind)
        if key not in self._validators:
            path = self.crd_dir / CRD_FILES[key]
            crd = yaml.safe_load(path.read_text(encoding="utf-8"))
            version = api_version.split("/", 1)[1]
            schema = None
            for v in crd["spec"]["versions"]:
                if v["name"] == version:
                    schema = v["schema"]["openAPIV3Schema"]
            if schema is None:
                raise ValueError(f"{path} has no version {version}")
            if crd["spec"]["names"]["kind"] != kind:
                raise ValueError(f"{path} defines {crd['spec']['names']['kind']}, not {kind}")
            # OpenAPI v3.0 schemas are JSON Schema draft 4 semantics
            # (boolean exclusiveMinimum and friends).
            self._validators[key] = jsonschema.Draft4Validator(strict(schema))
        return self._validators[key]

    def errors(self, obj: dict) -> list[str]:
        try:
            validator = self.validator(obj["apiVersion"], obj["kind"])
        except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError) as e:
            return [f"cannot load the vendored CRD: {e}"]
        found = sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.path)))
        return [f"{_path(e.path)}: {e.message}" for e in found]


def _path(parts) -> str:
    return ".".join(str(p) for p in parts) or "(root)"
