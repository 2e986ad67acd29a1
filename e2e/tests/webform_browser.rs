//! The resident web form in a real browser (Chromium through chromedriver,
//! `shared::testing::browser`), at a small phone's size: fill it with the keyboard,
//! submit, and see the validator's decision on the answer page.
//!
//! `UPDATE_SCREENSHOTS=1` writes the pages' screenshots (360×640) to docs/channels/;
//! otherwise they go to a temporary directory, so a test run leaves the tree clean.

use std::path::PathBuf;

use fantoccini::Locator;
use fantoccini::key::Key;
use shared::testing::browser::{Driver, screenshots, shot, type_into, until_page_has};

use e2e::fixtures;
use e2e::system::{Gateway, System};

#[tokio::test]
async fn a_resident_fills_the_form_in_a_real_browser_and_sees_the_decision() {
    let system = System::start(fixtures::options(Gateway::Log)).await;
    let driver = Driver::start().await;
    let browser = driver.browser_sized(360, 640).await;
    let form = format!("{}/form", system.base("ingest"));
    let (shots, _tmp) =
        screenshots(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/channels"));

    // A refusal first: a two-zone meter with one reading. Its answer also shows that
    // ingest follows the decisions by now.
    browser.goto(&form).await.expect("open the form");
    until_page_has(&browser, "Передать показания счётчика", false).await;
    shot(&browser, &shots, "form").await;
    type_into(&browser, "#account", "1000002").await;
    type_into(&browser, "#t1", &format!("45100{}", Key::Enter)).await;
    let page = until_page_has(&browser, "id=\"decision\"", false).await;
    assert!(
        page.contains("Показания не приняты") || page.contains("приняты к проверке"),
        "{page}"
    );
    shot(&browser, &shots, "form-refused").await;

    // A good reading with an e-mail: accepted, on the page.
    browser.goto(&form).await.expect("open the form again");
    type_into(&browser, "#account", "1000001").await;
    type_into(&browser, "#t1", "45100").await;
    type_into(&browser, "#email", "ivan@example.ru").await;
    browser
        .find(Locator::Css("button[type=submit]"))
        .await
        .expect("the submit button")
        .click()
        .await
        .expect("submitted");
    let page = until_page_has(&browser, "Показания приняты: лицевой счёт 1000001", false).await;
    assert!(page.contains("Подтверждение придёт на e-mail"), "{page}");
    shot(&browser, &shots, "form-answer").await;

    browser.close().await.expect("browser closed");
    driver.stop().await;
    system.stop().await;
}
