//! Every rule of SPEC §3 through the real consumer: real RabbitMQ, real PostgreSQL.
//! Each case asserts the emitted event and the stored audit row.

mod common;

use common::{Harness, IN_WINDOW};
use shared::events::{Event, RejectReason};

fn rejected(e: &Event) -> &shared::events::ReadingRejected {
    match e {
        Event::ReadingRejected(r) => r,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

fn accepted(e: &Event) -> &shared::events::ReadingAccepted {
    match e {
        Event::ReadingAccepted(a) => a,
        other => panic!("expected an acceptance, got {other:?}"),
    }
}

#[tokio::test]
async fn every_reason_code_through_the_consumer() {
    let h = Harness::started().await;
    let cases: &[(&str, &str, RejectReason)] = &[
        ("hello", IN_WINDOW, RejectReason::Format),
        (
            "1000001 45100 ivan@@mail.ru",
            IN_WINDOW,
            RejectReason::InvalidEmail,
        ),
        (
            "1000001 45100",
            "2026-11-10T10:00:00+05:00",
            RejectReason::OutsideWindow,
        ),
        ("9999999 100", IN_WINDOW, RejectReason::UnknownAccount),
        ("1000004 100", IN_WINDOW, RejectReason::AccountClosed),
        ("1000005 100", IN_WINDOW, RejectReason::MultipleMeters),
        ("1000002 45100", IN_WINDOW, RejectReason::ZoneMismatch),
        ("1000001 123456", IN_WINDOW, RejectReason::TooManyDigits),
        ("1000001 44000", IN_WINDOW, RejectReason::ReadingDecreased),
        ("1000001 60000", IN_WINDOW, RejectReason::Implausible),
    ];
    for (i, (text, at, _)) in cases.iter().enumerate() {
        h.send(&format!("case-{i}"), &format!("+7900000000{i}"), text, at)
            .await;
    }
    for (i, (text, _, reason)) in cases.iter().enumerate() {
        let id = format!("case-{i}");
        let event = h.event_for(&id).await;
        let r = rejected(&event);
        assert_eq!(r.reason, *reason, "{text}");
        let reply = r
            .reply
            .as_deref()
            .expect("a reply for every reason but rate_limited");
        assert!(reply.encode_utf16().count() <= 134, "{reply}");
        assert_eq!(r.from, format!("+7900000000{i}"));
        let audit = h.audit(&id).await.expect("audit row");
        assert_eq!(
            audit,
            ("rejected".to_owned(), Some(reason.as_str().to_owned())),
            "{text}"
        );
    }
    // Account known to the parser is carried on the rejection.
    h.finish().await;
}

#[tokio::test]
async fn rate_limit_refuses_silently_past_the_hourly_count() {
    let h = Harness::started().await;
    // RATE_LIMIT_PER_HOUR = 3 in the harness; messages 10 minutes apart.
    for (i, minute) in ["10:00", "10:10", "10:20", "10:30"].iter().enumerate() {
        let at = format!("2026-11-20T{minute}:00+05:00");
        h.send(
            &format!("rl-{i}"),
            "+79005550000",
            &format!("0000007 {}", 100 + i),
            &at,
        )
        .await;
        // Wait for each outcome so the audit count is deterministic.
        let _ = h.event_for(&format!("rl-{i}")).await;
    }
    let fourth = h.audit("rl-3").await.expect("audit");
    assert_eq!(
        fourth,
        ("rejected".to_owned(), Some("rate_limited".to_owned()))
    );
    let reply: Option<String> =
        sqlx::query_scalar("SELECT reply FROM messages WHERE message_id = 'rl-3'")
            .fetch_one(&h.pool)
            .await
            .expect("q");
    assert_eq!(reply, None, "no SMS for rate_limited");
    // Once only two of their messages are within the hour, the sender may send again.
    h.send(
        "rl-4",
        "+79005550000",
        "0000007 200",
        "2026-11-20T11:25:00+05:00",
    )
    .await;
    assert!(matches!(
        h.event_for("rl-4").await,
        Event::ReadingAccepted(_)
    ));
    h.finish().await;
}

#[tokio::test]
async fn rate_limited_event_carries_no_reply() {
    let h = Harness::started().await;
    // Format comes first in the order of checks (SPEC §3), so junk keeps being
    // answered as a format error; the notifier's per-number cap bounds that cost.
    for i in 0..4 {
        h.send(&format!("x-{i}"), "+79005551111", "junk", IN_WINDOW)
            .await;
        let e = h.event_for(&format!("x-{i}")).await;
        assert_eq!(rejected(&e).reason, RejectReason::Format);
    }
    h.send("x-ok", "+79005551111", "0000007 300", IN_WINDOW)
        .await;
    let e = h.event_for("x-ok").await;
    let r = rejected(&e);
    assert_eq!(r.reason, RejectReason::RateLimited);
    assert_eq!(r.reply, None);
    assert_eq!(r.account.as_deref(), Some("0000007"));
    h.finish().await;
}

#[tokio::test]
async fn accepted_readings_single_two_three_zones_and_rollover() {
    let h = Harness::started().await;
    h.send(
        "a1",
        "+79001000001",
        "лс 1000001 т1=45100,7 ivan.petrov+meter@mail.ru",
        IN_WINDOW,
    )
    .await;
    h.send("a2", "+79001000002", "1000002 д:045200 н:012100", IN_WINDOW)
        .await;
    h.send("a3", "+79001000003", "1000003#1#2#3", IN_WINDOW)
        .await;
    h.send("a4", "+79001000004", "1000006 20", IN_WINDOW).await;
    h.send("a5", "+79001000005", "0000007 00000", IN_WINDOW)
        .await;
    let a1 = h.event_for("a1").await;
    let a1 = accepted(&a1);
    assert_eq!(
        (a1.account.as_str(), a1.meter.as_str(), a1.values.as_slice()),
        ("1000001", "M1", &[45100][..])
    );
    assert_eq!(a1.period.to_string(), "2026-11");
    assert_eq!(a1.email.as_deref(), Some("ivan.petrov+meter@mail.ru"));
    assert_eq!(a1.supersedes, None);
    let a2 = h.event_for("a2").await;
    assert_eq!(accepted(&a2).values, vec![45200, 12100]);
    let a3 = h.event_for("a3").await;
    assert_eq!(accepted(&a3).values, vec![1, 2, 3]);
    let a4 = h.event_for("a4").await;
    assert_eq!(accepted(&a4).values, vec![20], "rollover from 99950");
    let a5 = h.event_for("a5").await;
    assert_eq!(accepted(&a5).account, "0000007", "leading zeros kept");
    for id in ["a1", "a2", "a3", "a4", "a5"] {
        assert_eq!(h.audit(id).await, Some(("accepted".to_owned(), None)));
    }
    h.finish().await;
}

#[tokio::test]
async fn later_reading_supersedes_and_duplicates_change_nothing() {
    let h = Harness::started().await;
    h.send("s1", "+79002000001", "1000001 45100", IN_WINDOW)
        .await;
    let first = h.event_for("s1").await;
    let first_id = accepted(&first).reading_id;
    // A correction in the same period is compared with October, not with 45100.
    h.send(
        "s2",
        "+79002000001",
        "1000001 45050",
        "2026-11-21T09:00:00+05:00",
    )
    .await;
    let second = h.event_for("s2").await;
    let second = accepted(&second);
    assert_eq!(second.supersedes, Some(first_id));
    let superseded_by: Option<uuid::Uuid> =
        sqlx::query_scalar("SELECT superseded_by FROM readings WHERE reading_id = $1")
            .bind(first_id)
            .fetch_one(&h.pool)
            .await
            .expect("q");
    assert_eq!(superseded_by, Some(second.reading_id));

    // The same message delivered twice: processed once.
    h.send(
        "s2",
        "+79002000001",
        "1000001 45050",
        "2026-11-21T09:00:00+05:00",
    )
    .await;
    h.send(
        "s3",
        "+79002000001",
        "1000001 45060",
        "2026-11-21T10:00:00+05:00",
    )
    .await;
    let next = h.event_for("s3").await;
    assert_eq!(accepted(&next).supersedes, Some(second.reading_id));
    assert!(
        h.captured_now().await.is_empty(),
        "no event for the duplicate"
    );
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM messages WHERE message_id = 's2'")
        .fetch_one(&h.pool)
        .await
        .expect("q");
    assert_eq!(count, 1);
    let readings: i64 =
        sqlx::query_scalar("SELECT count(*) FROM readings WHERE account = '1000001'")
            .fetch_one(&h.pool)
            .await
            .expect("q");
    assert_eq!(readings, 3);
    h.finish().await;
}

#[tokio::test]
async fn window_edges_in_the_company_zone() {
    let h = Harness::started().await;
    let cases = [
        ("w1", "2026-11-14T23:59:00+05:00", false),
        ("w2", "2026-11-15T00:00:00+05:00", true),
        ("w3", "2026-11-25T23:59:00+05:00", true),
        ("w4", "2026-11-26T00:00:00+05:00", false),
        ("w5", "2026-11-14T19:30:00Z", true),
    ];
    for (i, (id, at, _)) in cases.iter().enumerate() {
        h.send(
            id,
            &format!("+7901000000{i}"),
            &format!("0000007 {}", 10 + i),
            at,
        )
        .await;
        let _ = h.event_for(id).await;
    }
    for (id, at, inside) in cases {
        let audit = h.audit(id).await.expect("audit");
        if inside {
            assert_eq!(audit.0, "accepted", "{at}");
        } else {
            assert_eq!(audit.1.as_deref(), Some("outside_window"), "{at}");
        }
    }
    h.finish().await;
}

#[tokio::test]
async fn poison_and_foreign_messages_are_dead_lettered_without_blocking() {
    let h = Harness::started().await;
    h.broker.publish_raw("sms.received", b"{not json").await;
    h.send("after-poison", "+79003000001", "0000007 5", IN_WINDOW)
        .await;
    assert!(matches!(
        h.event_for("after-poison").await,
        Event::ReadingAccepted(_)
    ));
    let dead = h.broker.wait_take("validator.dead").await;
    assert_eq!(dead.body, b"{not json");
    h.finish().await;
}

/// SPEC §3: whatever bytes a gateway passes in the text, the message is decided and
/// audited. A NUL is a separator to the grammar (decided on the text as received) and
/// `␀` in the audit (a text column cannot hold NUL); its batch-mates are stored as
/// usual and nothing is dead-lettered.
#[tokio::test]
async fn texts_with_nul_bytes_are_decided_and_audited_with_their_batch_mates() {
    let mut h = Harness::prepared().await;
    // Published before the validator starts, so that they arrive as one batch.
    h.send("nul-mate-1", "+79003100001", "0000007 5", IN_WINDOW)
        .await;
    h.send(
        "nul-accepted",
        "+79003100002",
        "1000001\u{0}45100",
        IN_WINDOW,
    )
    .await;
    h.send("nul-format", "+79003100003", "\u{0}\u{0}abc", IN_WINDOW)
        .await;
    h.send("nul-mate-2", "+79003100004", "1000006 99960", IN_WINDOW)
        .await;
    h.start().await;

    let accepted_event = h.event_for("nul-accepted").await;
    assert_eq!(accepted(&accepted_event).values, vec![45100]);
    let format = h.event_for("nul-format").await;
    let refusal = rejected(&format);
    assert_eq!(refusal.reason, RejectReason::Format);
    let reply = refusal
        .reply
        .as_deref()
        .expect("a format error is answered");
    assert!(!reply.contains('\u{0}'), "{reply:?}");
    for mate in ["nul-mate-1", "nul-mate-2"] {
        assert!(
            matches!(h.event_for(mate).await, Event::ReadingAccepted(_)),
            "{mate}"
        );
    }

    let body = |id: &'static str| {
        let pool = h.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT body FROM messages WHERE message_id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .expect("audited")
        }
    };
    assert_eq!(body("nul-accepted").await, "1000001\u{2400}45100");
    assert_eq!(body("nul-format").await, "\u{2400}\u{2400}abc");
    assert_eq!(
        h.audit("nul-format").await,
        Some(("rejected".to_owned(), Some("format".to_owned())))
    );
    assert!(
        h.broker.take("validator.dead").await.is_none(),
        "nothing dead-lettered"
    );
    h.finish().await;
}

