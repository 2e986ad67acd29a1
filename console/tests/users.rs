//! Supervisors manage staff in the console (SPEC §4.8 "users and roles"): add a user,
//! give a new role or password, remove one (their sessions end); operators may not;
//! every change is in the audit.

mod common;

use common::{Console, PASSWORD};
use console::users::Role;

const NEW_PASSWORD: &str = "новый-пароль-петрова";
const OTHER_PASSWORD: &str = "другой-пароль-петрова";

#[tokio::test]
async fn a_supervisor_adds_changes_and_removes_staff_and_an_operator_may_not() {
    let c = Console::start(&[]).await;
    c.add_user("orlova", Role::Supervisor).await;
    c.add_user("ivanova", Role::Operator).await;
    let (supervisor, csrf) = c.logged_in("orlova").await;
    let (operator, op_csrf) = c.logged_in("ivanova").await;

    let save = |client: &reqwest::Client, fields: Vec<(&'static str, String)>| {
        let request = client.post(c.url("/users")).form(&fields);
        async move { request.send().await.expect("POST /users") }
    };
    let petrov = |role: &str, password: &str, token: &str| {
        vec![
            ("csrf", token.to_owned()),
            ("login", "Petrov".to_owned()),
            ("role", role.to_owned()),
            ("password", password.to_owned()),
        ]
    };

    // An operator is refused, a form without the session's token too, a short
    // password is refused with the reason: none of them creates the user.
    let r = save(&operator, petrov("operator", NEW_PASSWORD, &op_csrf)).await;
    assert_eq!(r.status(), 403);
    let r = save(&supervisor, petrov("operator", NEW_PASSWORD, "forged")).await;
    assert_eq!(r.status(), 403);
    let r = save(&supervisor, petrov("operator", "short", &csrf)).await;
    assert_eq!(r.status(), 400);
    assert!(
        r.text()
            .await
            .expect("body")
            .contains("не короче 10 знаков")
    );
    let r = save(&supervisor, petrov("boss", NEW_PASSWORD, &csrf)).await;
    assert_eq!(r.status(), 400);
    let fresh = c.browser();
    assert_ne!(
        c.try_login(&fresh, "petrov", NEW_PASSWORD).await.status(),
        303,
        "not created by a refused form"
    );

    // Added: the login is lower-cased, the new user can log in.
    let r = save(&supervisor, petrov("operator", NEW_PASSWORD, &csrf)).await;
    assert_eq!(r.status(), 200);
    let page = r.text().await.expect("body");
    assert!(page.contains("Сохранено: petrov."), "{page}");
    let petrov_client = c.browser();
    assert_eq!(
        c.try_login(&petrov_client, "petrov", NEW_PASSWORD)
            .await
            .status(),
        303
    );
    let r = petrov_client
        .get(c.url("/users"))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 403, "an operator does not see the staff list");

    // A new role and password: the old password no longer opens a session.
    let r = save(&supervisor, petrov("supervisor", OTHER_PASSWORD, &csrf)).await;
    assert_eq!(r.status(), 200);
    assert_ne!(
        c.try_login(&c.browser(), "petrov", NEW_PASSWORD)
            .await
            .status(),
        303
    );
    assert_eq!(
        c.try_login(&c.browser(), "petrov", OTHER_PASSWORD)
            .await
            .status(),
        303
    );

    // Nobody removes themselves; removing another ends their sessions at once.
    let remove = |client: &reqwest::Client, login: &'static str, token: &str| {
        let request = client
            .post(c.url("/users/remove"))
            .form(&[("csrf", token), ("login", login)]);
        async move { request.send().await.expect("POST /users/remove") }
    };
    let r = remove(&supervisor, "orlova", &csrf).await;
    assert_eq!(r.status(), 400);
    let r = remove(&operator, "petrov", &op_csrf).await;
    assert_eq!(r.status(), 403);
    let r = remove(&supervisor, "petrov", &csrf).await;
    assert_eq!(r.status(), 200);
    let r = petrov_client.get(c.url("/")).send().await.expect("GET /");
    assert_eq!(r.status(), 303, "the removed user's session ended");
    assert_ne!(
        c.try_login(&c.browser(), "petrov", OTHER_PASSWORD)
            .await
            .status(),
        303
    );
    // The supervisor's own session and password are untouched.
    assert_eq!(
        c.try_login(&c.browser(), "orlova", PASSWORD).await.status(),
        303
    );

    let audited: Vec<(String, String)> = sqlx::query_as(
        "SELECT action, subject FROM audit WHERE login = 'orlova'
           AND action IN ('save_user', 'remove_user') ORDER BY id",
    )
    .fetch_all(&c.pool)
    .await
    .expect("audit");
    assert_eq!(
        audited,
        [
            ("save_user".to_owned(), "petrov".to_owned()),
            ("save_user".to_owned(), "petrov".to_owned()),
            ("remove_user".to_owned(), "petrov".to_owned()),
        ]
    );
    c.stop().await;
}
