//! Regression (found by schemathesis, bench/hostile-http.sh): `GET /v1/stuck?olderThanMs=
//! -9223372036854775808` overflowed `at - older_than_ms` (a panic in debug builds, the
//! connection dropped without an answer; a wrapped threshold in release). Any threshold is
//! answered now.

use taskledger_domain::Timestamp;
use taskledger_projections::query::stuck;
use taskledger_projections::MemoryKv;

#[test]
fn any_threshold_is_answered() {
    let kv = MemoryKv::new();
    let at = Timestamp::parse("2026-01-21T10:00:00Z").expect("an instant");
    for older_than_ms in [i64::MIN, -1, 0, 1_800_000, i64::MAX] {
        let items = stuck(&kv, at, older_than_ms, None).expect("an answer");
        assert!(items.items.is_empty());
    }
}
