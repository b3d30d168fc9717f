//! Who is calling and what they may do, decided before a byte of a request's body is read.
//!
//! - [`Tokens`]: the configured bearer tokens, each with a principal name and roles. A presented
//!   token is hashed (BLAKE3) and compared with every configured one in constant time, so
//!   neither a token's bytes nor its position leak through timing.
//! - [`guard`]: the middleware in front of every route. In order: the `Host` of a service
//!   without tokens must be a loopback name (DNS rebinding: 421); a state-changing request from
//!   a foreign `Origin`, or with a content type a browser may send without a preflight, is
//!   refused (403); the caller is authenticated (401 before the body is read, so no `100
//!   Continue` either); requests in flight are bounded per principal and for unauthenticated
//!   callers (429). The authenticated [`Principal`] goes into the request's extensions.
//! - Authorization per operation is [`Principal::may_send`]: archive and retry are operators'
//!   wherever they arrive (SPEC section 3).

use crate::api::{ApiError, Role};
use crate::ui::is_ui_path;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use taskledger_domain::Op;
use tokio::sync::Semaphore;

/// Requests of one principal in flight at once (every token of that name together): far more
/// than a fleet of workers needs (they wait for their acknowledgements), few enough that one
/// leaked token cannot hold every connection's memory.
pub const PRINCIPAL_REQUESTS_MAX: usize = 1024;
/// Requests in flight at once from callers without a valid bearer token (sign-in pages, UI
/// sessions, health checks, refusals being answered).
pub const UNAUTHENTICATED_REQUESTS_MAX: usize = 256;
/// The body of a sign-in form at most: a token and where to go next.
pub const LOGIN_BODY_BYTES_MAX: usize = 8 * 1024;
/// Sign-in attempts one client address may make per minute; past it, 429 until the minute is
/// over.
pub const LOGIN_ATTEMPTS_PER_MINUTE_MAX: u32 = 20;
/// Client addresses whose sign-in attempts are counted at once (the oldest window is dropped).
pub const LOGIN_CLIENTS_TRACKED_MAX: usize = 10_000;
/// The principal of every request to a service without tokens (loopback only).
pub const LOOPBACK_PRINCIPAL: &str = "loopback";

/// Who the server authenticated, and their roles.
#[derive(Debug, Clone)]
pub struct Principal {
    pub name: Arc<str>,
    pub roles: Vec<Role>,
}

impl Principal {
    pub fn can(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// The role `op` needs: operator for archive and retry, reporter for the rest.
    pub fn role_for(op: Op) -> Role {
        if op.is_operator_action() {
            Role::Operator
        } else {
            Role::Reporter
        }
    }

    /// Whether this principal may send a report of `op`.
    pub fn may_send(&self, op: Op) -> bool {
        self.can(Principal::role_for(op))
    }

    fn loopback() -> Principal {
        Principal {
            name: Arc::from(LOOPBACK_PRINCIPAL),
            roles: vec![Role::Reporter, Role::Reader, Role::Operator],
        }
    }
}

/// One configured token.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    /// Where it was configured, for errors: `TASKLEDGER_TOKENS entry 2`, `[server] tokens[0]`.
    pub source: String,
    /// The principal recorded in the events it appends.
    pub name: String,
    pub secret: String,
    pub roles: Vec<Role>,
}

/// A token configuration the service refuses to start with.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("{setting}: the token is empty")]
    Empty { setting: String },
    #[error("{setting}: the same token as {first} (each token must be distinct)")]
    Duplicate { setting: String, first: String },
    #[error("{setting}: the name {problem}")]
    Name { setting: String, problem: String },
    #[error("{setting}: no role (reporter, reader, operator)")]
    NoRole { setting: String },
}

struct Entry {
    digest: blake3::Hash,
    principal: Principal,
}

/// The configured tokens. Empty: no authentication (`serve` allows that on loopback only).
#[derive(Default)]
pub struct Tokens {
    entries: Vec<Entry>,
    /// Requests in flight per principal name.
    in_flight: HashMap<Arc<str>, Arc<Semaphore>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets, not even hashed.
        let names: Vec<&str> = self.entries.iter().map(|e| &*e.principal.name).collect();
        f.debug_struct("Tokens").field("names", &names).finish()
    }
}