/// SPEC §5: a message the database refuses for good (here an `sms.received` from a
/// foreign publisher whose sender holds a NUL: SQLSTATE 22021) is dead-lettered at
/// once, alone, with the reason; the other messages of its batch are stored.
#[tokio::test]
async fn a_message_the_database_refuses_is_dead_lettered_alone() {
    let mut h = Harness::prepared().await;
    let mates = ["refused-mate-1", "refused-mate-2", "refused-mate-3"];
    h.send(mates[0], "+79003200001", "0000007 5", IN_WINDOW)
        .await;
    h.send(mates[1], "+79003200002", "1000001 45100", IN_WINDOW)
        .await;
    h.send("refused", "+7900\u{0}3200009", "1000006 99960", IN_WINDOW)
        .await;
    h.send(mates[2], "+79003200003", "1000004 1", IN_WINDOW)
        .await;
    h.start().await;

    for mate in mates {
        let _ = h.event_for(mate).await;
        assert!(h.audit(mate).await.is_some(), "{mate} audited");
    }
    let dead = h.broker.wait_take("validator.dead").await;
    assert_eq!(dead.event().message_id(), "refused");
    let reason = dead
        .header(shared::consumer::ERROR_HEADER)
        .expect("the reason");
    assert!(
        reason.contains("storing the outcome") && reason.contains("0x00"),
        "{reason}"
    );
    assert_eq!(
        shared::broker::header_int(&dead.headers, shared::consumer::ATTEMPT_HEADER),
        Some(1),
        "dead-lettered on its first attempt, not after retries"
    );
    assert!(h.audit("refused").await.is_none());
    assert!(
        h.broker.take("validator.dead").await.is_none(),
        "only the refused message is dead-lettered"
    );
    h.finish().await;
}

