"""Renders a kustomization with `kubectl kustomize` (offline) into a list of objects."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

#: What the check renders: name -> directory under deploy/.
TARGETS = {"base": "base", "dev": "overlays/dev", "prod": "overlays/prod"}


class RenderError(Exception):
    pass


def render(directory: Path) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise RenderError("kubectl not found on PATH (`kubectl kustomize` renders offline)")
    try:
        done = subprocess.run(
            [kubectl, "kustomize", str(directory)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise RenderError(f"kubectl kustomize {directory} timed out") from e
    if done.returncode != 0:
        raise RenderError(done.stderr.strip() or f"kubectl kustomize exited {done.returncode}")
    try:
        return [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    except yaml.YAMLError as e:
        raise RenderError(f"output is not YAML: {e}") from e


def ref(obj: dict) -> str:
    """`Kind/name`, how failures name an object."""
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
