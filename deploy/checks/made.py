"""Everything a workload needs is made by someone an operator will actually run:
every ConfigMap and Secret a pod references (env, envFrom, volumes) is either in the
render or made by the target's documented script — for dev
`deploy/overlays/dev/create-dev-secrets.sh`, for base and prod the
`kubectl create secret generic` commands of `docs/operations-deploy.md`. A Job that
waits for a Secret nobody creates never finishes (the console's, once)."""

from __future__ import annotations

import re
from pathlib import Path

from .report import Report
from .workloads import pod_spec

#: The documented script of each target, relative to the repository root.
SCRIPTS = {
    "base": "docs/operations-deploy.md",
    "dev": "deploy/overlays/dev/create-dev-secrets.sh",
    "prod": "docs/operations-deploy.md",
}

#: `apply_secret NAME` (create-dev-secrets.sh) or `create secret generic NAME` (the docs).
MADE_BY_SCRIPT = re.compile(r"(?:\bapply_secret|\bcreate secret generic)\s+([a-z0-9][a-z0-9.-]*)")


def secrets_made_by(text: str) -> set[str]:
    return set(MADE_BY_SCRIPT.findall(text))


def references(pod: dict) -> list[tuple[str, str, bool]]:
    """(kind, name, optional) of each ConfigMap and Secret a pod spec refers to."""
    found = []
    for group in ("initContainers", "containers"):
        for c in pod.get(group) or []:
            for source in c.get("envFrom") or []:
                for key, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                    if key in source:
                        found.append((kind, source[key].get("name"), bool(source[key].get("optional"))))
            for var in c.get("env") or []:
                value_from = var.get("valueFrom") or {}
                for key, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                    if key in value_from:
                        ref = value_from[key]
                        found.append((kind, ref.get("name"), bool(ref.get("optional"))))
    for volume in pod.get("volumes") or []:
        if "configMap" in volume:
            found.append(("ConfigMap", volume["configMap"].get("name"), bool(volume["configMap"].get("optional"))))
        if "secret" in volume:
            found.append(("Secret", volume["secret"].get("secretName"), bool(volume["secret"].get("optional"))))
    return found


def check_made(objs: list[dict], report: Report, target: str, script_text: str, script: str) -> None:
    rendered = {(o["kind"], o["metadata"]["name"]) for o in objs}
    by_script = secrets_made_by(script_text)
    for obj in objs:
        pod = pod_spec(obj)
        if pod is None:
            continue
        missing = sorted({
            f"{kind} {name}"
            for kind, name, optional in references(pod)
            if not optional and (kind, name) not in rendered
            and not (kind == "Secret" and name in by_script)
        })
        report.check(not missing, f"{target}: {obj['kind']}/{obj['metadata']['name']}: what it references is made",
                     f"{', '.join(missing)}: neither in the render nor made by {script}")


def script_for(target: str, repo_root: Path) -> tuple[str, str]:
    """(name, text) of the target's documented script."""
    name = SCRIPTS[target]
    return name, (repo_root / name).read_text()
