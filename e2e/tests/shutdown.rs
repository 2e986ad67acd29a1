//! SIGTERM in the middle of work, on the real binaries: the service finishes what it
//! holds, acks it, and exits 0; nothing is redelivered or sent twice afterwards.

use std::time::Duration;

use e2e::{BillingDouble, Gateway, System, fixtures};
use shared::testing::eventually;

use shared::testing::WAIT;

#[tokio::test]
async fn sigterm_mid_send_finishes_acks_and_exits_zero() {
    let sms = BillingDouble::start().await;
    let mut opts = fixtures::options(Gateway::Http(sms.url.clone()));
    opts.env.push(("SEND_TIMEOUT_SECONDS".into(), "20".into()));
    let mut system = System::start(opts).await;

    // A slow SMS gateway: the notifier will be in the middle of sending.
    sms.delay(Duration::from_secs(2));
    assert_eq!(
        system
            .post_sms("slow-1", "+79000001001", "1000001 44000")
            .await,
        202
    );
    eventually("notifier sending", WAIT, || async {
        (sms.started() == 1).then_some(())
    })
    .await;

    let status = system.terminate("notifier").await.expect("notifier exited");
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(
        sms.posts().len(),
        1,
        "the send in progress was finished before exit"
    );
    // The management API refreshes queue statistics every few seconds: wait for them to
    // show the queue empty (an unacked message would keep it at 1 until the deadline).
    eventually("notifier queue empty: acked before exit", WAIT, || async {
        (system.env.queue_depth("notifier").await? == 0).then_some(())
    })
    .await;

    // A new notifier finds nothing to redo.
    sms.delay(Duration::from_millis(0));
    system.spawn("notifier").await;
    system.wait_ready("notifier").await;
    assert_eq!(
        system
            .post_sms("after-1", "+79000001002", "1000001 44000")
            .await,
        202
    );
    eventually("the next reply", WAIT, || async {
        (sms.posts().len() == 2).then_some(())
    })
    .await;
    let to: Vec<String> = sms
        .posts()
        .iter()
        .map(|p| p.2["to"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(to, ["+79000001001", "+79000001002"], "each answered once");

    // Every service stops cleanly on SIGTERM.
    for service in ["ingest", "validator", "notifier", "billing-export"] {
        let status = system.terminate(service).await.expect("exited");
        assert!(status.success(), "{service}: {status:?}");
    }
    system.stop().await;
    sms.stop();
}
