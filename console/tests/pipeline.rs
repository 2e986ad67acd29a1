//! What crosses the broker: a paper slip through the real validator, and the
//! re-queue of dead letters.

mod common;

use common::{Console, dead_letter, dead_letter_link, hidden, letter_key, validator_config};
use console::users::Role;
use shared::testing::{Broker, Service, WAIT, eventually};

#[tokio::test]
async fn a_paper_slip_goes_through_the_validator_and_the_operator_sees_its_decision() {
    let c = Console::start(&[]).await;
    c.add_user("ivanova", Role::Operator).await;
    sqlx::query(
        "INSERT INTO validator.meters (account, meter, zones, digits, status)
         VALUES ('1000001', 'M-1', 2, 6, 'active')",
    )
    .execute(&c.owners)
    .await
    .expect("meter");
    let validator = Service::start(
        "validator",
        |addr| validator_config(&c.env, addr),
        validator::run,
    )
    .await;
    let (client, csrf) = c.logged_in("ivanova").await;

    // Two slips one after the other: one right, one with a zone missing.
    let mut ids = Vec::new();
    for (account, t1, t2) in [("1000001", "45100", "21100"), ("1000001", "45200", "")] {
        let form = c.page(&client, "/paper").await;
        let slip = hidden(&form, "slip").expect("a slip id in the form");
        ids.push(slip.clone());
        let r = client
            .post(c.url("/paper"))
            .form(&[
                ("csrf", csrf.as_str()),
                ("slip", &slip),
                ("account", account),
                ("t1", t1),
                ("t2", t2),
                ("t3", ""),
            ])
            .send()
            .await
            .expect("POST /paper");
        assert_eq!(r.status(), 303, "slip accepted for publishing");
    }
    let recent = eventually("both slips decided", WAIT, || async {
        let page = client
            .get(c.url("/paper/recent"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        (!page.contains("data-pending")).then_some(page)
    })
    .await;
    assert!(recent.contains("1000001 45100 21100"), "{recent}");
    assert!(recent.contains("принято"), "{recent}");
    assert!(
        recent.contains("отклонено: число показаний не равно числу тарифных зон"),
        "{recent}"
    );
    let (channel, outcome): (String, String) = sqlx::query_as(
        "SELECT channel, outcome FROM validator.messages WHERE body = '1000001 45100 21100'",
    )
    .fetch_one(&c.owners)
    .await
    .expect("the validator's audit");
    assert_eq!((channel.as_str(), outcome.as_str()), ("paper", "accepted"));
    let refused = c.page(&client, &format!("/messages/{}", ids[1])).await;
    assert!(
        refused.contains("бумажный бланк: SMS не отправляется"),
        "{refused}"
    );
    // A slip shown twice (a double submit) is one message.
    let form = c.page(&client, "/paper").await;
    let slip = hidden(&form, "slip").expect("slip");
    for _ in 0..2 {
        client
            .post(c.url("/paper"))
            .form(&[
                ("csrf", csrf.as_str()),
                ("slip", &slip),
                ("account", "1000001"),
                ("t1", "45300"),
                ("t2", "21300"),
            ])
            .send()
            .await
            .expect("POST");
    }
    let timeline = eventually("the slip decided", WAIT, || async {
        let page = client
            .get(c.url(&format!("/messages/{slip}")))
            .send()
            .await
            .ok()?;
        (page.status() == 200).then_some(())?;
        page.text().await.ok()
    })
    .await;
    assert!(
        timeline.contains("бумажный бланк, ввёл(а) ivanova"),
        "{timeline}"
    );
    let copies: i64 =
        sqlx::query_scalar("SELECT count(*) FROM validator.messages WHERE message_id = $1")
            .bind(&slip)
            .fetch_one(&c.owners)
            .await
            .expect("count");
    assert_eq!(copies, 1);
    // Bad input is answered on the form, and nothing is published.
    let r = client
        .post(c.url("/paper"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("slip", &console::paper::new_id()),
            ("account", "10a"),
            ("t1", "1"),
        ])
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 422);
    assert!(
        r.text()
            .await
            .expect("body")
            .contains("лицевой счёт — только цифры")
    );
    validator.stop().await;
    c.stop().await;
}

#[tokio::test]
async fn a_supervisor_requeues_dead_letters_once_and_an_operator_is_refused() {
    let c = Console::start(&[]).await;
    c.add_user("orlova", Role::Supervisor).await;
    c.add_user("ivanova", Role::Operator).await;
    let broker = Broker::connect(&c.env).await;
    let (conn, channel) = dead_letter_link(&c.env).await;
    for id in ["dead-1", "dead-2", "dead-3"] {
        dead_letter(&channel, id).await;
    }

    let (operator, op_csrf) = c.logged_in("ivanova").await;
    let r = operator.get(c.url("/dead")).send().await.expect("GET");
    assert_eq!(r.status(), 403);
    let r = operator
        .post(c.url("/dead/requeue"))
        .form(&[("csrf", op_csrf.as_str()), ("queue", "billing-export")])
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 403);

    let r = operator.get(c.url("/users")).send().await.expect("GET");
    assert_eq!(r.status(), 403, "operators do not see the staff list");

    let (supervisor, csrf) = c.logged_in("orlova").await;
    let staff = c.page(&supervisor, "/users").await;
    assert!(
        staff.contains("<td>ivanova</td><td>оператор</td>")
            && staff.contains("<td>orlova</td><td>руководитель</td>"),
        "{staff}"
    );
    let page = c.page(&supervisor, "/dead").await;
    assert!(page.contains("Очередь billing-export: 3"), "{page}");
    assert!(page.contains("billing answered 400: bad period"), "{page}");
    assert!(page.contains("dead-2"), "{page}");
    let key = letter_key(&page, "dead-1");
    // Two clicks on one letter: one re-queue.
    for expected in ["Возвращено в очередь: 1.", "уже возвращены"] {
        let (status, body) = c.requeue_letter(&supervisor, &csrf, &key).await;
        assert_eq!(status, 200);
        assert!(body.contains(expected), "{expected} in {body}");
    }
    let back = broker.wait_take("billing-export").await;
    assert_eq!(
        back.properties.message_id().as_ref().map(|m| m.as_str()),
        Some("dead-1")
    );
    assert!(
        back.header("x-requeue-id").is_some(),
        "a re-queued copy is marked"
    );
    assert!(
        back.header("x-attempt").is_none(),
        "its attempts start again"
    );
    assert!(broker.take("billing-export").await.is_none(), "only once");

    // The rest at once.
    let r = supervisor
        .post(c.url("/dead/requeue"))
        .form(&[("csrf", csrf.as_str()), ("queue", "billing-export")])
        .send()
        .await
        .expect("POST");
    assert!(
        r.text()
            .await
            .expect("body")
            .contains("Возвращено в очередь: 2.")
    );
    let mut ids = Vec::new();
    for _ in 0..2 {
        let m = broker.wait_take("billing-export").await;
        ids.extend(
            m.properties
                .message_id()
                .as_ref()
                .map(|m| m.as_str().to_owned()),
        );
    }
    ids.sort();
    assert_eq!(ids, ["dead-2", "dead-3"]);
    eventually("the dead queue empty", WAIT, || async {
        (broker.take("billing-export.dead").await.is_none()).then_some(())
    })
    .await;
    let audited: Vec<(String, String)> = sqlx::query_as(
        "SELECT login, action FROM audit WHERE action IN ('requeue', 'requeue_all') ORDER BY id",
    )
    .fetch_all(&c.pool)
    .await
    .expect("audit");
    assert_eq!(
        audited,
        [
            ("orlova".into(), "requeue".into()),
            ("orlova".into(), "requeue".into()),
            ("orlova".into(), "requeue_all".into())
        ]
    );
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM requeued")
        .fetch_one(&c.pool)
        .await
        .expect("count");
    assert_eq!(recorded, 3);
    shared::broker::close_quietly(conn.close(200, "bye".into())).await;
    broker.close().await;
    c.stop().await;
}
