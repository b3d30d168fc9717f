#!/usr/bin/env python3
"""Seed corpora for the fuzz targets, from fixtures/ (bench/fuzz.sh runs this; the wal_open seeds
come from `cargo run --example wal_seeds`). Usage: seeds.py CORPUS_DIR"""
import hashlib, json, pathlib, sys

root = pathlib.Path(__file__).resolve().parent.parent
fixtures = root / "fixtures"
out = pathlib.Path(sys.argv[1])


def put(target, data):
    if isinstance(data, str):
        data = data.encode()
    folder = out / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ("seed-" + hashlib.sha1(data).hexdigest()[:16])).write_bytes(data)


ndjson = [p for p in fixtures.rglob("*.ndjson")]
for path in ndjson:
    text = path.read_text()
    put("ingest_ndjson", text)
    lines = [l for l in text.splitlines() if l.strip()]
    put("ingest_ndjson", "\n".join(lines[:8]) + "\n")
    for line in lines[:200]:
        put("report", line)
    for selector in (0x00, 0x01):
        put("http_body", bytes([selector]) + "\n".join(lines[:20]).encode())
for line in ["{}", "[]", "null", '{"op":"enqueue"}', '"x"']:
    put("report", line)

for path in (fixtures / "legacy").glob("*.json*"):
    text = path.read_text()
    put("legacy_export", text)
    for line in text.splitlines()[:50]:
        put("legacy_export", line)
for path in list((fixtures / "mappings").glob("*.toml")) + [fixtures / "config.example.toml"]:
    put("mapping_toml", path.read_text())

exec_id = "0b6f3a52-6c1e-4c39-9f0f-6f3d0e0b6f3a"
operator = json.dumps({"reason": "non-recoverable", "by": "ops@acme", "at": "2026-01-21T11:00:00Z"})
retry = json.dumps({"executionId": "1b6f3a52-6c1e-4c39-9f0f-6f3d0e0b6f3a", "by": "ops@acme"})
for selector, body in [
    (0x82, operator), (0x83, retry), (0x02, operator), (0x03, retry),
    (0x84, "queue=partner_tasks&category=transient&limit=5"), (0x84, "cursor=abc&limit=0"),
    (0x85, "partner_tasks:SATLOC:695d:02220710"), (0x86, "2026-01-21T10:00:01Z"),
    (0x87, "partner_tasks:SATLOC:695d:02220710"), (0x88, "olderThan=30m&at=2026-01-21T12:00:00Z"),
    (0x89, "at=2026-01-21T12:00:00Z"), (0x8a, "partner_tasks"),
    (0x0b, "token=abc&next=%2Fui%2Fdlq"), (0x8c, "csrf=x&action=archive&item=a%20b"),
    (0x8d, "queue=partner_tasks&q=ETIMEDOUT"), (0x8e, "partner_tasks:SATLOC:695d:02220710"),
    (0x8f, "q=partner"),
]:
    put("http_body", bytes([selector]) + body.encode())

put("stored_records", b"\x20" + b"\x00" * 40)
