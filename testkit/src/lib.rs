//! Test machinery, never linked into the product (`publish = false`; a dev-dependency of the
//! crates whose tests use it, a dependency of `taskledger-bench`):
//!
//! - [`fault_disk`]: a simulated disk under the write-ahead log and the read models' file that
//!   tears, drops and fails writes and syncs, and loses power;
//! - [`simulation`] (the event store's) and [`models_simulation`] (the read models'): seeded
//!   runs of appends and catch-ups on that disk, each checked against what was acknowledged;
//! - [`pg_cluster`]: throwaway PostgreSQL servers from Debian's packages (a primary, a
//!   synchronous standby, promote, SIGKILL);
//! - [`conformance`]: the suite every backend passes;
//! - [`runs`] and [`required`]: whether a test that needs a server or a privilege runs, skips saying why, or
//!   fails because CI said the thing must be there (`TASKLEDGER_REQUIRE`).

pub mod conformance;
pub mod fault_disk;
pub mod models_simulation;
pub mod pg_cluster;
pub mod simulation;

/// The environment variable that lists what must be present (comma-separated: `postgres`,
/// `ui`, `clients`, `tmpfs`, `schemathesis`, …). `.ci/run` sets it, so a missing server fails
/// the run instead of skipping a test.
pub const REQUIRE_VAR: &str = "TASKLEDGER_REQUIRE";

/// Whether `what` is required here (named in [`REQUIRE_VAR`], or the variable is `all`).
pub fn required(what: &str) -> bool {
    std::env::var(REQUIRE_VAR).is_ok_and(|list| {
        list.split(',')
            .map(str::trim)
            .any(|item| item == what || item == "all")
    })
}

/// The one rule for a test that cannot run here: `missing` is why (`None`: it can run, and
/// this returns `true`). When `what` is required (`TASKLEDGER_REQUIRE`), the test fails with
/// the reason; otherwise it prints `SKIPPED: <test>: <reason>` on both streams and returns
/// `false`, and the caller returns without asserting anything.
pub fn runs(what: &str, test: &str, missing: Option<String>) -> bool {
    let Some(reason) = missing else {
        return true;
    };
    if required(what) {
        panic!("{test}: {REQUIRE_VAR} requires {what}, but {reason}");
    }
    println!("SKIPPED: {test}: {reason} (set {REQUIRE_VAR}={what} to make this a failure)");
    eprintln!("SKIPPED: {test}: {reason} (set {REQUIRE_VAR}={what} to make this a failure)");
    false
}

/// The `p`-quantile (0..=1) of `sorted` by the nearest-rank method (the smallest value with at
/// least `p` of the values at or below it); 0 for no values. The benchmarks' one percentile.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (sorted.len() as f64 * p.clamp(0.0, 1.0)).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
