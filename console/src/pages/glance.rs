//! The start page, "the window at a glance": numbers and server-rendered SVG charts.
//! The window's and the registry's figures are a kept count ([`crate::kept`]): the
//! page says when they were counted, and says in words what a chart would only show
//! as an empty box.

use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use maud::{Markup, html};

use super::layout;
use crate::glance::{Figures, Live, Span, day_label};
use crate::kept::Shown;
use crate::session::Session;
use crate::words;

/// What the start page shows.
pub struct Glance<'a> {
    /// The window open now: its period is named even before the first count.
    pub this: Span,
    pub figures: Shown<'a>,
    /// How often the figures are counted again.
    pub every: Duration,
    pub live: Live,
    /// Dead letters per queue; `None` when the broker did not answer.
    pub dead: Option<&'a [(String, u32)]>,
    pub zone: Tz,
    pub now: DateTime<Utc>,
}

pub fn glance(session: &Session, g: &Glance) -> Markup {
    let figures = match g.figures {
        Shown::Fresh(f) | Shown::Stale(f) => Some(f),
        Shown::Counting => None,
    };
    layout(
        "Окно приёма показаний",
        Some(session),
        html! {
            (as_of(g))
            section.numbers {
                div { "Период " strong { (g.this.period) } }
                @match figures {
                    Some(f) => {
                        div { "Сообщений: " strong { (total(&f.this_days)) } " (прошлое окно " (f.last.period) ": " (total(&f.last_days)) ")" }
                        div { "Принято: " strong { (f.accepted) } ", отклонено: " strong { (f.refused.iter().map(|r| r.1).sum::<i64>()) } }
                    }
                    None => {
                        div { "Сообщений: " span.wait { "считается…" } }
                        div { "Принято и отклонено: " span.wait { "считается…" } }
                    }
                }
                div { "Ответов SMS сегодня: " strong { (g.live.replies_sent_today) } }
                div { "Ожидают передачи в биллинг: " strong { (g.live.billing_backlog) } }
                div {
                    "Ошибочных сообщений: "
                    @match g.dead {
                        Some(d) => { @for (q, n) in d { (q) " " strong { (n) } " " } }
                        None => { "брокер недоступен" }
                    }
                }
            }
            @if let Some(f) = figures {
                h2 { "Сообщения по дням" }
                (per_day(f))
                h2 { "Принято и отклонено" }
                (decisions(f))
                h2 { "Счётчики с показанием за период" }
                @if f.active_meters > 0 {
                    p { (share_bar(f.meters_with_reading, f.active_meters)) }
                } @else {
                    p.empty { "В реестре нет действующих счётчиков." }
                }
            }
            h2 { "Отчёт о пропущенных показаниях" }
            form action="/reports/missing" method="get" {
                label for="period" { "Период (ГГГГ-ММ)" }
                input #period name="period" value=(g.this.period.previous()) pattern="[0-9]{4}-[0-9]{2}" required;
                button type="submit" { "Скачать CSV" }
            }
        },
    )
}

fn total(days: &[(chrono::NaiveDate, i64)]) -> i64 {
    days.iter().map(|d| d.1).sum()
}

/// When the figures were counted, and what is not a count but read just now.
fn as_of(g: &Glance) -> Markup {
    let live = "ответы SMS, биллинг и ошибочные сообщения — на момент открытия страницы.";
    match g.figures {
        Shown::Fresh(f) => html! {
            p.as-of data-as-of=(f.as_of.to_rfc3339()) {
                "Данные на " strong { (when(f.as_of, g.now, g.zone)) }
                " (окно и реестр пересчитываются раз в " (g.every.as_secs()) " с); " (live)
            }
        },
        Shown::Stale(f) => html! {
            p.as-of.stale data-as-of=(f.as_of.to_rfc3339()) {
                "Данные на " strong { (words::time(f.as_of, g.zone)) } " — "
                strong { "устарели" } ": пересчитать их не удаётся (база данных недоступна или перегружена), "
                "новые появятся сами; " (live)
            }
        },
        Shown::Counting => html! {
            p.as-of.wait {
                "Цифры окна и реестра ещё считаются (консоль только что запущена или открылось новое окно): "
                "обновите страницу через несколько секунд; " (live)
            }
        },
    }
}

/// The time alone when it is today's, else with its date.
fn when(at: DateTime<Utc>, now: DateTime<Utc>, zone: Tz) -> String {
    let (at, now) = (at.with_timezone(&zone), now.with_timezone(&zone));
    if at.date_naive() == now.date_naive() {
        at.format("%H:%M:%S").to_string()
    } else {
        words::time(at.with_timezone(&Utc), zone)
    }
}

/// The per-day chart, or words where it would be an empty box.
fn per_day(f: &Figures) -> Markup {
    let (this_total, last_total) = (total(&f.this_days), total(&f.last_days));
    let closed = f.as_of >= f.this.closes;
    html! {
        @if this_total == 0 {
            p.empty {
                @if closed { "В этом окне сообщений не было." } @else { "За это окно сообщений ещё нет." }
                @if last_total > 0 { " Ниже — прошлое окно (" (f.last.period) ") по дням." }
            }
        }
        @if this_total > 0 || last_total > 0 {
            p.legend { span.this { "■" } " это окно (" (f.this.period) ")  " span.last { "■" } " прошлое окно (" (f.last.period) ")" }
            (per_day_chart(f))
        }
    }
}