impl Tokens {
    /// Checks every token (not empty, distinct, a valid name, a role) and builds the table.
    pub fn new(specs: Vec<TokenSpec>, per_principal_max: usize) -> Result<Tokens, TokenError> {
        let mut entries: Vec<Entry> = Vec::with_capacity(specs.len());
        let mut sources: Vec<String> = Vec::with_capacity(specs.len());
        let mut in_flight = HashMap::new();
        for spec in specs {
            if spec.secret.trim().is_empty() {
                return Err(TokenError::Empty {
                    setting: spec.source,
                });
            }
            if spec.name.is_empty() {
                return Err(TokenError::Name {
                    setting: spec.source,
                    problem: "is empty".into(),
                });
            }
            if let Err(error) = taskledger_domain::check_key("principal", &spec.name) {
                let problem = match error {
                    taskledger_domain::DomainError::InvalidField { problem, .. } => problem,
                    other => other.to_string(),
                };
                return Err(TokenError::Name {
                    setting: spec.source,
                    problem,
                });
            }
            if spec.roles.is_empty() {
                return Err(TokenError::NoRole {
                    setting: spec.source,
                });
            }
            let digest = blake3::hash(spec.secret.as_bytes());
            if let Some(index) = entries.iter().position(|e| e.digest == digest) {
                return Err(TokenError::Duplicate {
                    setting: spec.source,
                    first: sources[index].clone(),
                });
            }
            let name: Arc<str> = Arc::from(spec.name.as_str());
            in_flight
                .entry(name.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(per_principal_max.max(1))));
            sources.push(spec.source);
            entries.push(Entry {
                digest,
                principal: Principal {
                    name,
                    roles: spec.roles,
                },
            });
        }
        Ok(Tokens { entries, in_flight })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The principal of a presented token: every entry is compared (constant time each), with
    /// no early exit.
    pub fn authenticate(&self, secret: &str) -> Option<Principal> {
        let presented = blake3::hash(secret.as_bytes());
        let mut found = None;
        for entry in &self.entries {
            // blake3::Hash's equality is constant time.
            if entry.digest == presented {
                found = Some(&entry.principal);
            }
        }
        found.cloned()
    }

    /// The current roles of a principal by name (a session keeps the name; a token removed
    /// from the configuration ends its sessions at the next restart).
    pub fn principal_named(&self, name: &str) -> Option<Principal> {
        self.entries
            .iter()
            .find(|e| &*e.principal.name == name)
            .map(|e| e.principal.clone())
    }

    fn semaphore(&self, name: &str) -> Option<Arc<Semaphore>> {
        self.in_flight.get(name).cloned()
    }
}

/// The token of an `Authorization: Bearer …` header (the scheme in any case, RFC 9110 §11.1).
/// `None` without the header; `Some(Err)` for another scheme or an unreadable value.
pub fn bearer(headers: &HeaderMap) -> Option<Result<&str, ()>> {
    let value = headers.get(header::AUTHORIZATION)?;
    let Ok(text) = value.to_str() else {
        return Some(Err(()));
    };
    let text = text.trim();
    match text.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
            let token = token.trim();
            if token.is_empty() {
                Some(Err(()))
            } else {
                Some(Ok(token))
            }
        }
        _ => Some(Err(())),
    }
}

