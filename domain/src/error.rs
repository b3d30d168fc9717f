//! The domain's one error type.

/// What can be wrong with a report before any rule is applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The report is not valid JSON at all.
    #[error("not valid JSON: {message}")]
    Json {
        /// serde_json's description, with its column.
        message: String,
    },
    /// A field is missing, of the wrong type, or out of its limits.
    #[error("field `{field}`: {problem}")]
    InvalidField {
        /// The camelCase name of the field, dotted for nested ones (`error.message`).
        field: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The policy configuration is inconsistent.
    #[error("policy `{setting}`: {problem}")]
    InvalidPolicy {
        /// The setting at fault.
        setting: String,
        /// What is wrong with it.
        problem: String,
    },
}

impl DomainError {
    pub(crate) fn field(field: impl Into<String>, problem: impl Into<String>) -> Self {
        DomainError::InvalidField {
            field: field.into(),
            problem: problem.into(),
        }
    }
}
