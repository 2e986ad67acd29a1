//! The gateway side of a drill: posts the plan to ingest at a steady rate with a
//! bounded number of requests in flight, and retries a post that was not taken —
//! `503`, another `5xx`, a refused or dropped connection — as an SMS aggregator does,
//! so nothing is lost at the edge. A post that was taken but whose answer was lost
//! is retried too; the message id makes that a duplicate the system must absorb.
//!
//! A web form is sent as a resident's browser sends it: `GET /form` (the CSRF
//! cookie, the hidden token and the hidden message id), then `POST /form` with the
//! cookie, the token, the id and the fields, through a reverse proxy that names the
//! resident's address in `X-Forwarded-For`. A post that was not taken is submitted
//! again as a resident would: after `503` from the form page ingest answered with
//! (a fresh cookie and token, the same id), after no answer with the same page.
//! Since the form carries its id, every such re-submit is the *same* message — a
//! duplicate the validator must absorb, as an SMS re-delivery is. The second post of
//! a form in [`Plan::order`] is the same form submitted again (its id, its token).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OnceCell, Semaphore};
use tokio::task::JoinHandle;

use super::plan::{Channel, Expect, Plan, WebForm};

/// How the gateway posts.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// Posts started per second.
    pub rate_per_sec: f64,
    pub max_in_flight: usize,
    /// How long one message may keep failing before the gateway gives up on it
    /// (a message given up is a failure of the drill).
    pub give_up_after: Duration,
}

/// Live counters, for the drill to time its fault and for the table.
#[derive(Debug, Default)]
pub struct Progress {
    /// Posts started (including duplicates).
    pub started: AtomicUsize,
    /// Posts answered `202`.
    pub taken: AtomicUsize,
    /// Attempts that were not taken and were retried.
    pub retries: AtomicU64,
    /// `POST /form` made (re-submits included).
    pub form_posts: AtomicU64,
    /// Form posts that were not taken and were submitted again.
    pub form_resubmits: AtomicU64,
}

/// What the answer page of a taken web form said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// «Показания приняты: …».
    Accepted,
    /// «Показания не приняты».
    Refused,
    /// «Спасибо»: no decision within the page's wait; it comes by e-mail, if any.
    Pending,
    /// None of these.
    Other,
}

/// A web form ingest took (`200` with its answer page).
#[derive(Debug, Clone)]
pub struct FormTaken {
    /// Index into the plan's messages.
    pub index: usize,
    /// The message id the form carried (`web-<uuid>`, made by `GET /form`).
    pub id: String,
    pub page: Page,
    /// The id the answer page names, if not `id`: a re-submit became a new message.
    pub page_id: Option<String>,
}

/// A post that never got its `202`, or got an answer a correct request must never get.
#[derive(Debug, Clone)]
pub struct PostFailure {
    pub message_id: String,
    pub last_status: u16,
    pub attempts: u32,
}

#[derive(Debug, Default, Clone)]
pub struct StreamReport {
    pub posts: usize,
    pub retries: u64,
    pub failures: Vec<PostFailure>,
    /// Every taken post of a web form (a form posted twice in the plan: twice).
    pub forms: Vec<FormTaken>,
    pub form_posts: u64,
    pub form_resubmits: u64,
}

impl StreamReport {
    /// The message id of each plan message: an SMS's own, a web form's as ingest made
    /// it (`None`: the form was never taken). A form whose posts carried different
    /// ids keeps the first; the accounting flags the others.
    pub fn message_ids(&self, plan: &Plan) -> Vec<Option<String>> {
        let mut ids: Vec<Option<String>> = plan
            .messages
            .iter()
            .map(|m| (m.channel == Channel::Sms).then(|| m.id.clone()))
            .collect();
        for f in &self.forms {
            if let Some(slot @ None) = ids.get_mut(f.index) {
                *slot = Some(f.id.clone());
            }
        }
        ids
    }
}

pub struct Stream {
    pub progress: Arc<Progress>,
    pub total_posts: usize,
    task: JoinHandle<StreamReport>,
}

