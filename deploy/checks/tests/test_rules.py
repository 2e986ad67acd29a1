"""The checks fail when they should: against the real rendered manifests with one
thing broken at a time, and against a copy of the repository with an injected
`env = "SOMETHING_MISSING"`. Needs kubectl (for `kubectl kustomize`)."""

import copy
import io
import shutil
import tempfile
import unittest
from pathlib import Path

from checks import contract as contract_mod
from checks import envscan, rules, schemas
from checks.main import DEPLOY_DIR, run
from checks.render import TARGETS, render
from checks.report import Report

REPO_ROOT = DEPLOY_DIR.parent


def quiet_report() -> Report:
    return Report(out=io.StringIO())


def find(objs, kind, name):
    for obj in objs:
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return obj
    raise KeyError(f"{kind}/{name}")


class RenderedManifestsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.rendered = {target: render(DEPLOY_DIR / path) for target, path in TARGETS.items()}
        cls.contract = contract_mod.load(DEPLOY_DIR / "env-contract.yaml")

    def dev(self):
        return copy.deepcopy(self.rendered["dev"])

    def ingest_container(self, objs):
        return find(objs, "Deployment", "ingest")["spec"]["template"]["spec"]["containers"][0]

    def security_failures(self, objs):
        report = quiet_report()
        rules.check_security(objs, report, "dev")
        return report.failures

    def test_the_committed_manifests_pass_security_and_probes(self):
        report = quiet_report()
        for target, objs in self.rendered.items():
            rules.check_security(objs, report, target)
            rules.check_probes(objs, report, target, self.contract)
            rules.check_references(objs, report, target)
            rules.check_shutdown(objs, report, target, self.contract)
        self.assertEqual(report.failures, [])
        self.assertGreater(report.passed, 50)

    def test_privilege_escalation_is_caught(self):
        objs = self.dev()
        self.ingest_container(objs)["securityContext"]["allowPrivilegeEscalation"] = True
        failures = self.security_failures(objs)
        self.assertEqual(len(failures), 1, failures)
        self.assertIn("allowPrivilegeEscalation", failures[0])

    def test_writable_root_missing_drop_all_and_root_user_are_caught(self):
        objs = self.dev()
        sc = self.ingest_container(objs)["securityContext"]
        sc["readOnlyRootFilesystem"] = False
        sc["capabilities"] = {"drop": ["NET_RAW"]}
        sc["runAsUser"] = 0
        failures = " ".join(self.security_failures(objs))
        for expected in ("readOnlyRootFilesystem", "drop lacks ALL", "runAsUser is 0"):
            self.assertIn(expected, failures)

    def test_sidecar_and_init_containers_are_checked_too(self):
        objs = self.dev()
        kannel = find(objs, "Deployment", "kannel")["spec"]["template"]["spec"]
        del kannel["initContainers"][0]["securityContext"]["seccompProfile"]
        del kannel["securityContext"]["seccompProfile"]
        job = find(objs, "Job", "meter-migrate")["spec"]["template"]["spec"]
        del job["initContainers"][1]["resources"]["limits"]
        failures = " ".join(self.security_failures(objs))
        self.assertIn("container bearerbox: security context: seccompProfile", failures)
        self.assertIn("container migrate-validator: security context: no limits.cpu", failures)

    def test_probe_path_and_port_are_checked(self):
        objs = self.dev()
        container = self.ingest_container(objs)
        container["readinessProbe"]["httpGet"]["path"] = "/ready"
        container["livenessProbe"]["httpGet"]["port"] = 9999
        report = quiet_report()
        rules.check_probes(objs, report, "dev", self.contract)
        failures = " ".join(report.failures)
        self.assertIn("readinessProbe path '/ready'", failures)
        self.assertIn("livenessProbe port 9999 is not a port of the container", failures)

    def test_http_addr_must_listen_on_the_container_port(self):
        objs = self.dev()
        for obj in objs:
            if obj["kind"] == "ConfigMap" and obj["metadata"]["name"].startswith("meter-ingest-"):
                obj["data"]["HTTP_ADDR"] = "0.0.0.0:9090"
        needed = {"ingest": {}}
        report = quiet_report()
        rules.check_environment(objs, report, "dev", self.contract, needed, set())
        self.assertTrue(any("HTTP_ADDR 0.0.0.0:9090" in f for f in report.failures), report.failures)

    def test_optional_variables_need_no_source(self):
        read = envscan.EnvRead("BILLING_URL", "billing-export", "billing-export/src/config.rs", 1)
        needed = {"billing-export": {"BILLING_URL": read}}
        report = quiet_report()
        rules.check_environment(self.rendered["dev"], report, "dev", self.contract, needed, set())
        self.assertEqual(report.failures, [])
        strict = contract_mod.Contract(crates=self.contract.crates, optional={})
        report = quiet_report()
        rules.check_environment(self.rendered["dev"], report, "dev", strict, needed, set())
        self.assertTrue(any("BILLING_URL (read at billing-export/src/config.rs:1)" in f
                            for f in report.failures), report.failures)

    def dlr_failures(self, objs, target="dev"):
        report = quiet_report()
        rules.check_dlr_ingress(objs, report, target)
        return report

    def test_the_sms_gateways_reach_the_notifier_for_delivery_reports(self):
        for target in ("dev", "prod"):
            report = self.dlr_failures(copy.deepcopy(self.rendered[target]), target)
            self.assertEqual(report.failures, [], target)
        self.assertEqual(self.dlr_failures(self.dev()).passed, 2)  # gateways in, Kannel out
        objs = [o for o in self.dev() if o["metadata"]["name"] != "notifier-dlr-ingress"]
        failures = " ".join(self.dlr_failures(objs).failures)
        for expected in ("pods named kannel", "pods named jasmin",
                         "namespaceSelector meter-readings/sms-gateway=true"):
            self.assertIn(expected, failures)
        objs = self.dev()
        policy = find(objs, "NetworkPolicy", "notifier-dlr-ingress")
        policy["spec"]["ingress"][0]["ports"] = [{"protocol": "TCP", "port": 9999}]
        self.assertEqual(len(self.dlr_failures(objs).failures), 1)
        objs = self.dev()
        find(objs, "NetworkPolicy", "kannel")["spec"]["egress"].pop()
        failures = self.dlr_failures(objs).failures
        self.assertTrue(any("kannel pods reach the notifier" in f for f in failures), failures)

    def prod(self):
        return copy.deepcopy(self.rendered["prod"])

    def tls_failures(self, objs):
        report = quiet_report()
        rules.check_tls(objs, report, "prod", self.contract)
        return report

    def test_prod_requires_tls_in_every_service_and_migrate_container(self):
        report = self.tls_failures(self.prod())
        self.assertEqual(report.failures, [])
        self.assertGreaterEqual(report.passed, 8)  # four Deployments, four migrate containers
        objs = self.prod()
        for obj in objs:
            if obj["kind"] == "ConfigMap" and obj["metadata"]["name"].startswith("meter-common-"):
                del obj["data"]["REQUIRE_TLS"]
        failures = self.tls_failures(objs).failures
        self.assertTrue(any("Deployment/ingest" in f and "REQUIRE_TLS is None" in f for f in failures), failures)
        self.assertTrue(any("migrate-validator" in f for f in failures), failures)

    def test_prod_urls_in_config_maps_must_be_tls(self):
        objs = self.prod()
        for obj in objs:
            name = obj["metadata"]["name"]
            if obj["kind"] == "ConfigMap" and name.startswith("meter-billing-export-"):
                obj["data"]["BILLING_URL"] = "http://billing.example.com/api"
            if obj["kind"] == "ConfigMap" and name.startswith("meter-notifier-"):
                obj["data"]["SMS_HTTP_URL"] = "http://sms.example.com/send"
        failures = self.tls_failures(objs).failures
        self.assertTrue(any("BILLING_URL is http://" in f for f in failures), failures)
        self.assertTrue(any("SMS_HTTP_URL is http://" in f for f in failures), failures)
        for name, value, bad in [
            ("AMQP_URL", "amqps://a:5671/m,amqp://b:5672/m", True),
            ("AMQP_URL", "amqps://a:5671/m", False),
            ("DATABASE_URL", "postgres://h/db?sslmode=verify-ca", True),
            ("DATABASE_URL", "postgres://h/db?sslmode=verify-full", False),
            ("SMTP_URL", "smtp://h:587", True),
            ("SMTP_URL", "smtp://h:587?tls=required", False),
            ("SMTP_URL", "smtps://h:465", False),
            ("KANNEL_SENDSMS_URL", "http://kannel:13013/cgi-bin/sendsms", False),  # gateway http
            ("JASMIN_SEND_URL", "http://jasmin:1401/send", False),  # gateway http
        ]:
            reason = rules.plaintext_reason(name, value, {"SMS_GATEWAY": "http"})
            self.assertEqual(reason is not None, bad, (name, value, reason))
        self.assertIsNotNone(rules.plaintext_reason(
            "KANNEL_SENDSMS_URL", "http://kannel:13013/", {"SMS_GATEWAY": "kannel"}))
        self.assertIsNotNone(rules.plaintext_reason(
            "JASMIN_SEND_URL", "http://jasmin:1401/send", {"SMS_GATEWAY": "jasmin"}))

    def test_secret_keys_must_have_an_example(self):
        objs = self.dev()
        self.ingest_container(objs)["env"].append(
            {"name": "NEW_TOKEN", "valueFrom": {"secretKeyRef": {"name": "meter-ingest-secrets", "key": "NEW_TOKEN"}}}
        )
        report = quiet_report()
        rules.check_secret_references(objs, report, "dev", rules.load_secret_examples(DEPLOY_DIR))
        self.assertTrue(any("key NEW_TOKEN has no example" in f for f in report.failures), report.failures)

    def test_vendored_crds_accept_ours_and_reject_mistakes(self):
        crds = schemas.CrdSchemas(DEPLOY_DIR / "crds")
        rabbit = find(self.dev(), "RabbitmqCluster", "meter-rabbitmq")
        postgres = find(self.dev(), "Cluster", "meter-db")
        self.assertEqual(crds.errors(rabbit), [])
        self.assertEqual(crds.errors(postgres), [])

        typo = copy.deepcopy(rabbit)
        typo["spec"]["replicaz"] = 3
        self.assertTrue(any("replicaz" in e for e in crds.errors(typo)))
        wrong_type = copy.deepcopy(rabbit)
        wrong_type["spec"]["replicas"] = "three"
        self.assertTrue(any(e.startswith("spec.replicas") for e in crds.errors(wrong_type)))
        bad_enum = copy.deepcopy(rabbit)
        bad_enum["spec"]["service"] = {"type": "ExternalName"}
        self.assertTrue(any(e.startswith("spec.service.type") for e in crds.errors(bad_enum)))

        no_instances = copy.deepcopy(postgres)
        del no_instances["spec"]["instances"]
        self.assertTrue(any("'instances' is a required property" in e for e in crds.errors(no_instances)))
        nested_typo = copy.deepcopy(postgres)
        nested_typo["spec"]["bootstrap"]["initdb"]["databse"] = "meter"
        self.assertTrue(any("databse" in e for e in crds.errors(nested_typo)))

    def test_kubernetes_schema_is_strict(self):
        objs = self.dev()
        self.ingest_container(objs)["livenessProbe"]["httpGet"]["pth"] = "/healthz"
        errors = schemas.kubernetes_errors(find(objs, "Deployment", "ingest"))
        self.assertTrue(errors and "pth" in errors[0], errors)


