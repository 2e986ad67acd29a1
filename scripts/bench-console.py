#!/usr/bin/env python3
"""HTTP timer for scripts/bench-console.sh (standard library only).

    bench-console.py BASE_URL SAMPLES_DIR OUT_JSON

SAMPLES_DIR holds phones.txt (E.164), accounts.txt, messages.txt (one a line), drawn
at random from the loaded data. With BENCH_TOKEN (the console's CONSOLE_API_TOKEN) it
calls the JSON API; with BENCH_LOGIN / BENCH_PASSWORD it logs in through the /login
form (its double-submit CSRF cookie and field) for the pages. One client, one
keep-alive connection, requests one after another: each time is the server's answer
to a lone operator, from sending the request to the last byte of the body.
"""
import http.client
import json
import os
import random
import re
import statistics
import sys
import time
import urllib.parse

BASE, SAMPLES, OUT = sys.argv[1], sys.argv[2], sys.argv[3]
N = int(os.environ.get("BENCH_N", "300"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "30"))
TOKEN = os.environ["BENCH_TOKEN"]
LOGIN, PASSWORD = os.environ["BENCH_LOGIN"], os.environ["BENCH_PASSWORD"]
KINDS = os.environ.get("BENCH_KINDS", "")

url = urllib.parse.urlsplit(BASE)
rnd = random.Random(7)


def lines(name):
    with open(os.path.join(SAMPLES, name)) as f:
        return [l.strip() for l in f if l.strip()]


phones, accounts, messages = lines("phones.txt"), lines("accounts.txt"), lines("messages.txt")


def national(e164):
    # +79004445566 -> "8 900 444-55-66", as a caller dictates it
    d = e164[2:]
    return f"8 {d[0:3]} {d[3:6]}-{d[6:8]}-{d[8:10]}"


conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)


def request(method, path, headers=None, body=None):
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    return r, data


# A session for the pages: GET /login (CSRF cookie + field), POST the form.
r, page = request("GET", "/login")
login_cookie = re.search(r"console_login=([^;]+)", r.getheader("Set-Cookie", "")).group(1)
csrf = re.search(rb'name="csrf" value="([^"]+)"', page).group(1).decode()
form = urllib.parse.urlencode({"csrf": csrf, "username": LOGIN, "password": PASSWORD})
r, _ = request(
    "POST",
    "/login",
    {"Content-Type": "application/x-www-form-urlencoded", "Cookie": f"console_login={login_cookie}"},
    form,
)
cookies = [c for c in r.msg.get_all("Set-Cookie") or [] if c.startswith("console_session=")]
if r.status != 303 or not cookies:
    sys.exit(f"login failed: {r.status}")
session = cookies[0].split(";")[0]

api = {"Authorization": f"Bearer {TOKEN}"}
page_headers = {"Cookie": session}
q = urllib.parse.quote

kinds = {
    # kind: (headers, function giving the next path)
    "search_phone": (api, lambda: "/api/v1/search?q=" + q(national(rnd.choice(phones)))),
    "search_account": (api, lambda: "/api/v1/search?q=" + q(rnd.choice(accounts))),
    "search_message_id": (api, lambda: "/api/v1/search?q=" + q(rnd.choice(messages))),
    "message_timeline": (api, lambda: "/api/v1/messages/" + q(rnd.choice(messages))),
    "account_page": (api, lambda: "/api/v1/accounts/" + q(rnd.choice(accounts))),
    "search_phone_html": (page_headers, lambda: "/search?q=" + q(national(rnd.choice(phones)))),
    "start_page_html": (page_headers, lambda: "/"),
}
if KINDS:
    kinds = {k: v for k, v in kinds.items() if k in KINDS.split(",")}


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(p / 100 * len(xs) + 0.5)) - 1))]


results = {}
for kind, (headers, path) in kinds.items():
    times, sizes, bad = [], [], 0
    for i in range(WARMUP + N):
        p = path()
        t0 = time.perf_counter()
        r, body = request("GET", p, headers)
        dt = (time.perf_counter() - t0) * 1000
        if r.status != 200:
            bad += 1
            if bad <= 3:
                print(f"{kind}: {r.status} for {p}: {body[:200]!r}", file=sys.stderr)
        if i >= WARMUP:
            times.append(dt)
            sizes.append(len(body))
    res = {
        "n": len(times),
        "non_200": bad,
        "p50_ms": round(pct(times, 50), 2),
        "p95_ms": round(pct(times, 95), 2),
        "p99_ms": round(pct(times, 99), 2),
        "max_ms": round(max(times), 2),
        "mean_ms": round(statistics.mean(times), 2),
        "mean_body_bytes": int(statistics.mean(sizes)),
    }
    results[kind] = res
    print(
        f"| {kind} | {res['n']} | {res['p50_ms']} | {res['p95_ms']} | {res['p99_ms']} | "
        f"{res['max_ms']} | {res['mean_body_bytes']} | {res['non_200']} |",
        flush=True,
    )

with open(OUT, "w") as f:
    json.dump({"n": N, "warmup": WARMUP, "load_avg": os.getloadavg(), "results": results}, f, indent=2)
