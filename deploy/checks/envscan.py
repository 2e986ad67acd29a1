"""Which environment variables the Rust code reads, found by scanning its sources.

The contract (docs/operations-deploy.md): every setting is a clap argument with
`env = "NAME"`, so `<crate>/src/**/*.rs` is scanned for that attribute. The scan is
the source of truth; there is no fallback list. Reads through `std::env::var("NAME")`
are found too, but only reported as notes: tests read variables that way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

#: clap's `#[arg(..., env = "NAME", ...)]`; `\b` keeps `default_env = "..."` out.
CLAP_ENV = re.compile(r'\benv\s*=\s*"([A-Z0-9_]+)"')
#: `std::env::var("NAME")` / `env::var_os("NAME")`.
ENV_CALL = re.compile(r'\benv::var(?:_os)?\(\s*"([A-Z0-9_]+)"\s*\)')

#: Top-level directories that are never crates.
NOT_CRATES = {"deploy", "target", "docs", "scripts"}


@dataclass(frozen=True)
class EnvRead:
    """One place in the code that reads a variable."""

    name: str
    crate: str  # top-level directory, e.g. "ingest", "shared"
    path: str  # relative to the repository root
    line: int

    def where(self) -> str:
        return f"{self.path}:{self.line}"


def scan_text(text: str, pattern: re.Pattern[str] = CLAP_ENV) -> list[tuple[str, int]]:
    """(name, line number) for each match, skipping lines that are `//` comments."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("//"):
            continue
        found.extend((m.group(1), number) for m in pattern.finditer(line))
    return found


def source_files(root: Path) -> list[Path]:
    """`*/src/**/*.rs` under the repository root, crates only, in a stable order."""
    files = []
    for path in sorted(root.glob("*/src/**/*.rs")):
        crate = path.relative_to(root).parts[0]
        if crate in NOT_CRATES or crate.startswith("."):
            continue
        files.append(path)
    return files


def scan_tree(root: Path, pattern: re.Pattern[str] = CLAP_ENV) -> list[EnvRead]:
    reads = []
    for path in source_files(root):
        rel = path.relative_to(root)
        text = path.read_text(encoding="utf-8", errors="replace")
        for name, line in scan_text(text, pattern):
            reads.append(EnvRead(name, rel.parts[0], rel.as_posix(), line))
    return reads


def reads_by_service(
    reads: list[EnvRead], crates: dict[str, list[str]]
) -> tuple[dict[str, dict[str, EnvRead]], list[EnvRead]]:
    """service -> {variable -> first place it is read}, and the reads in crates the
    contract does not map to any service."""
    by_service: dict[str, dict[str, EnvRead]] = {}
    unmapped = []
    for read in reads:
        services = crates.get(read.crate)
        if services is None:
            unmapped.append(read)
            continue
        for service in services:
            by_service.setdefault(service, {}).setdefault(read.name, read)
    return by_service, unmapped