impl Stream {
    /// Posts to the ingest replicas at `ingest_bases` as a load balancer in front of
    /// them would: each message to the next replica, a retry to the one after.
    pub fn start(
        ingest_bases: Vec<String>,
        token: &str,
        plan: Arc<Plan>,
        config: StreamConfig,
    ) -> Stream {
        let progress = Arc::new(Progress::default());
        let total_posts = plan.order.len();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        let token = token.to_owned();
        let p = progress.clone();
        let task = tokio::spawn(async move {
            let urls: Arc<Vec<String>> = Arc::new(
                ingest_bases
                    .iter()
                    .map(|base| format!("{base}/v1/sms"))
                    .collect(),
            );
            let bases: Arc<Vec<String>> = Arc::new(ingest_bases.clone());
            // One form per web message, shown once: its second post submits it again.
            let shown: Arc<Vec<OnceCell<Shown>>> =
                Arc::new((0..plan.messages.len()).map(|_| OnceCell::new()).collect());
            let slots = Arc::new(Semaphore::new(config.max_in_flight.max(1)));
            let period = Duration::from_secs_f64(1.0 / config.rate_per_sec.max(0.1));
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut posts = Vec::with_capacity(plan.order.len());
            for (n, &index) in plan.order.iter().enumerate() {
                tick.tick().await;
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    break;
                };
                let (client, urls, token, plan, p) = (
                    client.clone(),
                    urls.clone(),
                    token.clone(),
                    plan.clone(),
                    p.clone(),
                );
                let (bases, shown) = (bases.clone(), shown.clone());
                p.started.fetch_add(1, Ordering::Relaxed);
                posts.push(tokio::spawn(async move {
                    let _slot = slot;
                    let m = &plan.messages[index];
                    if let (Channel::Web, Some(form)) = (m.channel, &m.form) {
                        let browser = Browser {
                            client: &client,
                            bases: &bases,
                            first: n,
                            progress: &p,
                            give_up_after: config.give_up_after,
                        };
                        return browser
                            .send(index, form, &shown[index])
                            .await
                            .map(Some)
                            .map_err(|(last_status, attempts)| PostFailure {
                                message_id: m.id.clone(),
                                last_status,
                                attempts,
                            });
                    }
                    let body = serde_json::json!({
                        "message_id": m.id,
                        "from": m.from,
                        "to": "7377",
                        "text": m.text,
                        "received_at": m.received_at,
                    });
                    post_until_taken(&client, &urls, n, &token, &body, &p, config.give_up_after)
                        .await
                        .map(|()| None)
                        .map_err(|(last_status, attempts)| PostFailure {
                            message_id: m.id.clone(),
                            last_status,
                            attempts,
                        })
                }));
            }
            let mut report = StreamReport {
                posts: posts.len(),
                ..StreamReport::default()
            };
            for post in posts {
                match post.await {
                    Ok(Ok(None)) => {}
                    Ok(Ok(Some(form))) => report.forms.push(form),
                    Ok(Err(failure)) => report.failures.push(failure),
                    Err(e) => report.failures.push(PostFailure {
                        message_id: format!("(task failed: {e})"),
                        last_status: 0,
                        attempts: 0,
                    }),
                }
            }
            report.retries = p.retries.load(Ordering::Relaxed);
            report.form_posts = p.form_posts.load(Ordering::Relaxed);
            report.form_resubmits = p.form_resubmits.load(Ordering::Relaxed);
            report
        });
        Stream {
            progress,
            total_posts,
            task,
        }
    }

    /// Resolves once `fraction` of the posts have been started (to time a fault).
    pub async fn started_fraction(&self, fraction: f64, deadline: Duration) {
        let want = ((self.total_posts as f64) * fraction).ceil() as usize;
        let p = self.progress.clone();
        shared::testing::eventually("the stream under way", deadline, || {
            let p = p.clone();
            async move { (p.started.load(Ordering::Relaxed) >= want).then_some(()) }
        })
        .await;
    }

    /// Waits for every post to be taken or given up.
    pub async fn finish(self) -> StreamReport {
        match self.task.await {
            Ok(report) => report,
            Err(e) => StreamReport {
                failures: vec![PostFailure {
                    message_id: format!("(stream task failed: {e})"),
                    last_status: 0,
                    attempts: 0,
                }],
                ..StreamReport::default()
            },
        }
    }
}

