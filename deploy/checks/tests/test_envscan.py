"""The env scanner: what it finds, what it must not find."""

import tempfile
import unittest
from pathlib import Path

from checks import envscan

FIXTURE = '''
#[derive(clap::Args)]
pub struct Config {
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    #[arg(long,env="MAX_BODY_BYTES", default_value_t = 16 * 1024)]
    pub max_body_bytes: u32,
    #[arg(long, env = "AMQP_URL", hide_env_values = true, value_parser = secret,
          default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub amqp_url: SecretString,
    #[arg(long, env = "A", env = "B2_C")] // two on one line
    // #[arg(long, env = "COMMENTED_OUT")]
    /// Doc comment mentioning env = "IN_A_DOC_COMMENT".
    #[arg(long, default_env = "NOT_AN_ENV_ATTRIBUTE")]
    #[arg(long, env = "lower_case_is_not_a_variable")]
    pub other: String,
}
fn f() { let _ = std::env::var("OTEL_SERVICE_NAME"); let _ = env::var_os( "X_Y" ); }
'''


class ScanTextTest(unittest.TestCase):
    def test_finds_clap_env_attributes_with_their_lines(self):
        found = envscan.scan_text(FIXTURE)
        self.assertEqual(
            found,
            [("HTTP_ADDR", 4), ("MAX_BODY_BYTES", 6), ("AMQP_URL", 8), ("A", 11), ("B2_C", 11)],
        )

    def test_comment_lines_are_skipped(self):
        names = {name for name, _ in envscan.scan_text(FIXTURE)}
        self.assertNotIn("COMMENTED_OUT", names)
        self.assertNotIn("IN_A_DOC_COMMENT", names)

    def test_other_attributes_and_lower_case_are_not_variables(self):
        names = {name for name, _ in envscan.scan_text(FIXTURE)}
        self.assertNotIn("NOT_AN_ENV_ATTRIBUTE", names)
        self.assertNotIn("lower_case_is_not_a_variable", names)

    def test_env_var_calls_are_a_separate_pattern(self):
        found = envscan.scan_text(FIXTURE, envscan.ENV_CALL)
        self.assertEqual([name for name, _ in found], ["OTEL_SERVICE_NAME", "X_Y"])

    def test_nothing_in_empty_text(self):
        self.assertEqual(envscan.scan_text(""), [])


class ScanTreeTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = Path(self.tmp.name)

    def tearDown(self):
        self.tmp.cleanup()

    def write(self, rel, text):
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")

    def test_scans_src_of_each_crate_recursively_and_nothing_else(self):
        self.write("ingest/src/lib.rs", '#[arg(env = "INGEST_TOKEN")]\n')
        self.write("shared/src/deep/er/config.rs", '\n#[arg(env = "AMQP_URL")]\n')
        self.write("ingest/tests/api.rs", '#[arg(env = "ONLY_IN_TESTS_DIR")]\n')
        self.write("target/src/gen.rs", '#[arg(env = "BUILD_OUTPUT")]\n')
        self.write("deploy/src/x.rs", '#[arg(env = "DEPLOY_DIR")]\n')
        self.write("ingest/src/notes.txt", 'env = "NOT_RUST"\n')
        reads = envscan.scan_tree(self.root)
        self.assertEqual(
            sorted((r.name, r.crate, r.path, r.line) for r in reads),
            [
                ("AMQP_URL", "shared", "shared/src/deep/er/config.rs", 2),
                ("INGEST_TOKEN", "ingest", "ingest/src/lib.rs", 1),
            ],
        )

    def test_no_sources_no_reads(self):
        self.assertEqual(envscan.scan_tree(self.root), [])

    def test_shared_reads_belong_to_every_service_and_unknown_crates_are_reported(self):
        self.write("shared/src/lib.rs", '#[arg(env = "LOG_FORMAT")]\n')
        self.write("notifier/src/lib.rs", '#[arg(env = "SMTP_URL")]\n')
        self.write("xtask/src/main.rs", '#[arg(env = "XTASK_ONLY")]\n')
        crates = {"shared": ["ingest", "notifier"], "ingest": ["ingest"], "notifier": ["notifier"]}
        by_service, unmapped = envscan.reads_by_service(envscan.scan_tree(self.root), crates)
        self.assertEqual(sorted(by_service["ingest"]), ["LOG_FORMAT"])
        self.assertEqual(sorted(by_service["notifier"]), ["LOG_FORMAT", "SMTP_URL"])
        self.assertEqual([r.name for r in unmapped], ["XTASK_ONLY"])


if __name__ == "__main__":
    unittest.main()