/// Whether a `Host` header names this machine: `localhost` (or a name under `.localhost`), a
/// loopback IPv4 or IPv6 address, with or without a port.
pub fn loopback_host(host: &str) -> bool {
    let host = host.trim().to_ascii_lowercase();
    let Some(name) = host_without_port(&host) else {
        return false;
    };
    let name = name.trim_end_matches('.');
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    let address = name
        .strip_prefix('[')
        .and_then(|v6| v6.strip_suffix(']'))
        .unwrap_or(name);
    address.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether `host` (a `Host` header) is one of `allowed`: the same name and port, or the same
/// name when the allowed entry has no port (case-insensitive, a trailing dot ignored).
pub fn allowed_host(host: &str, allowed: &[String]) -> bool {
    let host = host.trim().to_ascii_lowercase();
    let Some(name) = host_without_port(&host) else {
        return false;
    };
    let name = name.trim_end_matches('.');
    let host = host.trim_end_matches('.');
    allowed.iter().any(|entry| {
        let entry = entry.trim().to_ascii_lowercase();
        let entry = entry.trim_end_matches('.');
        entry == host || entry == name
    })
}

/// The name of a `Host` value: `name` of `name:port`, `[v6]` of `[v6]:port`, the value itself
/// without a port; `None` when what follows a bracketed address is not a port.
fn host_without_port(host: &str) -> Option<&str> {
    let is_port = |port: &str| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
    if host.starts_with('[') {
        let end = host.find(']')?;
        let (name, rest) = host.split_at(end + 1);
        return (rest.is_empty() || rest.strip_prefix(':').is_some_and(is_port)).then_some(name);
    }
    Some(match host.rsplit_once(':') {
        Some((name, port)) if is_port(port) => name,
        _ => host,
    })
}

/// The host (and port) of an `Origin` header; `None` for `null` or an unreadable one.
pub(crate) fn origin_host(origin: &str) -> Option<&str> {
    let rest = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))?;
    Some(rest.split(['/', '?', '#']).next().unwrap_or(""))
}

/// A request that sends an `Origin` other than the host it was sent to: a page of another site.
fn foreign_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return false;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match (origin.to_str().ok().and_then(origin_host), host) {
        (Some(origin), Some(host)) => !origin.eq_ignore_ascii_case(host),
        _ => true,
    }
}

/// The media type of a request, lower case, without parameters.
fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(
        value
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}

/// Paths anyone may read without a token: liveness, readiness, the API's description and the
/// UI's static assets and sign-in page (`/metrics` too unless `metrics_token_required`).
fn public(path: &str, method: &Method, metrics_public: bool) -> bool {
    match path {
        "/healthz" | "/readyz" | "/openapi.json" => true,
        "/metrics" => metrics_public,
        "/ui/login" => true,
        _ => method == Method::GET && path.starts_with("/ui/assets/"),
    }
}

/// Counts sign-in attempts per client address in one-minute windows, for a bounded number of
/// addresses.
#[derive(Default)]
pub(crate) struct LoginLimiter {
    windows: Mutex<HashMap<IpAddr, (std::time::Instant, u32)>>,
}

impl LoginLimiter {
    /// Whether `client` may try to sign in now (counting this attempt).
    fn allow(&self, client: Option<IpAddr>) -> bool {
        // Without an address (a test driving the router in process) every caller shares one.
        let client = client.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let now = std::time::Instant::now();
        let minute = std::time::Duration::from_secs(60);
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() >= LOGIN_CLIENTS_TRACKED_MAX && !windows.contains_key(&client) {
            windows.retain(|_, (started, _)| now.duration_since(*started) < minute);
            if windows.len() >= LOGIN_CLIENTS_TRACKED_MAX {
                if let Some(oldest) = windows
                    .iter()
                    .min_by_key(|(_, (started, _))| *started)
                    .map(|(ip, _)| *ip)
                {
                    windows.remove(&oldest);
                }
            }
        }
        let window = windows.entry(client).or_insert((now, 0));
        if now.duration_since(window.0) >= minute {
            *window = (now, 0);
        }
        window.1 += 1;
        window.1 <= LOGIN_ATTEMPTS_PER_MINUTE_MAX
    }
}

/// What the guard needs.
pub(crate) struct Guard {
    pub tokens: Arc<Tokens>,
    pub metrics_public: bool,
    /// `[server] allowed_hosts`: behind tokens, the only `Host`s answered (empty: any).
    pub allowed_hosts: Vec<String>,
    pub unauthenticated: Arc<Semaphore>,
    pub logins: LoginLimiter,
    /// Whether a request carries a live UI session (the UI's table).
    pub has_session: Box<dyn Fn(&HeaderMap) -> bool + Send + Sync>,
}

/// The largest body a request may send, when the guard lowers it below `[server]
/// body_bytes_max` (a sign-in form).
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimit(pub usize);