/// Posts until `202`. Retried: `5xx`, `408`, `429` and no answer at all (0). Anything
/// else is a failure at once: the request is well-formed, ingest must take it.
async fn post_until_taken(
    client: &reqwest::Client,
    urls: &[String],
    first: usize,
    token: &str,
    body: &serde_json::Value,
    progress: &Progress,
    give_up_after: Duration,
) -> Result<(), (u16, u32)> {
    let (status, attempts) = post_to_any(client, urls, first, token, body, give_up_after, || {
        progress.retries.fetch_add(1, Ordering::Relaxed);
    })
    .await;
    if status == 202 {
        progress.taken.fetch_add(1, Ordering::Relaxed);
        return Ok(());
    }
    Err((status, attempts))
}

/// Posts an SMS to ingest as an aggregator does: again after a `5xx`, `408`, `429` or
/// no answer at all (status 0), with back-off from 100 ms doubling to 2 s (shorter than
/// ingest's `Retry-After: 5`: hammering a recovering ingest is part of the test), until
/// any other answer or `give_up_after`. Returns the last status and the attempts made;
/// `on_retry` is called before each repeat.
pub async fn post_as_a_gateway(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    body: &serde_json::Value,
    give_up_after: Duration,
    on_retry: impl Fn(),
) -> (u16, u32) {
    post_to_any(
        client,
        &[url.to_owned()],
        0,
        token,
        body,
        give_up_after,
        on_retry,
    )
    .await
}

/// As [`post_as_a_gateway`], through a load balancer in front of several ingest
/// replicas: the first attempt goes to `urls[first % len]`, each repeat to the next
/// replica (a killed replica's requests are taken by another).
pub async fn post_to_any(
    client: &reqwest::Client,
    urls: &[String],
    first: usize,
    token: &str,
    body: &serde_json::Value,
    give_up_after: Duration,
    on_retry: impl Fn(),
) -> (u16, u32) {
    let until = tokio::time::Instant::now() + give_up_after;
    let mut pause = Duration::from_millis(100);
    let mut attempts: u32 = 0;
    loop {
        let url = &urls[(first + attempts as usize) % urls.len().max(1)];
        attempts += 1;
        let status = match client.post(url).bearer_auth(token).json(body).send().await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        };
        match status {
            0 | 408 | 429 | 500..=599 if tokio::time::Instant::now() < until => {
                on_retry();
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            other => return (other, attempts),
        }
    }
}

/// A form as `GET /form` showed it: what the browser sends back.
#[derive(Debug, Clone)]
struct Shown {
    /// `form_csrf=…`, as the `Cookie` header carries it.
    cookie: String,
    csrf: String,
    id: String,
}

/// The value of the hidden field `name` on a form page.
fn hidden(page: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let rest = &page[page.find(&marker)? + marker.len()..];
    Some(rest[..rest.find('"')?].to_owned())
}

/// The form a page shows, with the cookie its answer set.
fn shown_on(headers: &reqwest::header::HeaderMap, page: &str) -> Option<Shown> {
    let cookie = headers
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|c| c.trim_start().starts_with("form_csrf="))?
        .trim()
        .to_owned();
    Some(Shown {
        cookie,
        csrf: hidden(page, "csrf")?,
        id: hidden(page, "id")?,
    })
}

/// What the answer page says, and the id it names («Номер обращения: …»).
fn read_answer(page: &str) -> (Page, Option<String>) {
    let decision = if page.contains("Показания приняты: лицевой счёт") {
        Page::Accepted
    } else if page.contains("<h1>Показания не приняты</h1>") {
        Page::Refused
    } else if page.contains("<h1>Спасибо</h1>") {
        Page::Pending
    } else {
        Page::Other
    };
    let marker = "Номер обращения: ";
    let id = page.find(marker).map(|at| {
        page[at + marker.len()..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect()
    });
    (decision, id)
}

fn urlencoded(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}={}",
                percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Retried: no answer at all (0), `408`, `429`, `5xx`.
fn not_taken(status: u16) -> bool {
    matches!(status, 0 | 408 | 429 | 500..=599)
}

/// A resident's browser behind the reverse proxy in front of the ingest replicas
/// (each request to the next replica, as the proxy balances them).
struct Browser<'a> {
    client: &'a reqwest::Client,
    bases: &'a [String],
    first: usize,
    progress: &'a Progress,
    give_up_after: Duration,
}

