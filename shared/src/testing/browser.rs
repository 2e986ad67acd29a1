//! A real browser for tests: Debian's Chromium, headless, driven through chromedriver
//! with fantoccini (installed by scripts/test.sh: `chromium`, `chromium-driver`).
//! Shared by the console's and the web form's browser tests.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;

use super::{READY_WAIT, WAIT, eventually, listening_port};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver on a port it binds itself (`--port=0`), read back from /proc: no
/// free-port guess that another test could take first.
pub struct Driver {
    child: tokio::process::Child,
    url: String,
    /// Chromium profiles (one per session attempt) and chromedriver's log.
    dir: tempfile::TempDir,
    attempts: std::sync::atomic::AtomicU32,
}

impl Driver {
    pub async fn start() -> Driver {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(bin).exists(),
                "{bin} missing: apt-get install chromium chromium-driver (scripts/test.sh does)"
            );
        }
        let dir = tempfile::tempdir().expect("profile dir");
        let child = tokio::process::Command::new(CHROMEDRIVER)
            .arg("--port=0")
            .arg(format!(
                "--log-path={}",
                dir.path().join("chromedriver.log").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let pid = child.id().expect("chromedriver pid");
        let port = listening_port(pid, "chromedriver").await;
        Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir,
            attempts: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// A headless Chromium session whose page (viewport, and so each screenshot) is
    /// `width`×`height`.
    pub async fn browser_sized(&self, width: u32, height: u32) -> Client {
        let browser = self.window_sized(width, height).await;
        // Headless Chromium keeps room for a window's frame out of --window-size
        // (1280×800 gave a 1280×657 page): grow the window by what is missing.
        let inner = browser
            .execute("return [window.innerWidth, window.innerHeight];", vec![])
            .await
            .expect("the page's size");
        let inner: Vec<u32> = serde_json::from_value(inner).expect("two numbers");
        if let [w, h] = inner[..]
            && (w, h) != (width, height)
        {
            browser
                .set_window_size(2 * width - w.min(width), 2 * height - h.min(height))
                .await
                .expect("window resized");
        }
        browser
    }

    /// A headless Chromium session with a window of `width`×`height`. Each attempt has a
    /// profile of its own: a Chromium left starting by a failed attempt (a busy machine:
    /// chromedriver gives up on it) still holds its profile's lock, and a second
    /// Chromium on the same profile would fail for that alone. On a miss the panic
    /// quotes chromedriver's log.
    async fn window_sized(&self, width: u32, height: u32) -> Client {
        let until = tokio::time::Instant::now() + READY_WAIT;
        let mut last = String::new();
        while tokio::time::Instant::now() < until {
            let n = self
                .attempts
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let profile = self.dir.path().join(format!("profile-{n}"));
            let mut builder = ClientBuilder::new(HttpConnector::new());
            builder.capabilities(capabilities(&profile, width, height));
            match tokio::time::timeout(WAIT, builder.connect(&self.url)).await {
                Ok(Ok(client)) => return client,
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = format!("no answer from chromedriver within {WAIT:?}"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        panic!(
            "no Chromium session within {READY_WAIT:?} ({} attempts; the last: {last}); chromedriver's log ends\n{}",
            self.attempts.load(std::sync::atomic::Ordering::Relaxed),
            self.log_tail()
        )
    }

    fn log_tail(&self) -> String {
        let log =
            std::fs::read_to_string(self.dir.path().join("chromedriver.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// A desktop-sized session (1280×800).
    pub async fn browser(&self) -> Client {
        self.browser_sized(1280, 800).await
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Headless Chromium's options: the flags a closed network needs (no background
/// connections, updates or sync), the window size, Russian, and `profile`.
fn capabilities(
    profile: &std::path::Path,
    width: u32,
    height: u32,
) -> serde_json::Map<String, serde_json::Value> {
    let args = [
        "--headless".to_owned(),
        "--no-sandbox".to_owned(),
        "--disable-gpu".to_owned(),
        "--disable-quic".to_owned(),
        "--no-first-run".to_owned(),
        "--disable-background-networking".to_owned(),
        "--disable-component-update".to_owned(),
        "--disable-sync".to_owned(),
        "--disable-dev-shm-usage".to_owned(),
        format!("--window-size={width},{height}"),
        "--lang=ru".to_owned(),
        format!("--user-data-dir={}", profile.display()),
    ];
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({"binary": CHROMIUM, "args": args}),
    );
    caps
}

/// Waits until the current page (reloaded by `reload`) contains `text`.
pub async fn until_page_has(browser: &Client, text: &str, reload: bool) -> String {
    eventually(&format!("the page shows {text:?}"), WAIT, || async {
        if reload {
            browser.refresh().await.ok()?;
        }
        let page = browser.source().await.ok()?;
        page.contains(text).then_some(page)
    })
    .await
}

/// Types `text` into the element `css`, once it is there.
pub async fn type_into(browser: &Client, css: &str, text: &str) {
    let field = browser
        .wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
    field.send_keys(text).await.expect("typed");
}

/// Where a browser test writes its screenshots: `docs` (a directory of the
/// repository's docs/) when `UPDATE_SCREENSHOTS=1`, else a temporary directory that is
/// removed with the returned guard, so a test run leaves the tree clean.
pub fn screenshots(docs: PathBuf) -> (PathBuf, Option<tempfile::TempDir>) {
    if std::env::var("UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(&docs).expect("the screenshots' directory");
        (docs, None)
    } else {
        let tmp = tempfile::tempdir().expect("tmp");
        (tmp.path().to_owned(), Some(tmp))
    }
}

/// Writes the page as `dir/name.png`.
pub async fn shot(browser: &Client, dir: &std::path::Path, name: &str) {
    let png = browser.screenshot().await.expect("screenshot");
    std::fs::write(dir.join(format!("{name}.png")), png).expect("screenshot written");
}
