//! The pages, server-rendered with maud (no template files, no front-end build):
//! Russian, plain CSS, every control reachable with Tab and Enter.

use chrono_tz::Tz;
use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::dead::Letter;
use crate::records::{Delivery, Found, Message, Meter, Reading, Timeline};
use crate::search::Query;
use crate::session::Session;
use crate::users::Role;
use crate::words;

mod glance;
pub use glance::{Glance, glance};

/// The page's frame: the header with the search box and the menu.
pub fn layout(title: &str, session: Option<&Session>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="ru" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — консоль показаний" }
                link rel="stylesheet" href="/static/console.css";
            }
            body {
                @if let Some(s) = session {
                    header {
                        nav {
                            a href="/" { "Обзор" }
                            a href="/paper" accesskey="b" { "Бумажные бланки" }
                            @if s.role == Role::Supervisor {
                                a href="/dead" { "Ошибочные сообщения" }
                                a href="/users" { "Сотрудники" }
                            }
                        }
                        form.search action="/search" method="get" role="search" {
                            label for="q" { "Поиск" }
                            input #q type="search" name="q" accesskey="s"
                                placeholder="телефон, лицевой счёт или номер сообщения";
                            button type="submit" { "Найти" }
                        }
                        form.logout action="/logout" method="post" {
                            span.who { (s.login) " (" (s.role.title()) ")" }
                            input type="hidden" name="csrf" value=(s.csrf);
                            button type="submit" { "Выйти" }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

pub fn login(csrf: &str, error: Option<&str>) -> Markup {
    layout(
        "Вход",
        None,
        html! {
            @if let Some(e) = error { p.error role="alert" { (e) } }
            form.login action="/login" method="post" {
                input type="hidden" name="csrf" value=(csrf);
                label for="username" { "Логин" }
                input #username name="username" autocomplete="username" required autofocus;
                label for="password" { "Пароль" }
                input #password name="password" type="password" autocomplete="current-password" required;
                button type="submit" { "Войти" }
            }
        },
    )
}

pub fn error(session: Option<&Session>, title: &str, text: &str) -> Markup {
    layout(title, session, html! { p.error role="alert" { (text) } })
}

fn decision(m: &Message) -> Markup {
    html! {
        @if m.outcome == "accepted" {
            span.ok { "принято" }
        } @else {
            span.bad { "отклонено: " (words::reason(m.reason.as_deref().unwrap_or(""))) }
        }
    }
}

fn messages_table(messages: &[Message], zone: Tz) -> Markup {
    html! {
        @if messages.is_empty() {
            p { "Сообщений нет." }
        } @else {
            table {
                thead { tr { th { "Получено" } th { "Канал" } th { "Отправитель" } th { "Текст" } th { "Решение" } } }
                tbody {
                    @for m in messages {
                        tr {
                            td { a href={ "/messages/" (urlencode(&m.message_id)) } { (words::time(m.received_at, zone)) } }
                            td { (words::channel(&m.channel)) }
                            td { (shown_sender(m)) }
                            td.text { (m.body) }
                            td { (decision(m)) }
                        }
                    }
                }
            }
        }
    }
}

fn shown_sender(m: &Message) -> String {
    if m.channel == "paper" {
        "бланк".into()
    } else {
        m.sender.clone()
    }
}

pub fn search(session: &Session, q: &str, found: &Found, zone: Tz) -> Markup {
    layout(
        "Поиск",
        Some(session),
        html! {
            p.query {
                "Искали «" (q) "» как: "
                @for (i, query) in found.queries.iter().enumerate() {
                    @if i > 0 { ", " }
                    @match query {
                        Query::Phone(p) => { "телефон " strong { (p) } }
                        Query::Account(a) => { "лицевой счёт " strong { (a) } }
                        Query::MessageId(id) => { "номер сообщения " strong { (id) } }
                    }
                }
                @if found.queries.is_empty() { "ничего: введите телефон, счёт или номер сообщения" }
            }
            @for a in &found.accounts {
                p { "Лицевой счёт: " a href={ "/accounts/" (urlencode(a)) } { (a) } }
            }
            h2 { "Сообщения" }
            (messages_table(&found.messages, zone))
        },
    )
}

fn delivery_line(d: Option<&Delivery>, none: &str, zone: Tz) -> Markup {
    html! {
        @match d {
            Some(d) => {
                (words::delivery(&d.state))
                " (" (d.recipient) ")"
                @if let Some(at) = d.sent_at { ", " (words::time(at, zone)) }
                @else { ", " (words::time(d.updated_at, zone)) }
                @if let Some(detail) = &d.detail { br; small { (detail) } }
                @if let Some(report) = &d.report {
                    br;
                    strong { (words::report(report)) }
                    @if let Some(at) = d.reported_at { ", " (words::time(at, zone)) }
                    @if let Some(detail) = &d.report_detail { " " small { "(" (detail) ")" } }
                }
            }
            None => { (none) }
        }
    }
}

pub fn timeline(session: &Session, t: &Timeline, zone: Tz) -> Markup {
    let m = &t.message;
    layout(
        "Сообщение",
        Some(session),
        html! {
            ol.timeline {
                li {
                    time { (words::time(m.received_at, zone)) }
                    div {
                        strong { "Получено" } " — " (words::channel(&m.channel))
                        @if m.channel == "paper" {
                            @if let Some(who) = &t.entered_by { ", ввёл(а) " (who) }
                        } @else { ", с номера " (m.sender) " на " (m.recipient) }
                        pre.text { (m.body) }
                        small { "номер сообщения " code { (m.message_id) } }
                    }
                }
                li {
                    time { (words::time(m.processed_at, zone)) }
                    div {
                        strong { "Решение: " } (decision(m))
                        @if let Some(a) = &m.account {
                            br; "Лицевой счёт " a href={ "/accounts/" (urlencode(a)) } { (a) }
                        }
                        @if let Some(r) = &t.reading {
                            br; "Счётчик " (r.meter) ", период " (r.period) ": " (values(&r.vals))
                        }
                        @if let Some(s) = &t.superseded_by {
                            br; "Заменено более поздним показанием от " (words::time(s.received_at, zone))
                            " (" a href={ "/messages/" (urlencode(&s.message_id)) } { "сообщение" } ")"
                        }
                    }
                }
                @if m.outcome != "accepted" {
                    li {
                        time { @if let Some(d) = &t.reply { (words::time(d.created_at, zone)) } }
                        div {
                            strong { "Ответ SMS: " }
                            @match &m.reply {
                                Some(text) if m.channel == "paper" => {
                                    "«" (text) "»" br; "бумажный бланк: SMS не отправляется, сообщите причину заявителю"
                                }
                                Some(text) => { "«" (text) "»" br; (delivery_line(t.reply.as_ref(), "ещё не обработан", zone)) }
                                None => { "не положен" }
                            }
                        }
                    }
                }
                @if let Some(r) = &t.reading {
                    li {
                        time { @if let Some(d) = &t.email { (words::time(d.created_at, zone)) } }
                        div {
                            strong { "E-mail: " }
                            @if r.with_email {
                                (delivery_line(t.email.as_ref(), "ещё не обработан", zone))
                            } @else { "адрес не указан" }
                        }
                    }
                    li {
                        time { @if let Some(b) = &t.billing { (words::time(b.stored_at, zone)) } }
                        div {
                            strong { "Биллинг: " }
                            @match &t.billing {
                                Some(b) => {
                                    (words::billing(&b.delivery))
                                    @if let Some(at) = b.delivered_at { ", " (words::time(at, zone)) }
                                    ", попыток: " (b.attempts)
                                    @if let Some(s) = b.last_status { ", последний ответ HTTP " (s) }
                                    @if let Some(e) = &b.last_error { br; small { (e) } }
                                }
                                None => { "ещё не получено billing-export" }
                            }
                        }
                    }
                }
            }
        },
    )
}

pub fn values(vals: &[i64]) -> Markup {
    let names = words::zones(vals.len());
    html! {
        @for (i, v) in vals.iter().enumerate() {
            @if i > 0 { ", " }
            (names.get(i).copied().unwrap_or("")) " " strong { (v) }
        }
    }
}

/// A period without an accepted reading, and how billing estimates it.
pub struct Missing {
    pub meter: String,
    pub period: String,
    pub months_missing: i64,
}

pub struct AccountView<'a> {
    pub account: &'a str,
    pub meters: &'a [Meter],
    pub current: &'a [Reading],
    pub readings: &'a [Reading],
    pub messages: &'a [Message],
    pub missing: &'a [Missing],
}

pub fn account(session: &Session, a: &AccountView<'_>, zone: Tz) -> Markup {
    layout(
        &format!("Лицевой счёт {}", a.account),
        Some(session),
        html! {
            @if a.meters.is_empty() { p.error { "Счёта нет в реестре." } }
            h2 { "Счётчики" }
            table {
                thead { tr { th { "Счётчик" } th { "Зон" } th { "Разрядов" } th { "Состояние" } th { "Текущее показание" } } }
                tbody {
                    @for m in a.meters {
                        tr {
                            td { (m.meter) }
                            td { (m.zones) }
                            td { (m.digits) }
                            td { @if m.status == "active" { "действует" } @else { "закрыт" } }
                            td {
                                @if let Some(r) = a.current.iter().find(|r| r.meter == m.meter) {
                                    (values(&r.vals)) " (" (r.period) ")"
                                } @else if let Some(v) = &m.baseline_values {
                                    (values(v)) " (из биллинга, " (m.baseline_period.clone().unwrap_or_default()) ")"
                                } @else { "нет" }
                            }
                        }
                    }
                }
            }
            h2 { "Периоды без показаний" }
            @if a.missing.is_empty() { p { "Нет." } } @else {
                table {
                    thead { tr { th { "Счётчик" } th { "Период" } th { "Месяцев подряд" } th { "Начисление" } } }
                    tbody {
                        @for m in a.missing {
                            tr {
                                td { (m.meter) } td { (m.period) } td { (m.months_missing) }
                                td { @if m.months_missing <= 6 { "по среднему расходу" } @else { "по нормативу" } }
                            }
                        }
                    }
                }
            }
            h2 { "Принятые показания" }
            @if a.readings.is_empty() { p { "Нет." } } @else {
                table {
                    thead { tr { th { "Период" } th { "Счётчик" } th { "Показания" } th { "Получено" } th { "" } } }
                    tbody {
                        @for r in a.readings {
                            tr {
                                td { (r.period) } td { (r.meter) } td { (values(&r.vals)) }
                                td { a href={ "/messages/" (urlencode(&r.message_id)) } { (words::time(r.received_at, zone)) } }
                                td { @if r.superseded_by.is_some() { "заменено" } }
                            }
                        }
                    }
                }
            }
            h2 { "Сообщения" }
            (messages_table(a.messages, zone))
        },
    )
}

/// One slip's line: its text and, once decided, the decision.
pub fn slip_row(id: &str, text: &str, message: Option<&Message>) -> Markup {
    html! {
        tr data-pending=[message.is_none().then_some("1")] {
            td { a href={ "/messages/" (urlencode(id)) } { (text) } }
            td.decision {
                @match message {
                    Some(m) => { (decision(m)) }
                    None => { span.wait { "проверяется…" } }
                }
            }
        }
    }
}

pub fn slips(rows: &[(String, String, Option<Message>)]) -> Markup {
    html! {
        table #slips {
            thead { tr { th { "Бланк" } th { "Решение" } } }
            tbody { @for (id, text, m) in rows { (slip_row(id, text, m.as_ref())) } }
        }
    }
}

pub fn paper(
    session: &Session,
    slip_id: &str,
    error: Option<&str>,
    rows: &[(String, String, Option<Message>)],
) -> Markup {
    layout(
        "Бумажные бланки",
        Some(session),
        html! {
            p { "Введите счёт и показания бланка; Enter отправляет, курсор возвращается к счёту." }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            form.paper action="/paper" method="post" autocomplete="off" {
                input type="hidden" name="csrf" value=(session.csrf);
                input type="hidden" name="slip" value=(slip_id);
                label for="account" { "Лицевой счёт" }
                input #account name="account" inputmode="numeric" required autofocus;
                label for="t1" { "День / T1" }
                input #t1 name="t1" inputmode="numeric" required;
                label for="t2" { "Ночь / T2" }
                input #t2 name="t2" inputmode="numeric";
                label for="t3" { "T3" }
                input #t3 name="t3" inputmode="numeric";
                button type="submit" { "Отправить" }
            }
            h2 { "Последние бланки" }
            div #slips-box { (slips(rows)) }
            script { (PreEscaped(POLL_SLIPS)) }
        },
    )
}

/// While a slip is being checked, the list is fetched again every second.
const POLL_SLIPS: &str = r#"
(function(){
  function pending(){ return document.querySelector('#slips tr[data-pending]'); }
  var tries = 0;
  function poll(){
    if (!pending() || tries++ > 120) return;
    fetch('/paper/recent', {credentials:'same-origin'}).then(function(r){ return r.text(); })
      .then(function(html){ document.getElementById('slips-box').innerHTML = html; setTimeout(poll, 1000); })
      .catch(function(){ setTimeout(poll, 2000); });
  }
  setTimeout(poll, 700);
})();
"#;

pub fn dead(
    session: &Session,
    queues: &[(String, Vec<Letter>)],
    notice: Option<&str>,
    zone: Tz,
) -> Markup {
    layout(
        "Ошибочные сообщения",
        Some(session),
        html! {
            @if let Some(n) = notice { p.notice role="status" { (n) } }
            @for (queue, letters) in queues {
                section {
                    h2 { "Очередь " (queue) ": " (letters.len()) }
                    @if !letters.is_empty() {
                        form action="/dead/requeue" method="post" {
                            input type="hidden" name="csrf" value=(session.csrf);
                            input type="hidden" name="queue" value=(queue);
                            button type="submit" { "Вернуть все в очередь " (queue) }
                        }
                        table {
                            thead { tr { th { "Когда" } th { "Сообщение" } th { "Почему" } th { "Попыток" } th { "" } } }
                            tbody {
                                @for l in letters {
                                    tr {
                                        td { @if let Some(at) = l.failed_at { (words::time(at, zone)) } @else { "—" } }
                                        td {
                                            (l.routing_key.clone().unwrap_or_default()) " "
                                            @if let Some(id) = &l.message_id { code { (id) } }
                                            details { summary { "содержимое" } pre { (l.body) } }
                                        }
                                        td { (l.error.clone().unwrap_or_else(|| "не указано".into())) }
                                        td { (l.attempts.map(|a| a.to_string()).unwrap_or_default()) }
                                        td {
                                            form action="/dead/requeue" method="post" {
                                                input type="hidden" name="csrf" value=(session.csrf);
                                                input type="hidden" name="queue" value=(queue);
                                                input type="hidden" name="key" value=(l.key);
                                                button type="submit" { "Вернуть" }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

pub fn users(
    session: &Session,
    users: &[crate::users::User],
    zone: Tz,
    notice: Option<&str>,
) -> Markup {
    layout(
        "Сотрудники",
        Some(session),
        html! {
            @if let Some(n) = notice { p.notice role="status" { (n) } }
            h2 { "Добавить сотрудника или сменить роль и пароль" }
            form method="post" action="/users" {
                input type="hidden" name="csrf" value=(session.csrf);
                label { "Логин " input name="login" required autocomplete="off"; }
                " "
                label { "Роль "
                    select name="role" {
                        option value="operator" { (Role::Operator.title()) }
                        option value="supervisor" { (Role::Supervisor.title()) }
                    }
                }
                " "
                label { "Пароль (не короче 10 знаков) " input type="password" name="password" required autocomplete="new-password"; }
                " "
                button type="submit" { "Сохранить" }
            }
            p { small { "Тот же логин ещё раз — новая роль и новый пароль. Из командной строки: "
                code { "console add-user ЛОГИН --role operator|supervisor" } "." } }
            table {
                thead { tr { th { "Логин" } th { "Роль" } th { "Добавлен" } th { "Изменён" } th {} } }
                tbody {
                    @for u in users {
                        tr {
                            td { (u.login) }
                            td { (Role::parse(&u.role).map_or("?", Role::title)) }
                            td { (words::time(u.created_at, zone)) }
                            td { (words::time(u.updated_at, zone)) }
                            td {
                                @if u.login != session.login {
                                    form method="post" action="/users/remove" {
                                        input type="hidden" name="csrf" value=(session.csrf);
                                        input type="hidden" name="login" value=(u.login);
                                        button type="submit" { "Удалить" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// Percent-encodes a path segment.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub const CSS: &str = r#"
* { box-sizing: border-box; }
body { font: 16px/1.45 system-ui, "Segoe UI", Arial, sans-serif; margin: 0; color: #1a1a1a; background: #f6f6f4; }
header { display: flex; flex-wrap: wrap; gap: 1rem; align-items: center; padding: .5rem 1rem; background: #23395d; color: #fff; }
header a { color: #fff; margin-right: 1rem; }
header form { display: flex; gap: .4rem; align-items: center; margin: 0; }
header .search { flex: 1; }
header .search input { flex: 1; min-width: 10rem; }
main { max-width: 1240px; margin: 0 auto; padding: 1rem; }
h1 { font-size: 1.5rem; margin: .5rem 0 1rem; }
h2 { font-size: 1.15rem; margin-top: 1.5rem; }
input, button { font: inherit; padding: .35rem .5rem; }
button { background: #2d5da1; color: #fff; border: 0; border-radius: 3px; cursor: pointer; }
a:focus, input:focus, button:focus, summary:focus { outline: 3px solid #f5a623; outline-offset: 1px; }
table { border-collapse: collapse; width: 100%; background: #fff; }
th, td { text-align: left; padding: .35rem .5rem; border-bottom: 1px solid #ddd; vertical-align: top; }
td.text, pre.text { white-space: pre-wrap; word-break: break-word; font-family: ui-monospace, Consolas, monospace; }
.ok { color: #17692e; font-weight: 600; }
.bad { color: #a4161a; font-weight: 600; }
.wait { color: #8a6d00; }
.error { background: #fde8e8; border-left: 4px solid #a4161a; padding: .5rem; }
.notice { background: #e7f4ea; border-left: 4px solid #17692e; padding: .5rem; }
form.login, form.paper { display: grid; grid-template-columns: 12rem 16rem; gap: .5rem; align-items: center; max-width: 30rem; }
form.login button, form.paper button { grid-column: 2; }
ol.timeline { list-style: none; padding: 0; }
ol.timeline li { display: grid; grid-template-columns: 12rem 1fr; gap: 1rem; background: #fff; padding: .6rem; margin-bottom: .4rem; border-left: 4px solid #2d5da1; }
.numbers { display: grid; grid-template-columns: repeat(3, 1fr); gap: .5rem; }
.numbers div { background: #fff; padding: .6rem; }
svg.chart { width: 100%; max-width: 760px; height: auto; background: #fff; }
svg.chart rect.this, .legend .this { fill: #2d5da1; color: #2d5da1; }
svg.chart rect.last, .legend .last { fill: #b8c4d6; color: #b8c4d6; }
svg.chart text { font-size: 10px; }
svg.hbar { width: 300px; height: 16px; }
svg.hbar rect.ok { fill: #17692e; } svg.hbar rect.bad { fill: #a4161a; }
svg.share { width: 300px; height: 24px; vertical-align: middle; }
svg.share rect.whole { fill: #ddd; } svg.share rect.part { fill: #2d5da1; }
table.bars td:first-child { width: 24rem; }
.as-of { color: #444; margin: 0 0 .6rem; }
.as-of.stale { background: #fff4d6; border-left: 4px solid #8a6d00; padding: .5rem; color: #1a1a1a; }
.as-of.wait { background: #fff; border-left: 4px solid #8a6d00; padding: .5rem; color: #1a1a1a; }
.empty { background: #fff; padding: .8rem; color: #444; max-width: 760px; }
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(urlencode("gw-1/2 x"), "gw-1%2F2%20x");
        assert_eq!(urlencode("paper-0190"), "paper-0190");
    }

    #[test]
    fn text_is_escaped() {
        let page = error(None, "t", "<script>alert(1)</script>").into_string();
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(page.contains("&lt;script&gt;"));
    }
}
