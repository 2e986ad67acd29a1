"""The alerting rules (PrometheusRule objects): every metric an expression names is one
that a service exports (found in the code's `registry.register(...)` calls under the
crate's registry prefix) or one of the few outside metrics listed below; every alert
has a runbook entry in docs/operations.md; and, where `promtool` is installed, the
rules pass `promtool check rules`."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import yaml

from .render import ref
from .report import Report

#: Metrics that come from outside the services, with where from.
EXTERNAL = {
    "rabbitmq_detailed_queue_messages": "RabbitMQ prometheus plugin, /metrics/detailed",
    "rabbitmq_detailed_queue_messages_ready": "RabbitMQ prometheus plugin, /metrics/detailed",
    "rabbitmq_detailed_queue_consumers": "RabbitMQ prometheus plugin, /metrics/detailed",
    "kube_deployment_status_replicas_available": "kube-state-metrics",
    "kube_pod_status_ready": "kube-state-metrics",
    "up": "Prometheus (scrape health)",
}

#: Metrics a rule may name before the code exports them: name -> why. Reported as a
#: note on every run, so that the entry is removed once the metric exists.
PENDING: dict[str, str] = {}

#: What prometheus-client appends to a registered name, by metric type.
SUFFIXES = ("", "_total", "_created", "_bucket", "_sum", "_count", "_info")

REGISTER = re.compile(r"registry(?:\(\))?\s*\.\s*register\s*\(\s*\"([a-z0-9_]+)\"")
#: The registry's prefix: `shared::service::Service::new(name, prefix, …)`, or a
#: registry of the crate's own.
PREFIX = re.compile(r"(?:Registry::with_prefix\(|Service::new\(\s*\"[^\"]*\"\s*,)\s*\"([a-z0-9_]+)\"")
#: A crate that consumes (`service.consume(…)` registers the consumer loop's metrics).
CONSUMER_METRICS = re.compile(r"ConsumerMetrics::register\(|\.consume\(")


def exported_metrics(repo_root: Path) -> dict[str, str]:
    """Metric base names (prefix included) -> the crate that registers them. A crate
    with a prefixed registry exports its own `register` names, the shared HTTP
    server's (`shared/src/http.rs`: every service serves on the skeleton), plus the
    shared consumer loop's if it registers `ConsumerMetrics`."""

    def names(src: Path) -> set[str]:
        found = set()
        for f in src.rglob("*.rs"):
            found |= set(REGISTER.findall(f.read_text(encoding="utf-8")))
        return found

    shared = names(repo_root / "shared" / "src")
    http_file = repo_root / "shared" / "src" / "http.rs"
    http = set(REGISTER.findall(http_file.read_text(encoding="utf-8"))) if http_file.exists() else set()
    out: dict[str, str] = {}
    for src in sorted(repo_root.glob("*/src")):
        if not src.is_dir() or src.parent.name == "shared":
            continue
        text = "\n".join(f.read_text(encoding="utf-8") for f in src.rglob("*.rs"))
        prefixes = PREFIX.findall(text)
        if not prefixes:
            continue
        own = names(src) | http | (shared if CONSUMER_METRICS.search(text) else set())
        for prefix in prefixes:
            for name in own:
                out[f"{prefix}_{name}"] = src.parent.name
    return out


def known(name: str, exported: dict[str, str]) -> bool:
    if name in EXTERNAL or name in PENDING:
        return True
    return any(name.endswith(s) and name[: len(name) - len(s)] in exported for s in SUFFIXES if s) or (
        name in exported
    )


# --- PromQL, as far as naming metrics goes ------------------------------------------

KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
            "group_right", "bool", "offset", "inf", "nan"}
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
NAME_MATCHER = re.compile(r"__name__\s*(=~|=)\s*\"([^\"]*)\"")
IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def _expand(pattern: str) -> list[str] | None:
    """The names a `__name__` regex of the form `prefix(a|b|c)suffix` (or a plain
    name) stands for; None when it is any other regex."""
    m = re.fullmatch(r"([a-z0-9_]*)\(([a-z0-9_|]+)\)([a-z0-9_]*)", pattern)
    if m:
        return [m.group(1) + alt + m.group(3) for alt in m.group(2).split("|")]
    if re.fullmatch(r"[a-z0-9_:]+", pattern):
        return [pattern]
    return None


def metric_names(expr: str) -> tuple[set[str], list[str]]:
    """(metric names the expression selects, `__name__` regexes it could not expand)."""
    names: set[str] = set()
    opaque: list[str] = []
    for _, pattern in NAME_MATCHER.findall(expr):
        expanded = _expand(pattern)
        if expanded is None:
            opaque.append(pattern)
        else:
            names.update(expanded)
    text = re.sub(r"\{[^}]*\}", " ", expr)       # label matchers
    text = re.sub(r"\"[^\"]*\"", " ", text)      # strings
    text = re.sub(r"\[[^\]]*\]", " ", text)      # ranges
    text = GROUPING.sub(" ", text)               # label lists
    text = re.sub(r"#.*", " ", text)             # comments
    for m in IDENT.finditer(text):
        word = m.group(0)
        after = text[m.end():].lstrip()
        if word.lower() in KEYWORDS or after.startswith("("):
            continue                             # operator, function or aggregation
        if re.fullmatch(r"[0-9]", text[m.start() - 1: m.start()] or " "):
            continue                             # a duration's unit (5m)
        names.add(word)
    return names, opaque


def runbook_headings(operations_md: Path) -> list[str]:
    text = operations_md.read_text(encoding="utf-8")
    runbooks = text.split("\n## Runbooks", 1)
    if len(runbooks) < 2:
        return []
    section = runbooks[1].split("\n## ", 1)[0]
    return [line[4:] for line in section.splitlines() if line.startswith("### ")]


def check_alerts(objs: list[dict], report: Report, target: str, exported: dict[str, str],
                 operations_md: Path) -> None:
    headings = runbook_headings(operations_md)
    for obj in objs:
        if obj.get("kind") != "PrometheusRule":
            continue
        groups = (obj.get("spec") or {}).get("groups") or []
        for group in groups:
            for rule in group.get("rules") or []:
                name = rule.get("alert") or rule.get("record") or "?"
                subject = f"{target}: {ref(obj)}: {name}"
                names, opaque = metric_names(str(rule.get("expr", "")))
                unknown = sorted(n for n in names if not known(n, exported))
                report.check(not unknown and not opaque, subject + ": metrics exist",
                             "; ".join([f"no service exports {n} (nor is it listed in "
                                        f"deploy/checks/alerts.py EXTERNAL)" for n in unknown]
                                       + [f"cannot tell which metrics __name__=~\"{p}\" means"
                                          for p in opaque]))
                for n in sorted(names & PENDING.keys()):
                    report.note(f"{subject}: {n} is not exported yet ({PENDING[n]})")
                if rule.get("alert"):
                    word = re.compile(r"\b" + re.escape(name) + r"\b")
                    report.check(any(word.search(h) for h in headings),
                                 subject + ": runbook in docs/operations.md",
                                 f"no `### ... {name} ...` heading under `## Runbooks`")
        _promtool(obj, groups, report, target)


def _promtool(obj: dict, groups: list, report: Report, target: str) -> None:
    promtool = shutil.which("promtool")
    subject = f"{target}: {ref(obj)}: promtool check rules"
    if promtool is None:
        report.note(subject + ": skipped, promtool not installed (Debian: apt-get install prometheus)")
        return
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump({"groups": groups}, f)
        path = f.name
    try:
        done = subprocess.run([promtool, "check", "rules", path], capture_output=True,
                              text=True, timeout=60, check=False)
    finally:
        Path(path).unlink(missing_ok=True)
    report.check(done.returncode == 0, subject, (done.stdout + done.stderr).strip())