/// SPEC §4.7: the audit and the readings older than `RETENTION_DAYS` are purged at
/// start (and daily) — except a meter's latest reading, the base the next one is
/// checked against — and the rows counted.
#[tokio::test]
async fn rows_past_the_retention_period_are_purged_but_the_latest_reading() {
    let mut h = Harness::prepared().await;
    sqlx::raw_sql(
        "INSERT INTO messages (message_id, sender, recipient, body, received_at, channel, outcome)
         VALUES ('old', '+79001234567', '7377', '1000001 45000', now() - interval '1096 days', 'sms', 'accepted'),
                ('new', '+79001234567', '7377', '1000001 45000', now() - interval '1094 days', 'sms', 'accepted');
         INSERT INTO readings (reading_id, message_id, account, meter, period, readings, received_at)
         VALUES (gen_random_uuid(), 'older', '1000001', 'M1', '2023-10', '{44000}', now() - interval '1130 days'),
                (gen_random_uuid(), 'latest', '1000001', 'M1', '2023-11', '{44500}', now() - interval '1100 days'),
                (gen_random_uuid(), 'other', '1000002', 'M2', '2023-11', '{1,2}', now() - interval '1094 days');",
    )
    .execute(&h.pool)
    .await
    .expect("rows");
    h.start().await;
    for table in ["messages", "readings"] {
        common::eventually_metric(&h, table, 1.0).await;
    }
    let audit: Vec<String> = sqlx::query_scalar("SELECT message_id FROM messages ORDER BY 1")
        .fetch_all(&h.pool)
        .await
        .expect("audit");
    assert_eq!(audit, ["new"]);
    let readings: Vec<String> = sqlx::query_scalar("SELECT message_id FROM readings ORDER BY 1")
        .fetch_all(&h.pool)
        .await
        .expect("readings");
    assert_eq!(readings, ["latest", "other"]);
    h.finish().await;
}

