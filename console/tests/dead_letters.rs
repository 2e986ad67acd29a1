//! Looking at dead letters uses none of their delivery attempts (SPEC §4.7). The
//! console reads a `.dead` queue with `basic.get` and returns each letter unacked; a
//! quorum queue counts every return toward its delivery limit, and a `.dead` queue has
//! no dead-letter target, so a letter past the limit is dropped. RabbitMQ 4 gives every
//! quorum queue a limit of 20 unless a policy or an argument says otherwise; this
//! machine's 3.x gives none, so the test first makes its vhost behave as 4.x would
//! (`TestEnv::emulate_rabbitmq4_delivery_limit`): only what our own policy sets can
//! lift that limit.

mod common;

use common::{Console, dead_letter, dead_letter_link, letter_key};
use console::users::Role;
use shared::testing::{Broker, RABBITMQ4_DEFAULT_DELIVERY_LIMIT, WAIT, eventually};
use shared::topology::DEAD_LETTER_DELIVERY_LIMIT;

const LETTERS: [&str; 3] = ["looked-at-1", "looked-at-2", "looked-at-3"];
/// More looks than RabbitMQ 4's default limit allows returns.
const LOOKS: usize = 25;

#[tokio::test]
async fn dead_letters_looked_at_25_times_are_all_still_there() {
    const _: () = assert!(LOOKS as i64 > RABBITMQ4_DEFAULT_DELIVERY_LIMIT + 1);
    let c = Console::start(&[]).await;
    c.env.emulate_rabbitmq4_delivery_limit().await;
    c.add_user("orlova", Role::Supervisor).await;
    let (conn, channel) = dead_letter_link(&c.env).await;
    // The limit in force on the dead queue is what our policy makes of RabbitMQ 4's.
    let limit = eventually("the policy in force on the dead queue", WAIT, || async {
        let queue = c
            .env
            .management("queues/{vhost}/billing-export.dead")
            .await?;
        queue["effective_policy_definition"]["delivery-limit"].as_i64()
    })
    .await;
    assert_eq!(limit, DEAD_LETTER_DELIVERY_LIMIT);
    for id in LETTERS {
        dead_letter(&channel, id).await;
    }

    let (supervisor, csrf) = c.logged_in("orlova").await;
    let mut counted = 0;
    for look in 1..=LOOKS {
        let page = c.page(&supervisor, "/dead").await;
        for id in LETTERS {
            assert!(page.contains(id), "look {look}: {id} is gone from {page}");
        }
        let glance: serde_json::Value = supervisor
            .get(c.url("/api/v1/glance"))
            .send()
            .await
            .expect("GET /api/v1/glance")
            .json()
            .await
            .expect("JSON");
        // `null` when the broker did not answer the start page within its 3 s.
        if let Some(queues) = glance["dead_letters"].as_array() {
            let depth = queues
                .iter()
                .find(|q| q["queue"] == "billing-export")
                .and_then(|q| q["messages"].as_u64());
            assert_eq!(depth, Some(3), "look {look}: {glance}");
            counted += 1;
        }
    }
    assert!(counted > 0, "the API never counted the dead letters");
    // A re-queue returns every letter it passes on the way to the one it takes.
    let page = c.page(&supervisor, "/dead").await;
    let key = letter_key(&page, LETTERS[2]);
    let (_, body) = c.requeue_letter(&supervisor, &csrf, &key).await;
    assert!(body.contains("Возвращено в очередь: 1."), "{body}");
    let broker = Broker::connect(&c.env).await;
    let back = broker.wait_take("billing-export").await;
    assert_eq!(
        back.properties.message_id().as_ref().map(|m| m.as_str()),
        Some(LETTERS[2])
    );
    let page = c.page(&supervisor, "/dead").await;
    assert!(page.contains("Очередь billing-export: 2"), "{page}");
    for id in &LETTERS[..2] {
        assert!(page.contains(id), "{id} is gone after the re-queue: {page}");
    }
    broker.close().await;
    shared::broker::close_quietly(conn.close(200, "bye".into())).await;
    c.stop().await;
}