impl Browser<'_> {
    fn url(&self, attempt: u32) -> String {
        let base = &self.bases[(self.first + attempt as usize) % self.bases.len().max(1)];
        format!("{base}/form")
    }

    /// `GET /form` until it shows the form (again after no answer or a `5xx`).
    async fn show(&self, until: tokio::time::Instant) -> Result<Shown, (u16, u32)> {
        let mut attempts: u32 = 0;
        let mut pause = Duration::from_millis(100);
        loop {
            let url = self.url(attempts);
            attempts += 1;
            let (status, got) = match self.client.get(&url).send().await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let headers = r.headers().clone();
                    match r.text().await {
                        Ok(page) if status == 200 => (status, shown_on(&headers, &page)),
                        Ok(_) => (status, None),
                        Err(_) => (0, None),
                    }
                }
                Err(_) => (0, None),
            };
            match got {
                Some(shown) => return Ok(shown),
                None if not_taken(status) && tokio::time::Instant::now() < until => {
                    self.progress.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                None => return Err((status, attempts)),
            }
        }
    }

    /// Shows the form (once per message: a second post submits the same form) and
    /// submits it until ingest takes it, or `give_up_after`.
    async fn send(
        &self,
        index: usize,
        form: &WebForm,
        cell: &OnceCell<Shown>,
    ) -> Result<FormTaken, (u16, u32)> {
        let until = tokio::time::Instant::now() + self.give_up_after;
        let shown = cell.get_or_try_init(|| self.show(until)).await?;
        let mut attempts: u32 = 0;
        let mut shown = shown.clone();
        let id = shown.id.clone();
        let mut pause = Duration::from_millis(100);
        loop {
            let url = self.url(attempts);
            attempts += 1;
            self.progress.form_posts.fetch_add(1, Ordering::Relaxed);
            let body = urlencoded(&[
                ("csrf", &shown.csrf),
                ("id", &shown.id),
                ("account", &form.account),
                ("t1", &form.values[0]),
                ("t2", &form.values[1]),
                ("t3", &form.values[2]),
                ("email", &form.email),
            ]);
            let answer = self
                .client
                .post(&url)
                .header("content-type", "application/x-www-form-urlencoded")
                .header("cookie", &shown.cookie)
                .header("x-forwarded-for", &form.client_ip)
                .body(body)
                .send()
                .await;
            let (status, headers, page) = match answer {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let headers = r.headers().clone();
                    match r.text().await {
                        Ok(page) => (status, headers, page),
                        // The answer was cut off: as good as none.
                        Err(_) => (0, headers, String::new()),
                    }
                }
                Err(_) => (0, reqwest::header::HeaderMap::new(), String::new()),
            };
            if status == 200 {
                self.progress.taken.fetch_add(1, Ordering::Relaxed);
                let (page, page_id) = read_answer(&page);
                let ended = page_id.unwrap_or_else(|| shown.id.clone());
                return Ok(FormTaken {
                    index,
                    page_id: (ended != id).then_some(ended),
                    id,
                    page,
                });
            }
            if !not_taken(status) || tokio::time::Instant::now() >= until {
                return Err((status, attempts));
            }
            // A form page came back (503): the resident sends that one — its fresh
            // cookie and token, and the id it carries.
            if let Some(again) = shown_on(&headers, &page) {
                shown = again;
            }
            self.progress.retries.fetch_add(1, Ordering::Relaxed);
            self.progress.form_resubmits.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }
}

/// Whether the answer page agrees with what must become of the form (a pending page
/// agrees with anything: the decision came later).
pub fn page_agrees(page: Page, expect: &Expect) -> bool {
    matches!(
        (page, expect),
        (Page::Pending, _)
            | (Page::Accepted, Expect::Accepted { .. })
            | (Page::Refused, Expect::Rejected { .. })
    )
}