/// Bars of messages per day: this window in front, the last one behind.
fn per_day_chart(g: &Figures) -> Markup {
    let max = g
        .this_days
        .iter()
        .chain(&g.last_days)
        .map(|d| d.1)
        .max()
        .unwrap_or(0)
        .max(1);
    let n = g.this_days.len().max(g.last_days.len()).max(1);
    let (w, h, pad) = (640.0_f64, 200.0_f64, 20.0_f64);
    let step = (w - 2.0 * pad) / n as f64;
    let bar = |i: usize, v: i64, offset: f64, class: &'static str| {
        let bh = (h - 2.0 * pad) * v as f64 / max as f64;
        let x = pad + step * i as f64 + offset;
        let y = h - pad - bh;
        html! { rect class=(class) x=(format!("{x:.1}")) y=(format!("{y:.1}")) width=(format!("{:.1}", step * 0.4)) height=(format!("{bh:.1}")) { title { (v) } } }
    };
    html! {
        svg.chart viewBox=(format!("0 0 {w} {h}")) role="img" aria-label="Сообщения по дням окна" {
            @for (i, d) in g.last_days.iter().enumerate() { (bar(i, d.1, step * 0.1, "last")) }
            @for (i, d) in g.this_days.iter().enumerate() {
                (bar(i, d.1, step * 0.5, "this"))
                text x=(format!("{:.1}", pad + step * i as f64 + step * 0.5)) y=(format!("{:.1}", h - 4.0)) text-anchor="middle" { (day_label(d.0)) }
            }
        }
    }
}

fn decisions(f: &Figures) -> Markup {
    let biggest = f.refused.first().map_or(1, |r| r.1).max(f.accepted).max(1);
    html! {
        @if f.accepted == 0 && f.refused.is_empty() {
            p.empty { "Решений в этом окне пока нет." }
        } @else {
            table.bars {
                tr { td { "принято" } td { (hbar(f.accepted, biggest, "ok")) } td { (f.accepted) } }
                @for (reason, n) in &f.refused {
                    tr { td { (words::reason(reason)) } td { (hbar(*n, biggest, "bad")) } td { (n) } }
                }
            }
        }
    }
}

fn share_bar(part: i64, whole: i64) -> Markup {
    let share = if whole > 0 {
        part as f64 / whole as f64
    } else {
        0.0
    };
    html! {
        svg.share viewBox="0 0 300 24" role="img" aria-label="Доля счётчиков с показанием" {
            rect.whole x="0" y="0" width="300" height="24" {}
            rect.part x="0" y="0" width=(format!("{:.1}", 300.0 * share)) height="24" {}
        }
        " " strong { (format!("{:.1} %", share * 100.0)) } " (" (part) " из " (whole) ")"
    }
}

fn hbar(v: i64, max: i64, class: &'static str) -> Markup {
    let w = 300.0 * v as f64 / max.max(1) as f64;
    html! { svg.hbar viewBox="0 0 300 16" { rect class=(class) x="0" y="0" width=(format!("{w:.1}")) height="16" {} } }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;
    use shared::calendar::Window;

    use super::*;
    use crate::glance;
    use crate::users::Role;

    fn session() -> Session {
        Session {
            login: "ivanova".into(),
            role: Role::Operator,
            csrf: "t".into(),
        }
    }

    fn page(figures: Shown, now: DateTime<Utc>) -> String {
        let window = Window {
            start_day: 15,
            end_day: 25,
            zone: chrono_tz::Asia::Yekaterinburg,
        };
        let g = Glance {
            this: glance::current(&window, now),
            figures,
            every: Duration::from_secs(60),
            live: Live {
                billing_backlog: 0,
                replies_sent_today: 0,
            },
            dead: None,
            zone: window.zone,
            now,
        };
        glance(&session(), &g).into_string()
    }

    fn empty_window(now: DateTime<Utc>) -> Figures {
        let window = Window {
            start_day: 15,
            end_day: 25,
            zone: chrono_tz::Asia::Yekaterinburg,
        };
        let this = glance::current(&window, now);
        let last = Span::of(&window, this.period.previous());
        Figures {
            this,
            last,
            this_days: this.days(window.zone).into_iter().map(|d| (d, 0)).collect(),
            last_days: last.days(window.zone).into_iter().map(|d| (d, 0)).collect(),
            accepted: 0,
            refused: Vec::new(),
            active_meters: 0,
            meters_with_reading: 0,
            as_of: now,
        }
    }

    #[test]
    fn an_empty_window_is_said_in_words_not_drawn_as_an_empty_box() {
        let now = Utc.with_ymd_and_hms(2026, 11, 16, 1, 2, 3).unwrap();
        let f = empty_window(now);
        let html = page(Shown::Fresh(&f), now);
        assert!(html.contains("За это окно сообщений ещё нет."), "{html}");
        assert!(!html.contains("<svg class=\"chart\""), "{html}");
        assert!(html.contains("Решений в этом окне пока нет."), "{html}");
        assert!(
            html.contains("В реестре нет действующих счётчиков."),
            "{html}"
        );
        assert!(
            html.contains("Данные на <strong>06:02:03</strong>"),
            "{html}"
        );
    }

    #[test]
    fn stale_and_missing_counts_say_so() {
        let now = Utc.with_ymd_and_hms(2026, 11, 16, 1, 2, 3).unwrap();
        let f = empty_window(now);
        let html = page(Shown::Stale(&f), now + chrono::Duration::hours(1));
        assert!(
            html.contains(
                "Данные на <strong>16.11.2026 06:02:03</strong> — <strong>устарели</strong>"
            ),
            "{html}"
        );
        let html = page(Shown::Counting, now);
        assert!(html.contains("ещё считаются"), "{html}");
        assert!(html.contains("Период <strong>2026-11</strong>"), "{html}");
        assert!(!html.contains("Сообщения по дням"), "{html}");
    }
}
