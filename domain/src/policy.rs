//! Configurable policies: the dedup window, the error classifier and per-category retry
//! policies. Loaded from the `[policy]` part of the configuration; defaults match the legacy
//! tracker of seeds/000.

use crate::error::DomainError;
use crate::ids::ReportKey;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// seeds/000 checks `enqueuedAt > now - 5 min`.
pub const DEDUP_WINDOW_MS_DEFAULT: u64 = 5 * 60 * 1000;
/// seeds/001 `maxRetries` default.
pub const MAX_RETRIES_DEFAULT: u32 = 5;

/// Dedup settings for one queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupRule {
    /// An enqueue is a duplicate while another execution of the task is queued/processing and
    /// was enqueued less than this long before it.
    #[serde(default = "default_window")]
    pub window_ms: u64,
    /// Ignore the window: any queued/processing execution makes the enqueue a duplicate.
    #[serde(default)]
    pub while_active: bool,
}

fn default_window() -> u64 {
    DEDUP_WINDOW_MS_DEFAULT
}

impl Default for DedupRule {
    fn default() -> Self {
        DedupRule {
            window_ms: DEDUP_WINDOW_MS_DEFAULT,
            while_active: false,
        }
    }
}

// No `deny_unknown_fields` here: serde does not support it together with `flatten`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DedupPolicy {
    #[serde(default, flatten)]
    pub default: DedupRule,
    /// Per-queue overrides, by queue name.
    #[serde(default)]
    pub queues: BTreeMap<String, DedupRule>,
}

impl DedupPolicy {
    pub fn rule_for(&self, queue: &str) -> &DedupRule {
        self.queues.get(queue).unwrap_or(&self.default)
    }
}

/// Claim settings for one queue.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRule {
    /// A claim of a `processing` execution whose running attempt started at least this long
    /// before the claim reclaims it (the worker is presumed dead, as a broker's visibility
    /// timeout presumes). `None`: no lease, only a claim that says `redelivered` reclaims.
    #[serde(default)]
    pub lease_ms: Option<u64>,
}

// No `deny_unknown_fields` here: serde does not support it together with `flatten`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClaimPolicy {
    #[serde(default, flatten)]
    pub default: ClaimRule,
    /// Per-queue overrides, by queue name; a queue's rule replaces the default entirely.
    #[serde(default)]
    pub queues: BTreeMap<String, ClaimRule>,
}

impl ClaimPolicy {
    pub fn rule_for(&self, queue: &str) -> &ClaimRule {
        self.queues.get(queue).unwrap_or(&self.default)
    }
}

/// One classifier rule: the first rule that matches the error message gives the category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierRule {
    pub category: String,
    /// Case-insensitive substrings; any one matches.
    #[serde(default)]
    pub contains: Vec<String>,
    /// A regular expression (Rust `regex` syntax), matched against the original message.
    #[serde(default)]
    pub regex: Option<String>,
}

/// Retry policy of one error category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// A cap on retries for this category; `None` leaves the execution's own maxRetries.
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// Backoff before the first retry.
    #[serde(default = "default_initial_backoff")]
    pub initial_backoff_ms: u64,
    /// Each further retry waits this many times longer.
    #[serde(default = "default_multiplier")]
    pub multiplier: f64,
    /// The longest backoff.
    #[serde(default = "default_max_backoff")]
    pub max_backoff_ms: u64,
    /// ± this fraction of the backoff, derived from the report (deterministic), e.g. 0.1.
    #[serde(default)]
    pub jitter: f64,
}

fn default_initial_backoff() -> u64 {
    60_000
}
fn default_multiplier() -> f64 {
    2.0
}
fn default_max_backoff() -> u64 {
    60 * 60 * 1000
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: None,
            initial_backoff_ms: default_initial_backoff(),
            multiplier: default_multiplier(),
            max_backoff_ms: default_max_backoff(),
            jitter: 0.0,
        }
    }
}

