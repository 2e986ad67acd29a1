"""The two cross-checks fail when they should: a Secret no documented script makes,
a ConfigMap missing from the render, a scraped Deployment the monitoring namespace
cannot reach (on the committed dev render with one thing broken at a time)."""

import copy
import io
import unittest

from checks import made, scrape
from checks.main import DEPLOY_DIR
from checks.render import render
from checks.report import Report
from checks.tests.test_rules import find

REPO_ROOT = DEPLOY_DIR.parent


class MadeAndScrapedTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.rendered = render(DEPLOY_DIR / "overlays/dev")
        cls.script, cls.script_text = made.script_for("dev", REPO_ROOT)

    def dev(self):
        return copy.deepcopy(self.rendered)

    def made_failures(self, objs, text=None):
        report = Report(out=io.StringIO())
        made.check_made(objs, report, "dev", self.script_text if text is None else text, self.script)
        return report

    def scrape_failures(self, objs):
        report = Report(out=io.StringIO())
        scrape.check_scraping(objs, report, "dev")
        return report

    def test_the_committed_dev_overlay_passes_both(self):
        report = self.made_failures(self.dev())
        self.assertEqual(report.failures, [])
        self.assertGreaterEqual(report.passed, 6)  # five services and the Job, Kannel too
        report = self.scrape_failures(self.dev())
        self.assertEqual(report.failures, [])
        self.assertEqual(report.passed, 5)  # the five services are scraped

    def test_a_secret_the_script_does_not_make_is_caught(self):
        text = self.script_text.replace("apply_secret meter-console-secrets", "true")
        failures = " ".join(self.made_failures(self.dev(), text).failures)
        self.assertIn("Deployment/console", failures)
        self.assertIn("Job/meter-migrate", failures)
        self.assertIn("Secret meter-console-secrets", failures)

    def test_an_optional_secret_key_needs_no_maker(self):
        objs = self.dev()
        console = find(objs, "Deployment", "console")["spec"]["template"]["spec"]["containers"][0]
        console["env"].append({"name": "X", "valueFrom": {"secretKeyRef": {
            "name": "nobody-makes-this", "key": "X", "optional": True}}})
        self.assertEqual(self.made_failures(objs).failures, [])

    def test_a_configmap_missing_from_the_render_is_caught(self):
        objs = self.dev()
        console = find(objs, "Deployment", "console")["spec"]["template"]["spec"]["containers"][0]
        console["envFrom"].append({"configMapRef": {"name": "meter-nowhere"}})
        failures = " ".join(self.made_failures(objs).failures)
        self.assertIn("ConfigMap meter-nowhere", failures)

    def test_a_scraped_deployment_monitoring_cannot_reach_is_caught(self):
        objs = self.dev()
        policy = find(objs, "NetworkPolicy", "metrics-from-monitoring")
        values = policy["spec"]["podSelector"]["matchExpressions"][0]["values"]
        values.remove("console")
        failures = self.scrape_failures(objs).failures
        self.assertEqual(len(failures), 1, failures)
        self.assertIn("Deployment/console", failures[0])

    def test_a_scrape_port_no_policy_opens_is_caught(self):
        objs = self.dev()
        meta = find(objs, "Deployment", "validator")["spec"]["template"]["metadata"]
        meta["annotations"]["prometheus.io/port"] = "9999"
        failures = self.scrape_failures(objs).failures
        self.assertEqual(len(failures), 1, failures)
        self.assertIn("port 9999", failures[0])

    def test_a_policy_admitting_only_some_monitoring_pods_does_not_count(self):
        objs = self.dev()
        policy = find(objs, "NetworkPolicy", "metrics-from-monitoring")
        policy["spec"]["ingress"][0]["from"][0]["podSelector"] = {"matchLabels": {"app": "grafana"}}
        failures = self.scrape_failures(objs).failures
        # ingest stays reachable: its own policy admits everyone on its port.
        self.assertEqual(len(failures), 4, failures)


if __name__ == "__main__":
    unittest.main()
