//! Instants as milliseconds since the Unix epoch (UTC), the precision of the legacy tracker's
//! JavaScript `Date`. Parsed from and printed as RFC 3339.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// An instant, in milliseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Parses RFC 3339 (`2026-01-21T10:00:00.000Z`, any offset); sub-millisecond digits are
    /// truncated, as a JavaScript `Date` would.
    pub fn parse(text: &str) -> Option<Timestamp> {
        let parsed = chrono::DateTime::parse_from_rfc3339(text).ok()?;
        Some(Timestamp(parsed.timestamp_millis()))
    }

    /// Milliseconds since the epoch.
    pub fn millis(self) -> i64 {
        self.0
    }

    /// `self` plus `millis`, saturating rather than overflowing.
    pub fn plus_millis(self, millis: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(millis))
    }

    /// `self` minus `millis`, saturating rather than overflowing.
    pub fn minus_millis(self, millis: i64) -> Timestamp {
        Timestamp(self.0.saturating_sub(millis))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match chrono::DateTime::from_timestamp_millis(self.0) {
            Some(instant) => write!(
                f,
                "{}",
                instant.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            ),
            // Out of chrono's range (±262,000 years): print the raw number rather than fail.
            None => write!(f, "{}ms", self.0),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Timestamp::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 instant: {text:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_rfc3339_with_millis() {
        let t = Timestamp::parse("2026-01-21T10:00:00.123Z").unwrap();
        assert_eq!(t.to_string(), "2026-01-21T10:00:00.123Z");
        let offset = Timestamp::parse("2026-01-21T11:00:00.123+01:00").unwrap();
        assert_eq!(offset, t);
        assert!(Timestamp::parse("2026-01-21 10:00").is_none());
    }
}