class InjectedEnvVarTest(unittest.TestCase):
    """A copy of the crates' sources, with one variable no manifest provides."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = Path(self.tmp.name)
        for src in sorted(REPO_ROOT.glob("*/src")):
            if src.parent.name not in envscan.NOT_CRATES:
                shutil.copytree(src, self.root / src.parent.name / "src")

    def tearDown(self):
        self.tmp.cleanup()

    def run_checks(self) -> Report:
        report = quiet_report()
        run(DEPLOY_DIR, self.root, report)
        return report

    def inject(self, crate: str) -> None:
        path = self.root / crate / "src" / "zz_injected.rs"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text('#[arg(long, env = "SOMETHING_MISSING")]\npub x: String,\n', encoding="utf-8")

    def test_a_variable_read_by_one_service_fails_that_service_everywhere(self):
        before = self.run_checks()
        self.inject("ingest")
        after = self.run_checks()
        new = [f for f in after.failures if f not in before.failures]
        self.assertTrue(new, "injecting SOMETHING_MISSING changed nothing")
        self.assertTrue(all("SOMETHING_MISSING" in f for f in new), new)
        # The Deployment and the migration Job's container, in base, dev and prod.
        self.assertEqual(len(new), 6, new)
        self.assertTrue(all("ingest" in f.split(":")[1] for f in new), new)
        self.assertEqual(after.failed, before.failed + 6)

    def test_a_variable_read_by_shared_fails_every_service(self):
        before = self.run_checks()
        self.inject("shared")
        after = self.run_checks()
        new = [f for f in after.failures if f not in before.failures]
        # 5 services x (Deployment + migrate container) x 3 targets.
        self.assertEqual(len(new), 30, new)

    def test_a_crate_nobody_maps_is_a_failure(self):
        self.inject("xtask")
        after = self.run_checks()
        self.assertTrue(any("crate xtask" in f for f in after.failures), after.failures)


if __name__ == "__main__":
    unittest.main()
