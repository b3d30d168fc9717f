#!/usr/bin/env python3
"""The security attacks of RELIABILITY.md's security section, against real `taskledger serve`
processes: one with tokens (w1 reporter, dash reader, ops operator+reader) and one without
(loopback only). Standard library only.

    bench/hostile_security.py --bin target/release/taskledger [--json FILE]

Each attack prints one line with its figures; the whole run exits 1 if any attack got what it
wanted (a 2xx where a refusal was due, a forged principal, a 5xx, an unbounded response).
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid

ap = argparse.ArgumentParser()
ap.add_argument("--bin", required=True)
ap.add_argument("--json", help="write the figures here")
ap.add_argument("--queues", type=int, default=5000)
ap.add_argument("--rejections", type=int, default=20000)
ap.add_argument("--logins", type=int, default=10050)
ap.add_argument("--slow-bodies", type=int, default=40)
args = ap.parse_args()

figures = {}
problems = []
TOKENS = "w1=reporter,dash=reader,ops=operator+reader"


def start(env_tokens, data):
    env = dict(os.environ)
    env.pop("TASKLEDGER_TOKENS", None)
    if env_tokens is not None:
        env["TASKLEDGER_TOKENS"] = env_tokens
    proc = subprocess.Popen(
        [args.bin, "--data-dir", data, "serve", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        raise SystemExit(f"serve did not start: {line!r} {proc.stderr.read()}")
    host, port = line.split()[-1].rsplit(":", 1)
    return proc, host, int(port)


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) / 1024


def http(addr, method, path, body=b"", headers=None, timeout=60.0):
    """One request, Connection: close; (status, headers dict, body bytes)."""
    host, port = addr
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        head = [f"{method} {path} HTTP/1.1", "Connection: close", f"Content-Length: {len(body)}"]
        hdrs = {"Host": f"{host}:{port}"}
        hdrs.update(headers or {})
        head += [f"{k}: {v}" for k, v in hdrs.items()]
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        data = b""
        while True:
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else 0
    hd = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            hd[k.strip().lower()] = v.strip()
    if hd.get("transfer-encoding") == "chunked":
        out, rest2 = b"", rest
        while rest2:
            size_line, _, rest2 = rest2.partition(b"\r\n")
            size = int(size_line.split(b";")[0] or b"0", 16)
            if size == 0:
                break
            out += rest2[:size]
            rest2 = rest2[size + 2:]
        rest = out
    return status, hd, rest


def auth(name):
    return {"Authorization": f"Bearer {name}"}


def ndjson(lines):
    return ("\n".join(json.dumps(l) for l in lines)).encode()


def expect(name, ok, detail):
    figures[name] = detail
    mark = "held" if ok else "BROKEN"
    print(f"{mark:6} {name}: {json.dumps(detail)}", flush=True)
    if not ok:
        problems.append(name)


def dlq_task(task, x):
    return [
        {"op": "enqueue", "taskId": task, "executionId": x, "queue": "victim", "at": "2026-01-21T10:00:00Z", "maxRetries": 0},
        {"op": "claim", "taskId": task, "executionId": x, "worker": "w", "at": "2026-01-21T10:00:01Z"},
        {"op": "fail", "taskId": task, "executionId": x, "at": "2026-01-21T10:00:02Z", "error": "=HYPERLINK(\"http://evil.example\",\"x\")"},
    ]


def guarded(addr, pid):
    ct = {"Content-Type": "application/x-ndjson"}
    task, x = "victim:1", str(uuid.uuid4())
    s, _, _ = http(addr, "POST", "/v1/reports", ndjson(dlq_task(task, x)), {**auth("w1"), **ct})
    assert s == 200, s
    # 1. A reporter's archive and retry through /v1/reports, with a forged by.
    refused = 0
    for op in ({"op": "archive", "taskId": task, "executionId": x, "at": "2026-01-21T10:01:00Z", "reason": "r", "by": "ops@acme"},
               {"op": "retry", "taskId": task, "executionId": str(uuid.uuid4()), "at": "2026-01-21T10:01:00Z", "by": "ops@acme"}):
        s, _, _ = http(addr, "POST", "/v1/reports", ndjson([op]), {**auth("w1"), **ct})
        refused += s == 403
    s, _, body = http(addr, "GET", f"/v1/tasks/{urllib.parse.quote(task)}/history", headers=auth("dash"))
    events = json.loads(body)
    expect("reporter archive/retry via /v1/reports", refused == 2 and len(events) == 3,
           {"refused403": refused, "of": 2, "eventsAfter": len(events)})
    # 2. An operator's archive with "by": "mallory": the event names ops.
    op = {"op": "archive", "taskId": task, "executionId": x, "at": "2026-01-21T10:01:00Z", "reason": "r", "by": "mallory"}
    s, _, _ = http(addr, "POST", "/v1/reports", ndjson([op]), {**auth("ops"), **ct})
    _, _, body = http(addr, "GET", f"/v1/tasks/{urllib.parse.quote(task)}/history", headers=auth("dash"))
    last = json.loads(body)[-1]["data"]
    expect("operator archive records the principal", s == 200 and last.get("principal") == "ops" and last.get("by") == "mallory",
           {"status": s, "principal": last.get("principal"), "by": last.get("by")})
    # 3. Declared 4 MB bodies without a token, 10 bytes sent.
    before = rss_mb(pid)
    socks, answered, worst = [], 0, 0.0
    for _ in range(args.slow_bodies):
        sock = socket.create_connection(addr, timeout=10)
        t0 = time.time()
        sock.sendall(f"POST /v1/reports HTTP/1.1\r\nHost: {addr[0]}:{addr[1]}\r\nContent-Type: application/x-ndjson\r\nContent-Length: 4000000\r\nExpect: 100-continue\r\n\r\n0123456789".encode())
        data = sock.recv(4096)
        worst = max(worst, time.time() - t0)
        answered += data.startswith(b"HTTP/1.1 401")
        socks.append(sock)
    after = rss_mb(pid)
    for sock in socks:
        sock.close()
    expect("4 MB declared bodies without a token", answered == args.slow_bodies and after - before < 20,
           {"connections": args.slow_bodies, "answered401": answered, "worstMs": round(worst * 1000, 1),
            "rssBeforeMb": round(before, 1), "rssAfterMb": round(after, 1)})
    # 4. Many queue names: /metrics and /ui/queues stay bounded.
    lines = [{"op": "enqueue", "taskId": f"q{n}:t", "executionId": str(uuid.uuid4()), "queue": f"queue-{n:05d}",
              "at": "2026-01-21T10:00:00Z"} for n in range(args.queues)]
    for i in range(0, len(lines), 1000):
        http(addr, "POST", "/v1/reports", ndjson(lines[i:i + 1000]), {**auth("w1"), **ct})
    time.sleep(2)
    _, _, metrics = http(addr, "GET", "/metrics")
    login = f"token=dash&next=%2Fui%2Fqueues".encode()
    s, hd, _ = http(addr, "POST", "/ui/login", login, {"Content-Type": "application/x-www-form-urlencoded", "Origin": f"http://{addr[0]}:{addr[1]}"})
    cookie = hd.get("set-cookie", "").split(";")[0]
    _, _, queues_page = http(addr, "GET", "/ui/queues", headers={"Cookie": cookie})
    series = metrics.count(b"taskledger_dlq_size{")
    expect(f"{args.queues} queue names", series <= 101 and len(metrics) < 200_000 and len(queues_page) < 1_000_000,
           {"metricsBytes": len(metrics), "dlqSeries": series, "uiQueuesBytes": len(queues_page)})
    # 5. One task with many rejected reports: history and its page stay bounded.
    t2 = "victim:many"
    http(addr, "POST", "/v1/reports", ndjson([{"op": "enqueue", "taskId": t2, "executionId": str(uuid.uuid4()), "at": "2026-01-21T10:00:00Z"}]), {**auth("w1"), **ct})
    bad = [{"op": "succeed", "taskId": t2, "executionId": str(uuid.uuid4()), "at": "2026-01-21T10:00:00Z", "reportId": f"r{n}"} for n in range(args.rejections)]
    for i in range(0, len(bad), 5000):
        http(addr, "POST", "/v1/reports", ndjson(bad[i:i + 5000]), {**auth("w1"), **ct})
    path = urllib.parse.quote(t2, safe="")
    _, hd, hist = http(addr, "GET", f"/v1/tasks/{path}/history", headers=auth("dash"))
    _, _, page = http(addr, "GET", f"/ui/tasks/{path}", headers={"Cookie": cookie})
    expect(f"a task with {args.rejections} rejected reports", len(hist) < 1_000_000 and len(page) < 2_000_000 and "x-next-cursor" in hd,
           {"historyBytes": len(hist), "historyEvents": len(json.loads(hist)), "nextCursor": hd.get("x-next-cursor"), "uiPageBytes": len(page)})
    # 6. A NUL in a queue name.
    s, _, body = http(addr, "POST", "/v1/reports", ndjson([{"op": "enqueue", "taskId": "victim:2", "executionId": str(uuid.uuid4()), "queue": "victim\u0000evil", "at": "2026-01-21T10:00:00Z"}]), {**auth("w1"), **ct})
    expect("a NUL in a queue name", s == 400 and b'"field":"queue"' in body, {"status": s})
    # 7. CSV export of an error message that is a formula.
    _, _, csv = http(addr, "GET", "/ui/dlq?format=csv&archived=1", headers={"Cookie": cookie})
    expect("CSV formula cells", b",=HYPERLINK" not in csv and b"'=HYPERLINK" in csv, {"neutralised": b"'=HYPERLINK" in csv})
    # 8. Reader sign-ins against the operator's session.
    s, hd, _ = http(addr, "POST", "/ui/login", b"token=ops&next=%2Fui%2Fdlq", {"Content-Type": "application/x-www-form-urlencoded", "Origin": f"http://{addr[0]}:{addr[1]}"})
    ops_cookie = hd.get("set-cookie", "").split(";")[0]
    statuses = {}
    for _ in range(args.logins):
        s, _, _ = http(addr, "POST", "/ui/login", b"token=dash&next=%2Fui%2F", {"Content-Type": "application/x-www-form-urlencoded", "Origin": f"http://{addr[0]}:{addr[1]}"})
        statuses[s] = statuses.get(s, 0) + 1
    s, _, _ = http(addr, "GET", "/ui/dlq", headers={"Cookie": ops_cookie})
    expect(f"{args.logins} reader sign-ins", s == 200 and statuses.get(429, 0) > 0,
           {"operatorSessionStatus": s, "signInAnswers": statuses})
    # 9. A control character in `back` after a retry (the redirect must not be a 500).
    _, _, dlq_page = http(addr, "GET", "/ui/dlq", headers={"Cookie": ops_cookie})
    csrf = dlq_page.split(b'name="csrf" content="')[1][:64].decode() if b'name="csrf" content="' in dlq_page else ""
    form = urllib.parse.urlencode({"csrf": csrf, "action": "retry", "sel": f"{task}|{x}", "back": "/ui/dlq\r\nX: y"}).encode()
    s, hd, _ = http(addr, "POST", "/ui/actions", form, {"Cookie": ops_cookie, "Content-Type": "application/x-www-form-urlencoded", "Origin": f"http://{addr[0]}:{addr[1]}"})
    expect("a control character in back", s == 303 and hd.get("location") == "/ui/", {"status": s, "location": hd.get("location")})
    # 10. The Bearer scheme in lower case; a framework rejection's shape.
    s1, _, _ = http(addr, "GET", "/v1/dlq", headers={"Authorization": "bearer dash"})
    s2, hd, body = http(addr, "GET", "/v1/dlq?limit=abc", headers=auth("dash"))
    expect("bearer in lower case; /v1/dlq?limit=abc", s1 == 200 and s2 == 400 and hd.get("content-type", "").startswith("application/json"),
           {"lowercaseBearer": s1, "badLimit": s2, "contentType": hd.get("content-type")})


def open_mode(addr):
    j = {"Content-Type": "application/json"}
    report = json.dumps({"op": "enqueue", "taskId": "open:1", "executionId": str(uuid.uuid4()), "at": "2026-01-21T10:00:00Z"}).encode()
    s1, _, _ = http(addr, "POST", "/v1/reports", report, {"Content-Type": "text/plain"})
    s2, _, _ = http(addr, "POST", "/v1/reports", report, {**j, "Origin": "http://evil.example"})
    s3, _, _ = http(addr, "GET", "/v1/dlq", headers={"Host": "evil.example:7070"})
    s4, _, _ = http(addr, "POST", "/v1/reports", report, j)
    expect("no-token mode: text/plain POST, foreign Origin, rebinding Host", (s1, s2, s3, s4) == (403, 403, 421, 200),
           {"textPlain": s1, "foreignOrigin": s2, "rebindingHost": s3, "loopbackJson": s4})


def bad_tokens():
    for value in (", =reader", "a=reader,a=reader", "x=reader, =operator"):
        with tempfile.TemporaryDirectory() as d:
            env = dict(os.environ, TASKLEDGER_TOKENS=value)
            out = subprocess.run([args.bin, "--data-dir", d, "serve", "--listen", "127.0.0.1:0"],
                                 env=env, capture_output=True, text=True, timeout=30)
            expect(f"TASKLEDGER_TOKENS={value!r}", out.returncode == 2 and "TASKLEDGER_TOKENS entry" in out.stderr,
                   {"exit": out.returncode, "stderr": out.stderr.strip()[-160:]})


with tempfile.TemporaryDirectory() as d:
    proc, host, port = start(TOKENS, os.path.join(d, "a"))
    try:
        guarded((host, port), proc.pid)
    finally:
        proc.kill()
    proc, host, port = start(None, os.path.join(d, "b"))
    try:
        open_mode((host, port))
    finally:
        proc.kill()
bad_tokens()
if args.json:
    with open(args.json, "w") as f:
        json.dump(figures, f, indent=2)
if problems:
    print(f"hostile-security: {len(problems)} attack(s) got through: {problems}", file=sys.stderr)
    sys.exit(1)
print("hostile-security: every attack refused")
