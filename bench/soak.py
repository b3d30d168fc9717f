#!/usr/bin/env python3
"""Soak: mixed load against `taskledger serve` (the projection follower runs inside it) with
periodic SIGKILL and restart, sampling RSS and open files; at the end, nothing acknowledged may
be lost. Run through bench/soak.sh MINUTES (RELIABILITY.md). Standard library only.

Reporters run task lifecycles (enqueue, claim, fail, claim, succeed — or fail twice into the DLQ
with maxRetries 1), each report with a reportId, retried after connection errors and 5xx until
acknowledged, as the clients do. Readers query tasks, chains, the DLQ and stats. Every KILL_EVERY
seconds (jittered) serve is SIGKILLed and restarted on the same port. With
--follower-crash-every S, the projection follower inside serve is also made to crash mid-catch-up
every S seconds (TASKLEDGER_FAILPOINT=follower-crash-every:S, serve/src/follow.rs): it recovers
as from any failure while serve keeps taking reports.

Checks at the end (after a graceful stop): every acknowledged eventId is in `taskledger export`,
once, and exactly one event per acknowledged report; positions are contiguous; every acknowledged report's outcome was `accepted` (a retry may
only say `duplicate` of it); every task's status, as served after the last restart, is what its
lifecycle must give; `taskledger rebuild --verify` finds the live models equal to a rebuild.
"""
import argparse
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

ap = argparse.ArgumentParser()
ap.add_argument("--bin", required=True)
ap.add_argument("--data-dir", required=True)
ap.add_argument("--minutes", type=float, required=True)
ap.add_argument("--reporters", type=int, default=16)
ap.add_argument("--readers", type=int, default=4)
ap.add_argument("--kill-every", type=float, default=20.0, help="seconds between kills (±50%%)")
ap.add_argument("--follower-crash-every", type=float, default=0.0,
                help="seconds between crashes of the projection follower inside serve (0: none)")
ap.add_argument("--config", help="taskledger's configuration for every command (cache sizes)")
ap.add_argument("--json", help="write the figures here")
args = ap.parse_args()

BASE = [args.bin, "--data-dir", args.data_dir] + (["--config", args.config] if args.config else [])

sock = socket.socket()
sock.bind(("127.0.0.1", 0))
PORT = sock.getsockname()[1]
sock.close()

lock = threading.Lock()
stop = threading.Event()
acked = []          # (taskId, op, reportId, outcome, duplicate, eventIds)
expected = {}       # taskId -> final status
counts = {"retries": 0, "gaveUp": 0, "reads": 0, "readErrors": 0, "read5xx": 0, "unexpected": []}
samples = []
kills = []          # {"at", "pid", "restartSeconds"}
serve = {"proc": None, "incarnation": 0}
log = open(os.path.join(args.data_dir + ".serve.log"), "ab")


def start_serve():
    env = dict(os.environ)
    if args.follower_crash_every > 0:
        # The follower runs inside serve: it is made to crash mid-catch-up (serve/src/follow.rs).
        env["TASKLEDGER_FAILPOINT"] = f"follower-crash-every:{args.follower_crash_every}"
    proc = subprocess.Popen(BASE + ["serve", "--listen",
                             f"127.0.0.1:{PORT}"], stdout=subprocess.PIPE, stderr=log, env=env)
    # (A wrapper such as heaptrack may print lines of its own first.)
    for _ in range(20):
        line = proc.stdout.readline().decode()
        if line.startswith("listening on") or not line:
            break
    if not line.startswith("listening on"):
        raise SystemExit(f"soak: serve did not start: {line!r}")
    serve["proc"] = proc
    serve["incarnation"] += 1
    return proc


def call(method, path, body=None, timeout=30):
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def report(payload):
    """Posts one report until acknowledged; returns its result object."""
    body = json.dumps(payload)
    deadline = time.monotonic() + 120
    while True:
        try:
            status, data = call("POST", "/v1/reports", body)
            if status == 200:
                return json.loads(data)
            if status < 500 and status != 429:
                with lock:
                    counts["unexpected"].append(f"{payload['op']} {payload['taskId']}: {status} {data[:200]!r}")
                return None
        except (OSError, http.client.HTTPException):
            pass
        with lock:
            counts["retries"] += 1
        if time.monotonic() > deadline or stop.is_set() and time.monotonic() > deadline - 60:
            with lock:
                counts["gaveUp"] += 1
            return None
        time.sleep(0.1)