impl RetryPolicy {
    /// The backoff before retry number `retry_count + 1`, decided once and stored in the event.
    pub fn backoff_ms(&self, retry_count: u32, report_key: ReportKey) -> u64 {
        let exponent = i32::try_from(retry_count).unwrap_or(i32::MAX);
        let base = self.initial_backoff_ms as f64 * self.multiplier.powi(exponent);
        let capped = base.min(self.max_backoff_ms as f64);
        let jittered = capped * (1.0 + self.jitter * (2.0 * report_key.unit_fraction() - 1.0));
        jittered.clamp(0.0, self.max_backoff_ms as f64).round() as u64
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicies {
    /// For every category without its own entry.
    #[serde(default)]
    pub default: RetryPolicy,
    #[serde(default)]
    pub categories: BTreeMap<String, RetryPolicy>,
}

impl RetryPolicies {
    pub fn for_category(&self, category: &str) -> &RetryPolicy {
        self.categories.get(category).unwrap_or(&self.default)
    }
}

/// Every configurable rule input.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub dedup: DedupPolicy,
    /// The claim lease (SPEC section 4's `claimLease`): default off.
    #[serde(default)]
    pub claim: ClaimPolicy,
    /// Ordered: the first match wins; no match gives `unknown`.
    #[serde(default = "default_classifier")]
    pub classifier: Vec<ClassifierRule>,
    #[serde(default)]
    pub retry: RetryPolicies,
    #[serde(default = "default_max_retries")]
    pub default_max_retries: u32,
    #[serde(skip)]
    compiled: Vec<Option<regex::Regex>>,
}

fn default_max_retries() -> u32 {
    MAX_RETRIES_DEFAULT
}

/// seeds/000 `categorizeError`, rule for rule, in its order.
pub fn default_classifier() -> Vec<ClassifierRule> {
    let rule = |category: &str, words: &[&str]| ClassifierRule {
        category: category.into(),
        contains: words.iter().map(|word| (*word).into()).collect(),
        regex: None,
    };
    vec![
        rule("transient", &["timeout", "econnrefused", "network"]),
        rule("validation", &["invalid", "missing", "required"]),
        rule("processing", &["parse", "format"]),
        rule("infrastructure", &["database", "mongo", "fs "]),
        rule("partner_api", &["partner", "api", "satloc"]),
    ]
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            dedup: DedupPolicy::default(),
            claim: ClaimPolicy::default(),
            classifier: default_classifier(),
            retry: RetryPolicies::default(),
            default_max_retries: MAX_RETRIES_DEFAULT,
            compiled: Vec::new(),
        }
        .compiled()
        .expect("the default policy is valid")
    }
}

impl Policy {
    /// Validates the policy and compiles its regular expressions. Call after deserializing.
    pub fn compiled(mut self) -> Result<Policy, DomainError> {
        let invalid =
            |setting: String, problem: String| DomainError::InvalidPolicy { setting, problem };
        self.compiled = Vec::with_capacity(self.classifier.len());
        for (index, rule) in self.classifier.iter_mut().enumerate() {
            if rule.contains.is_empty() && rule.regex.is_none() {
                return Err(invalid(
                    format!("classifier[{index}]"),
                    "needs `contains` or `regex`".into(),
                ));
            }
            for word in &mut rule.contains {
                *word = word.to_lowercase();
            }
            let regex = match &rule.regex {
                Some(pattern) => Some(regex::Regex::new(pattern).map_err(|error| {
                    invalid(format!("classifier[{index}].regex"), error.to_string())
                })?),
                None => None,
            };
            self.compiled.push(regex);
        }
        let leases = std::iter::once(("claim.lease_ms".to_owned(), &self.claim.default)).chain(
            self.claim
                .queues
                .iter()
                .map(|(queue, rule)| (format!("claim.queues.{queue}.lease_ms"), rule)),
        );
        for (setting, rule) in leases {
            if rule.lease_ms == Some(0) {
                // A zero lease would let every claim take a running execution from its worker.
                return Err(invalid(
                    setting,
                    "must be > 0 (leave it out for no lease)".into(),
                ));
            }
        }
        let policies = std::iter::once(("default".to_owned(), &self.retry.default)).chain(
            self.retry
                .categories
                .iter()
                .map(|(k, v)| (format!("categories.{k}"), v)),
        );
        for (name, policy) in policies {
            if !(policy.multiplier.is_finite() && policy.multiplier >= 1.0) {
                return Err(invalid(
                    format!("retry.{name}.multiplier"),
                    "must be ≥ 1".into(),
                ));
            }
            if !(0.0..=1.0).contains(&policy.jitter) {
                return Err(invalid(
                    format!("retry.{name}.jitter"),
                    "must be within 0..=1".into(),
                ));
            }
        }
        Ok(self)
    }

