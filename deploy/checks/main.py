"""Runs every check over every target and prints `N passed, M failed`."""

from __future__ import annotations

import argparse
import sys
import unittest
from pathlib import Path

from . import contract as contract_mod
from . import alerts, envscan, made, rules, schemas, scrape
from .render import TARGETS, RenderError, ref, render
from .report import Report

DEPLOY_DIR = Path(__file__).resolve().parent.parent


def run(deploy_dir: Path, repo_root: Path, report: Report, k8s_version: str = schemas.K8S_VERSION) -> None:
    try:
        contract = contract_mod.load(deploy_dir / "env-contract.yaml")
    except contract_mod.ContractError as e:
        report.check(False, "env-contract.yaml", str(e))
        return

    reads = envscan.scan_tree(repo_root)
    needed, unmapped = envscan.reads_by_service(reads, contract.crates)
    files = envscan.source_files(repo_root)
    print(f"env scan: {len(files)} Rust files, {len({r.name for r in reads})} variables "
          f"read through clap `env = \"...\"`", file=report.out)
    for read in unmapped:
        report.check(False, f"env scan: crate {read.crate}",
                     f"{read.name} is read at {read.where()}, but deploy/env-contract.yaml does "
                     f"not say which containers run crate {read.crate} (add it under `crates:`)")
    # Everything the code reads in any way, for the `-v` note about unread settings.
    # RUST_LOG is read inside tracing-subscriber (EnvFilter::try_from_default_env).
    all_reads = ({r.name for r in reads}
                 | {r.name for r in envscan.scan_tree(repo_root, envscan.ENV_CALL)}
                 | {"RUST_LOG"})

    exported = alerts.exported_metrics(repo_root)
    print(f"metrics scan: {len(exported)} metrics registered by the services", file=report.out)
    crds = schemas.CrdSchemas(deploy_dir / "crds")
    examples = rules.load_secret_examples(deploy_dir)

    for target, directory in TARGETS.items():
        try:
            objs = render(deploy_dir / directory)
        except RenderError as e:
            report.check(False, f"{target}: kubectl kustomize {directory}", str(e))
            continue
        report.check(True, f"{target}: kubectl kustomize {directory} ({len(objs)} objects)")

        for obj in objs:
            subject = f"{target}: {ref(obj)}: schema"
            if crds.handles(obj):
                errors = crds.errors(obj)
                report.check(not errors, subject + " (vendored CRD)", "; ".join(errors))
            else:
                errors = schemas.kubernetes_errors(obj, k8s_version)
                if errors is None:
                    report.check(False, subject, f"no schema for {obj.get('apiVersion')} {obj.get('kind')}")
                else:
                    report.check(not errors, subject + f" (Kubernetes {k8s_version}, strict)", "; ".join(errors))

        rules.check_security(objs, report, target)
        rules.check_probes(objs, report, target, contract)
        rules.check_environment(objs, report, target, contract, needed, all_reads)
        rules.check_secret_references(objs, report, target, examples)
        rules.check_references(objs, report, target)
        rules.check_shutdown(objs, report, target, contract)
        rules.check_tls(objs, report, target, contract)
        rules.check_dlr_ingress(objs, report, target)
        script, script_text = made.script_for(target, deploy_dir.parent)
        made.check_made(objs, report, target, script_text, script)
        scrape.check_scraping(objs, report, target)
        alerts.check_alerts(objs, report, target, exported, deploy_dir.parent / "docs" / "operations.md")


def self_test() -> int:
    suite = unittest.defaultTestLoader.discover(
        str(Path(__file__).resolve().parent / "tests"), top_level_dir=str(DEPLOY_DIR)
    )
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    failed = len(result.failures) + len(result.errors)
    print(f"{result.testsRun - failed} passed, {failed} failed")
    return 0 if result.wasSuccessful() else 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="deploy/check.py",
        description="Validate deploy/ offline: render base and overlays, check schemas "
        "(Kubernetes and vendored CRDs), security contexts, probes, and that every "
        "environment variable the code reads is provided.",
    )
    parser.add_argument("--k8s-version", default=schemas.K8S_VERSION,
                        help=f"Kubernetes version of the schemas (default {schemas.K8S_VERSION})")
    parser.add_argument("--repo-root", type=Path, default=DEPLOY_DIR.parent,
                        help="where the crates are (default: the parent of deploy/)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print passing checks too")
    parser.add_argument("--self-test", action="store_true",
                        help="run the checker's own unit tests instead")
    args = parser.parse_args(argv)
    if args.self_test:
        return self_test()
    report = Report(verbose=args.verbose)
    run(DEPLOY_DIR, args.repo_root.resolve(), report, args.k8s_version)
    print(report.summary())
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
