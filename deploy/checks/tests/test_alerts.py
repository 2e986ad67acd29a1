"""The alert check: which metric names a PromQL expression selects, and which of them
the services export."""

import tempfile
import unittest
from pathlib import Path

from checks import alerts


class MetricNames(unittest.TestCase):
    def test_plain_selectors_skip_functions_labels_and_durations(self):
        names, opaque = alerts.metric_names(
            'histogram_quantile(0.99, sum by (le, queue) (rate(a_seconds_bucket{queue="x"}[10m]))) > 5'
            ' and on() (hour() >= 3) or vector(0) == b_total offset 5m'
        )
        self.assertEqual(names, {"a_seconds_bucket", "b_total"})
        self.assertEqual(opaque, [])

    def test_name_regex_alternatives_are_expanded(self):
        names, opaque = alerts.metric_names(
            'sum(increase({__name__=~"(validator|billing)_consumer_messages_total"}[15m]))'
        )
        self.assertEqual(names, {"validator_consumer_messages_total", "billing_consumer_messages_total"})
        self.assertEqual(opaque, [])
        self.assertEqual(alerts.metric_names('{__name__=~".+_total"}')[1], [".+_total"])


class Exported(unittest.TestCase):
    def test_prefix_suffixes_and_shared_consumer_metrics(self):
        with tempfile.TemporaryDirectory() as d:
            root = Path(d)
            for crate, src in {
                "shared": 'registry.register(\n "consumer_messages", "h", m.clone());',
                "svc": 'let mut registry = Registry::with_prefix("svc");\n'
                       'ConsumerMetrics::register(&mut registry);\n'
                       'registry.register("requests", "h", r.clone());',
                "svc2": 'let mut service = Service::new("svc-two", "two", &c.runtime);\n'
                        'service.registry().register("sent", "h", s.clone());',
                "tool": 'registry.register("not_a_service", "h", x);',
            }.items():
                (root / crate / "src").mkdir(parents=True)
                (root / crate / "Cargo.toml").write_text("[package]\n")
                (root / crate / "src" / "lib.rs").write_text(src)
            exported = alerts.exported_metrics(root)
            self.assertEqual(set(exported), {"svc_requests", "svc_consumer_messages", "two_sent"})
            self.assertTrue(alerts.known("svc_requests_total", exported))
            self.assertTrue(alerts.known("up", exported))
            self.assertFalse(alerts.known("svc_request_total", exported))

    def test_every_service_exports_the_shared_http_servers_metrics(self):
        with tempfile.TemporaryDirectory() as d:
            root = Path(d)
            for crate, files in {
                "shared": {"lib.rs": 'registry.register("consumer_messages", "h", m.clone());',
                           "http.rs": 'registry.register(\n "http_connections", "h", g.clone());'},
                # Serves HTTP but consumes nothing (ingest, console).
                "web": {"lib.rs": 'let mut service = Service::new("web", "web", &c.runtime);'},
            }.items():
                (root / crate / "src").mkdir(parents=True)
                (root / crate / "Cargo.toml").write_text("[package]\n")
                for name, src in files.items():
                    (root / crate / "src" / name).write_text(src)
            exported = alerts.exported_metrics(root)
            self.assertEqual(set(exported), {"web_http_connections"})


if __name__ == "__main__":
    unittest.main()