def reporter(index):
    rng = random.Random(index)
    n = 0
    while not stop.is_set():
        n += 1
        task = f"soak:{index}:{n}"
        execution = f"{index:08x}-0000-4000-8000-{n:012x}"
        to_dlq = rng.random() < 0.3
        at = 1_767_000_000_000 + n * 60_000

        def iso(offset):
            t = at + offset
            return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t / 1000)) + f".{t % 1000:03d}Z"

        steps = [
            {"op": "enqueue", "queue": "soak", "maxRetries": 1, "at": iso(0)},
            {"op": "claim", "worker": f"w{index}", "at": iso(1000)},
            {"op": "fail", "error": {"message": "ETIMEDOUT calling partner api"}, "at": iso(2000)},
            {"op": "claim", "worker": f"w{index}", "at": iso(3000)},
            {"op": "fail", "error": {"message": "ETIMEDOUT again"}, "at": iso(4000)} if to_dlq
            else {"op": "succeed", "at": iso(4000)},
        ]
        for step, fields in enumerate(steps):
            payload = {"taskId": task, "executionId": execution, "reportId": f"{task}:{step}", **fields}
            result = report(payload)
            if result is None:
                break
            with lock:
                acked.append((task, fields["op"], payload["reportId"], result.get("outcome"),
                              result.get("duplicate"), result.get("eventIds") or []))
        else:
            with lock:
                expected[task] = "dlq" if to_dlq else "completed"


def reader(index):
    rng = random.Random(1000 + index)
    while not stop.is_set():
        with lock:
            tasks = list(expected)
        paths = ["/v1/dlq?limit=20", "/v1/queues/soak/stats", "/v1/stuck", "/v1/due"]
        if tasks:
            task = urllib.parse.quote(rng.choice(tasks), safe="")
            paths += [f"/v1/tasks/{task}", f"/v1/tasks/{task}/chain", f"/v1/tasks/{task}/history"]
        try:
            status, _ = call("GET", rng.choice(paths), timeout=10)
            with lock:
                counts["reads"] += 1
                if status >= 500:
                    counts["read5xx"] += 1
        except (OSError, http.client.HTTPException):
            with lock:
                counts["readErrors"] += 1
        time.sleep(0.02)


def proc_figures(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) / 1024
        return round(rss, 1), len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, StopIteration):
        return None, None