    /// The category of an error message: the first matching rule, else `unknown`.
    pub fn classify(&self, message: &str) -> &str {
        let lower = message.to_lowercase();
        for (index, rule) in self.classifier.iter().enumerate() {
            let by_substring = rule
                .contains
                .iter()
                .any(|word| lower.contains(word.as_str()));
            let by_regex = self
                .compiled
                .get(index)
                .and_then(Option::as_ref)
                .is_some_and(|regex| regex.is_match(message));
            if by_substring || by_regex {
                return &rule.category;
            }
        }
        "unknown"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_classifier_follows_seeds_000_in_order() {
        let policy = Policy::default();
        let cases = [
            ("Request timeout calling partner api", "transient"), // timeout wins over partner/api
            // "etimedout" does not contain "timeout": the legacy code files it under partner_api.
            ("ETIMEDOUT calling partner api", "partner_api"),
            ("connect ECONNREFUSED 10.0.0.1", "transient"),
            ("Invalid log header", "validation"),
            ("Missing required field", "validation"),
            ("Cannot parse binary record", "processing"),
            ("bad format", "processing"),
            ("MongoNetworkError", "transient"), // "network" comes before "mongo"
            ("mongo write concern", "infrastructure"),
            ("fs error", "infrastructure"),
            ("fserror", "unknown"), // "fs " needs its space
            ("SatLoc returned 500", "partner_api"),
            ("rapid failure", "partner_api"), // "api" is a substring of "rapid": legacy behaviour
            ("", "unknown"),
            ("boom", "unknown"),
        ];
        for (message, category) in cases {
            assert_eq!(policy.classify(message), category, "{message:?}");
        }
    }

    #[test]
    fn backoff_grows_caps_and_jitters_deterministically() {
        let key = ReportKey(uuid::Uuid::from_u128(42));
        let policy = RetryPolicy {
            max_retries: None,
            initial_backoff_ms: 300_000,
            multiplier: 4.0,
            max_backoff_ms: 6 * 3_600_000,
            jitter: 0.0,
        };
        assert_eq!(policy.backoff_ms(0, key), 300_000);
        assert_eq!(policy.backoff_ms(1, key), 1_200_000);
        assert_eq!(policy.backoff_ms(2, key), 4_800_000);
        assert_eq!(policy.backoff_ms(9, key), 6 * 3_600_000);
        let jittered = RetryPolicy {
            jitter: 0.5,
            ..policy
        };
        let first = jittered.backoff_ms(0, key);
        assert_eq!(first, jittered.backoff_ms(0, key));
        assert!((150_000..=450_000).contains(&first));
    }

    #[test]
    fn bad_policies_are_refused_with_the_setting() {
        let mut policy = Policy::default();
        policy.classifier.push(ClassifierRule {
            category: "x".into(),
            contains: vec![],
            regex: Some("(".into()),
        });
        match policy.compiled() {
            Err(DomainError::InvalidPolicy { setting, .. }) => {
                assert_eq!(setting, "classifier[5].regex")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_claim_lease_is_off_by_default_per_queue_and_never_zero() {
        let policy = Policy::default();
        assert_eq!(policy.claim.rule_for("partner_tasks").lease_ms, None);
        let configured: Policy = serde_json::from_str(
            r#"{"claim":{"lease_ms":600000,"queues":{"slow":{"lease_ms":7200000},"off":{}}}}"#,
        )
        .unwrap();
        let configured = configured.compiled().unwrap();
        assert_eq!(configured.claim.rule_for("any").lease_ms, Some(600_000));
        assert_eq!(configured.claim.rule_for("slow").lease_ms, Some(7_200_000));
        assert_eq!(configured.claim.rule_for("off").lease_ms, None);
        let zero: Policy =
            serde_json::from_str(r#"{"claim":{"queues":{"q":{"lease_ms":0}}}}"#).unwrap();
        match zero.compiled() {
            Err(DomainError::InvalidPolicy { setting, .. }) => {
                assert_eq!(setting, "claim.queues.q.lease_ms")
            }
            other => panic!("{other:?}"),
        }
    }
}