/// A refusal in the shape of its place: the API's JSON error, or a small HTML page under `/ui`.
fn refuse(path: &str, status: StatusCode, code: &'static str, message: &str) -> Response {
    let error = ApiError::new(status, code, message.to_owned());
    let mut response = if is_ui_path(path) {
        crate::ui::error_page(None, error)
    } else {
        error.into_response()
    };
    if status == StatusCode::UNAUTHORIZED && !is_ui_path(path) {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"taskledger\""),
        );
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    // The body was not read: the connection cannot be reused for another request.
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The middleware every request passes first (module docs).
pub(crate) async fn guard(
    State(guard): State<Arc<Guard>>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_owned();
    let headers = request.headers();
    let open = guard.tokens.is_empty();
    let changes_state = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if open {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        if !host.is_some_and(loopback_host) {
            return refuse(
                &path,
                StatusCode::MISDIRECTED_REQUEST,
                "misdirected",
                "this service has no tokens and answers only requests addressed to a loopback host (localhost, 127.0.0.1, [::1])",
            );
        }
    }
    if !open && !guard.allowed_hosts.is_empty() {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        if !host.is_some_and(|host| allowed_host(host, &guard.allowed_hosts)) {
            return refuse(
                &path,
                StatusCode::MISDIRECTED_REQUEST,
                "misdirected",
                "this service answers only requests addressed to its configured host names",
            );
        }
    }
    if changes_state {
        if (open || is_ui_path(&path)) && foreign_origin(headers) {
            return refuse(
                &path,
                StatusCode::FORBIDDEN,
                "forbidden",
                "a request from another site is refused",
            );
        }
        let media = media_type(headers);
        if is_ui_path(&path) {
            if media.as_deref() != Some("application/x-www-form-urlencoded") {
                return refuse(
                    &path,
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "the UI takes forms (application/x-www-form-urlencoded) only",
                );
            }
        } else if open
            && !matches!(
                media.as_deref(),
                Some("application/json") | Some("application/x-ndjson")
            )
        {
            return refuse(
                &path,
                StatusCode::FORBIDDEN,
                "forbidden",
                "a request that changes state must be application/json or application/x-ndjson",
            );
        }
    }
    let principal = if open {
        Some(Principal::loopback())
    } else {
        match bearer(headers) {
            Some(Ok(secret)) => match guard.tokens.authenticate(secret) {
                Some(principal) => Some(principal),
                None => {
                    return refuse(
                        &path,
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        "unknown token",
                    )
                }
            },
            Some(Err(())) => {
                return refuse(
                    &path,
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "the Authorization header is not \"Bearer <token>\"",
                )
            }
            None => None,
        }
    };
    if principal.is_none() && !public(&path, request.method(), guard.metrics_public) {
        if !is_ui_path(&path) {
            return refuse(
                &path,
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a bearer token is required",
            );
        }
        if changes_state && !(guard.has_session)(headers) {
            return refuse(
                &path,
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "sign in first",
            );
        }
    }
    if path == "/ui/login" && *request.method() == Method::POST {
        let client = request
            .extensions()
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip());
        if !guard.logins.allow(client) {
            metrics::counter!("taskledger_login_refusals_total").increment(1);
            return refuse(
                &path,
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_logins",
                "too many sign-in attempts from this address; wait a minute",
            );
        }
        request
            .extensions_mut()
            .insert(BodyLimit(LOGIN_BODY_BYTES_MAX));
    }
    // Liveness and readiness answer whatever else is held: an orchestrator must not see a busy
    // service as a dead one (they read nothing but a counter).
    if matches!(path.as_str(), "/healthz" | "/readyz") {
        if let Some(principal) = principal {
            request.extensions_mut().insert(principal);
        }
        return next.run(request).await;
    }
    let semaphore = principal
        .as_ref()
        .filter(|_| !open)
        .and_then(|p| guard.tokens.semaphore(&p.name))
        .unwrap_or_else(|| guard.unauthenticated.clone());
    let Ok(_permit) = semaphore.try_acquire_owned() else {
        metrics::counter!("taskledger_requests_refused_busy_total").increment(1);
        return refuse(
            &path,
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_requests",
            "too many requests of this caller in flight; retry shortly",
        );
    };
    if let Some(principal) = principal {
        request.extensions_mut().insert(principal);
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(source: &str, name: &str, secret: &str, roles: &[Role]) -> TokenSpec {
        TokenSpec {
            source: source.into(),
            name: name.into(),
            secret: secret.into(),
            roles: roles.to_vec(),
        }
    }

    #[test]
    fn empty_duplicate_or_badly_named_tokens_are_refused_naming_the_setting() {
        let refused = |specs| Tokens::new(specs, 8).unwrap_err().to_string();
        assert_eq!(
            refused(vec![spec(
                "TASKLEDGER_TOKENS entry 2",
                "",
                " ",
                &[Role::Reader]
            )]),
            "TASKLEDGER_TOKENS entry 2: the token is empty"
        );
        let message = refused(vec![
            spec("a", "w1", "s", &[Role::Reader]),
            spec("b", "w2", "s", &[Role::Reporter]),
        ]);
        assert_eq!(
            message,
            "b: the same token as a (each token must be distinct)"
        );
        assert!(
            refused(vec![spec("c", "w\u{0}", "s", &[Role::Reader])]).contains("control characters")
        );
        assert!(refused(vec![spec("d", "w", "s", &[])]).contains("no role"));
    }

    #[test]
    fn a_token_authenticates_as_its_principal_and_nothing_else_does() {
        let tokens = Tokens::new(
            vec![
                spec("a", "w1", "secret-1", &[Role::Reporter]),
                spec("b", "ops", "secret-2", &[Role::Operator, Role::Reader]),
            ],
            8,
        )
        .unwrap();
        assert_eq!(&*tokens.authenticate("secret-2").unwrap().name, "ops");
        assert!(tokens.authenticate("secret-").is_none());
        assert!(tokens.authenticate("").is_none());
        let w1 = tokens.authenticate("secret-1").unwrap();
        assert!(w1.may_send(Op::Enqueue) && w1.may_send(Op::Fail));
        assert!(!w1.may_send(Op::Archive) && !w1.may_send(Op::Retry));
        assert!(!format!("{tokens:?}").contains("secret"));
    }

    #[test]
    fn bearer_scheme_in_any_case_and_loopback_hosts() {
        let mut headers = HeaderMap::new();
        for (value, expected) in [
            ("Bearer abc", Some(Ok("abc"))),
            ("bearer abc", Some(Ok("abc"))),
            ("BEARER  abc ", Some(Ok("abc"))),
            ("Basic abc", Some(Err(()))),
            ("Bearer ", Some(Err(()))),
        ] {
            headers.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            assert_eq!(bearer(&headers), expected, "{value}");
        }
        for host in [
            "localhost",
            "localhost:7070",
            "LOCALHOST.",
            "app.localhost:1",
            "127.0.0.1:7070",
            "127.8.9.1",
            "[::1]:7070",
            "[::1]",
        ] {
            assert!(loopback_host(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:7070",
            "localhost.evil.example",
            "10.0.0.1:7070",
            "[::2]:7070",
            "[::1]x",
            "",
        ] {
            assert!(!loopback_host(host), "{host}");
        }
    }

    #[test]
    fn allowed_hosts_match_with_or_without_a_port() {
        let allowed = vec!["Ledger.Example.com".to_owned(), "10.0.0.5:7070".to_owned()];
        for host in [
            "ledger.example.com",
            "ledger.example.com:443",
            "LEDGER.example.com.",
        ] {
            assert!(allowed_host(host, &allowed), "{host}");
        }
        assert!(allowed_host("10.0.0.5:7070", &allowed));
        for host in [
            "10.0.0.5:7071",
            "10.0.0.5",
            "evil.example",
            "ledger.example.com.evil.example",
        ] {
            assert!(!allowed_host(host, &allowed), "{host}");
        }
        assert!(allowed_host("[::1]:7070", &["[::1]".to_owned()]));
    }

    #[test]
    fn sign_in_attempts_are_limited_per_address() {
        let limiter = LoginLimiter::default();
        let a = Some(IpAddr::from([10, 0, 0, 1]));
        let b = Some(IpAddr::from([10, 0, 0, 2]));
        for _ in 0..LOGIN_ATTEMPTS_PER_MINUTE_MAX {
            assert!(limiter.allow(a));
        }
        assert!(!limiter.allow(a));
        assert!(
            limiter.allow(b),
            "another address is not limited by a's attempts"
        );
    }
}
