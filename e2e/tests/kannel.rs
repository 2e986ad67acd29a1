//! Issue 4's end-to-end path through a real Kannel: a message typed into the phone
//! network reaches ingest through Kannel's get-url, the validator refuses it, and the
//! reply comes back out of the fake SMSC as a UCS-2 Cyrillic SMS; a correct message
//! gets no SMS at all.

use std::time::Duration;

use e2e::{BillingDouble, Gateway, Phone, System, fixtures};

#[tokio::test]
async fn wrong_sms_gets_a_cyrillic_reply_and_a_correct_one_gets_none() {
    let billing = BillingDouble::start().await;
    let mut opts = fixtures::options(Gateway::Kannel);
    opts.billing_url = Some(billing.url.clone());
    let system = System::start(opts).await;
    let port = system.kannel.as_ref().map(|k| k.smsc_port).expect("kannel");
    let mut phone = Phone::connect(port).await;

    // A reading below the last one (45000), with Cyrillic labels typed by the resident.
    phone
        .send("79121234567", "7377", "лс 1000001 т1 44000")
        .await;
    let reply = phone
        .receive(Duration::from_secs(60))
        .await
        .unwrap_or_else(|| {
            panic!(
                "no reply came out of the fake SMSC\ningest:\n{}\nvalidator:\n{}\nnotifier:\n{}",
                system.logs("ingest"),
                system.logs("validator"),
                system.logs("notifier")
            )
        });
    assert_eq!(reply.to.trim_start_matches('+'), "79121234567");
    assert_eq!(reply.coding, "ucs-2", "one UCS-2 segment");
    // The reading typed, never the one the system holds (SPEC §3).
    assert!(
        reply.text.contains("44000") && !reply.text.contains("45000"),
        "{}",
        reply.text
    );
    assert!(
        reply.text.contains("меньше"),
        "Cyrillic intact: {}",
        reply.text
    );

    // A correct two-zone reading: accepted, pushed to billing, and no SMS.
    phone
        .send("79121234568", "7377", "1000002 045100 012100")
        .await;
    shared::testing::eventually(
        "reading pushed to billing",
        Duration::from_secs(60),
        || async { (!billing.delivered().is_empty()).then_some(()) },
    )
    .await;
    let post = billing.posts().into_iter().next().expect("a post");
    assert_eq!(post.2["account"], "1000002");
    assert_eq!(post.2["values"], serde_json::json!([45100, 12100]));
    assert_eq!(
        phone.receive(Duration::from_secs(3)).await,
        None,
        "no SMS for a correct message"
    );

    system.stop().await;
    billing.stop();
}