def main():
    started = time.monotonic()
    start_serve()
    threads = [threading.Thread(target=reporter, args=(i,), daemon=True) for i in range(args.reporters)]
    threads += [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(args.readers)]
    for t in threads:
        t.start()
    end = started + args.minutes * 60
    next_kill = time.monotonic() + args.kill_every * random.uniform(0.5, 1.5)
    next_sample = time.monotonic()
    while time.monotonic() < end:
        now = time.monotonic()
        if now >= next_sample:
            rss, fds = proc_figures(serve["proc"].pid)
            if rss is not None:
                samples.append({"t": round(now - started, 1), "incarnation": serve["incarnation"],
                                "rssMb": rss, "fds": fds})
            next_sample = now + 2
        if now >= next_kill:
            old = serve["proc"]
            old.send_signal(signal.SIGKILL)
            old.wait()
            killed = time.monotonic()
            start_serve()
            kills.append({"atSeconds": round(killed - started, 1), "pid": old.pid,
                          "restartSeconds": round(time.monotonic() - killed, 2)})
            print(f"soak: {len(kills)} kills, {len(acked)} reports acknowledged", flush=True)
            next_kill = time.monotonic() + args.kill_every * random.uniform(0.5, 1.5)
        time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join(timeout=180)
    problems = []
    # The models catch up (readyz), then every finished task is served with its final status.
    for _ in range(600):
        try:
            if call("GET", "/readyz")[0] == 200:
                break
        except OSError:
            pass
        time.sleep(0.1)
    wrong = 0
    for task, status in expected.items():
        code, data = call("GET", f"/v1/tasks/{urllib.parse.quote(task, safe='')}")
        served = json.loads(data).get("status") if code == 200 else f"HTTP {code}"
        if served != status:
            wrong += 1
            if wrong <= 5:
                problems.append(f"{task}: served {served}, expected {status}")
    serve["proc"].send_signal(signal.SIGTERM)
    serve["proc"].wait(timeout=120)
    export = os.path.join(args.data_dir + ".export.ndjson")
    subprocess.run(BASE + ["export", export], check=True,
                   stdout=subprocess.DEVNULL)
    stored = {}
    positions = []
    with open(export) as f:
        for line in f:
            event = json.loads(line)
            stored[event["eventId"]] = stored.get(event["eventId"], 0) + 1
            positions.append(event["position"])
    lost = [e for (_, _, _, _, _, ids) in acked for e in ids if e not in stored]
    doubled = [e for e, n in stored.items() if n > 1]
    if sorted(positions) != list(range(min(positions, default=0), min(positions, default=0) + len(positions))):
        problems.append("positions are not contiguous")
    not_accepted = [a for a in acked if a[3] != "accepted"]
    # Each report of these lifecycles appends exactly one event: a duplicate acknowledgement
    # (the original's response lost to a kill) names no eventIds, so the count covers it.
    if len(positions) != len(acked):
        problems.append(f"{len(positions)} events stored for {len(acked)} acknowledged reports")
    verify = subprocess.run(BASE + ["rebuild", "--verify"],
                            capture_output=True, text=True)
    if verify.returncode != 0:
        problems.append(f"rebuild --verify: exit {verify.returncode}: {verify.stdout[-400:]} {verify.stderr[-400:]}")
    if lost:
        problems.append(f"{len(lost)} acknowledged events lost")
    if doubled:
        problems.append(f"{len(doubled)} events stored twice")
    if not_accepted:
        problems.append(f"{len(not_accepted)} acknowledged reports not accepted, e.g. {not_accepted[:3]}")
    if counts["gaveUp"]:
        problems.append(f"{counts['gaveUp']} reports never acknowledged")
    problems += counts["unexpected"][:5]
    by_incarnation = {}
    for s in samples:
        b = by_incarnation.setdefault(s["incarnation"], {"rssMbMax": 0, "fdsMax": 0, "samples": 0})
        b["rssMbMax"] = max(b["rssMbMax"], s["rssMb"])
        b["fdsMax"] = max(b["fdsMax"], s["fds"])
        b.setdefault("fromSeconds", s["t"])
        b["toSeconds"] = s["t"]
        b.setdefault("rssMbFirst", s["rssMb"])
        b["rssMbLast"] = s["rssMb"]
        b.setdefault("fdsFirst", s["fds"])
        b["fdsLast"] = s["fds"]
        b["samples"] += 1
    log.flush()
    with open(args.data_dir + ".serve.log", "rb") as f:
        follower_failures = sum(1 for line in f if b"taskledger: projection follower failed" in line)
    figures = {
        "minutes": args.minutes, "kills": len(kills),
        "followerCrashEverySeconds": args.follower_crash_every,
        "followerFailuresRecovered": follower_failures,
        "restartSeconds": {"max": max((k["restartSeconds"] for k in kills), default=None),
                           "mean": round(sum(k["restartSeconds"] for k in kills) / len(kills), 2) if kills else None},
        "reportsAcknowledged": len(acked), "duplicateAcks": sum(1 for a in acked if a[4]),
        "eventsAcknowledged": sum(len(a[5]) for a in acked), "eventsStored": len(positions),
        "tasksChecked": len(expected), "tasksWrong": wrong, "lost": len(lost), "storedTwice": len(doubled),
        "retriesAfterKills": counts["retries"], "reads": counts["reads"], "readErrors": counts["readErrors"],
        "read5xx": counts["read5xx"],
        "rssMb": {"first": samples[0]["rssMb"] if samples else None, "max": max((s["rssMb"] for s in samples), default=None),
                  "last": samples[-1]["rssMb"] if samples else None},
        "fds": {"first": samples[0]["fds"] if samples else None, "max": max((s["fds"] for s in samples), default=None),
                "last": samples[-1]["fds"] if samples else None},
        "byIncarnation": by_incarnation,
        "rebuildVerify": verify.stdout.strip()[-300:],
        "problems": problems,
    }
    print("soak: " + json.dumps({k: v for k, v in figures.items() if k not in ("byIncarnation",)}), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**figures, "samples": samples, "killsDetail": kills}, f, indent=1)
    return 1 if problems else 0


sys.exit(main())
