//! Failure injection for the crash tests and the soak, in one place. Compiled only with the
//! `failpoints` feature, which the product build never enables (the test suite and the benches
//! do, through their dev-dependencies and `--features failpoints`).
//!
//! `TASKLEDGER_FAILPOINT=<name>` arms the point `name`; `<name>:<argument>` gives it an
//! argument (`follower-crash-every:10`). Read once per process.

use std::sync::OnceLock;

fn setting() -> Option<&'static (String, Option<String>)> {
    static SETTING: OnceLock<Option<(String, Option<String>)>> = OnceLock::new();
    SETTING
        .get_or_init(|| {
            let value = std::env::var("TASKLEDGER_FAILPOINT").ok()?;
            Some(match value.split_once(':') {
                Some((name, argument)) => (name.to_owned(), Some(argument.to_owned())),
                None => (value, None),
            })
        })
        .as_ref()
}

/// Whether the point `name` is armed.
pub fn armed(name: &str) -> bool {
    setting().is_some_and(|(armed, _)| armed == name)
}

/// The argument of the point `name`, when it is armed with one.
pub fn argument(name: &str) -> Option<&'static str> {
    setting()
        .filter(|(armed, _)| armed == name)
        .and_then(|(_, argument)| argument.as_deref())
}
