"""deploy/env-contract.yaml: crate -> containers, and the optional variables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml


@dataclass(frozen=True)
class Contract:
    crates: dict[str, list[str]]
    #: service -> {variable -> reason}
    optional: dict[str, dict[str, str]]

    @property
    def services(self) -> list[str]:
        names = {s for services in self.crates.values() for s in services}
        return sorted(names)

    def is_optional(self, service: str, name: str) -> bool:
        return name in self.optional.get(service, {})


class ContractError(Exception):
    pass


def load(path: Path) -> Contract:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ContractError(f"{path}: {e}") from e
    crates = raw.get("crates")
    if not isinstance(crates, dict) or not crates:
        raise ContractError(f"{path}: `crates` must map crate directories to container names")
    for crate, services in crates.items():
        if not isinstance(services, list) or not all(isinstance(s, str) for s in services):
            raise ContractError(f"{path}: crates.{crate} must be a list of container names")
    known = {s for services in crates.values() for s in services}
    optional: dict[str, dict[str, str]] = {}
    for i, entry in enumerate(raw.get("optional") or []):
        name = entry.get("name") if isinstance(entry, dict) else None
        services = entry.get("services") if isinstance(entry, dict) else None
        reason = (entry.get("reason") or "").strip() if isinstance(entry, dict) else ""
        if not name or not isinstance(services, list) or not services:
            raise ContractError(f"{path}: optional[{i}] needs `name` and a list `services`")
        if not reason:
            raise ContractError(f"{path}: optional[{i}] ({name}) needs a `reason`")
        for service in services:
            if service not in known:
                raise ContractError(f"{path}: optional[{i}] ({name}) names unknown service {service!r}")
            optional.setdefault(service, {})[name] = reason
    return Contract(crates=crates, optional=optional)