/// SPEC §4.7: the validator keeps no e-mail address in full once the event carrying
/// it is on its way: the reading's and the audited text's are masked.
#[tokio::test]
async fn an_accepted_address_is_kept_masked() {
    let h = Harness::started().await;
    h.send(
        "with-email",
        "+79003300001",
        "1000001 45100 ivan.petrov@mail.ru",
        IN_WINDOW,
    )
    .await;
    let event = h.event_for("with-email").await;
    assert_eq!(
        accepted(&event).email.as_deref(),
        Some("ivan.petrov@mail.ru"),
        "the event carries the address for the confirmation"
    );
    let (email, body): (Option<String>, String) = sqlx::query_as(
        "SELECT r.email, m.body FROM readings r JOIN messages m USING (message_id) WHERE message_id = $1",
    )
    .bind("with-email")
    .fetch_one(&h.pool)
    .await
    .expect("stored");
    assert_eq!(email.as_deref(), Some("i***@mail.ru"));
    assert_eq!(body, "1000001 45100 i***@mail.ru");
    h.finish().await;
}

/// SPEC §3: `reading_decreased` compares with the last accepted reading of an earlier
/// period — November's accepted reading in December, not the registry's October
/// baseline — and a correction within a period may go below the reading it corrects.
#[tokio::test]
async fn a_decrease_is_judged_against_the_last_accepted_reading_of_an_earlier_period() {
    let h = Harness::started().await;
    // Registry baseline for 1000001: October 45000.
    h.send("nov", "+79003000001", "1000001 45100", IN_WINDOW)
        .await;
    accepted(&h.event_for("nov").await);
    // December, below November's 45100 though above October's 45000: refused.
    let dec = "2026-12-20T10:00:00+05:00";
    h.send("dec-1", "+79003000001", "1000001 45050", dec).await;
    let refused = h.event_for("dec-1").await;
    let refused = rejected(&refused);
    assert_eq!(refused.reason, RejectReason::ReadingDecreased);
    let reply = refused.reply.as_deref().unwrap_or_default();
    assert!(
        reply.contains("45050") && !reply.contains("45100") && !reply.contains("45000"),
        "the typed reading only: {reply}"
    );
    // December 45300, then corrected down to 45200: compared with November, accepted.
    h.send("dec-2", "+79003000001", "1000001 45300", dec).await;
    let first = accepted(&h.event_for("dec-2").await).reading_id;
    h.send(
        "dec-3",
        "+79003000001",
        "1000001 45200",
        "2026-12-21T10:00:00+05:00",
    )
    .await;
    let correction = h.event_for("dec-3").await;
    let correction = accepted(&correction);
    assert_eq!(correction.values, vec![45200]);
    assert_eq!(correction.supersedes, Some(first));
    h.finish().await;
}
