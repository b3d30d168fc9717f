//! A short slice of the failover loop (`taskledger-bench failover`, README): two instances on a
//! PostgreSQL primary with a synchronous standby, the primary SIGKILLed twice under load. The
//! bench exits non-zero on any acknowledged report lost, any execution duplicated or any model
//! that differs from a rebuild. The long run (20+ kills) is a separate command.

#[path = "../../tests/common/mod.rs"]
mod common;

#[test]
fn two_primary_kills_lose_nothing_acknowledged() {
    if !taskledger_testkit::runs(
        "postgres",
        "the failover slice",
        taskledger_testkit::pg_cluster::unavailable_reason(),
    ) {
        return;
    }
    // The bench finds `taskledger` beside itself; this asserts it was built.
    common::taskledger_bin();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_taskledger-bench"))
        .args(["failover", "--kills", "2", "--workers", "8"])
        .args(["--between-min-ms", "500", "--between-max-ms", "1200"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("| acknowledged reports whose events are missing | 0 |"),
        "{stdout}"
    );
    assert!(
        stdout.contains("| instances whose models equal a rebuild | 2 of 2 |"),
        "{stdout}"
    );
}
