//! The web UI under `/ui/` (SPEC section 7): one server-rendered page per question a person asks
//! — search, a task's timeline and retry chain as of any instant, the DLQ with its operator
//! actions, queue health, stuck and due executions. Every view and filter is a query string (a
//! deep link); every asset is compiled into the binary.
//!
//! Auth is the API's: the same bearer tokens and roles. A browser signs in once (`POST
//! /ui/login`); the session lives in the server's memory behind an HttpOnly, SameSite=Strict
//! cookie, and every POST carries the session's CSRF token and must come from this origin. On
//! loopback without tokens (the only place `serve` allows that) nobody signs in, but POSTs are
//! still CSRF-checked, against an anonymous session.

pub(crate) mod html;
mod pages;

use crate::api::{ApiError, AppState, Role};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Sessions held at most; the oldest goes when a new one would pass the bound (a flood of
/// sign-ins cannot grow the server's memory).
pub const SESSIONS_MAX: usize = 10_000;
/// Sessions one principal holds at most: its oldest goes when it signs in once more, so a
/// flood of sign-ins with one token never pushes another principal's session out.
pub const SESSIONS_PER_PRINCIPAL_MAX: usize = 16;
/// A session ends this long after sign-in.
pub const SESSION_SECONDS_MAX: u64 = 12 * 3600;
/// Executions one action (archive / retry) takes at most: one screen of the DLQ.
pub const ACTION_ITEMS_MAX: usize = 200;
/// How long an action waits for the read models to include its events before showing the list
/// again (the list reads the models; a task's page reads its stream and needs no wait).
pub const ACTION_PROJECTION_WAIT_MS: u64 = 3000;

const COOKIE: &str = "taskledger_session";
const CSS: &str = include_str!("../../assets/ui.css");
const JS: &str = include_str!("../../assets/ui.js");

/// What one session holds: the principal it signed in as (none on an open, loopback service),
/// its CSRF token, and the outcome of the last action, shown once.
struct Session {
    principal: Option<Arc<str>>,
    csrf: String,
    started: Instant,
    flash: Option<Vec<pages::ActionOutcome>>,
}

/// The UI's own state beside the API's.
pub(crate) struct Ui {
    api: Arc<AppState>,
    sessions: Mutex<HashMap<String, Session>>,
}

/// Who is looking, and what they may do.
#[derive(Clone)]
pub struct Viewer {
    roles: Vec<Role>,
    /// Who the server authenticated: recorded in the events of this viewer's actions.
    pub principal: Arc<str>,
    /// Signed in with a token through the sign-in page (shows "Sign out").
    pub signed_in: bool,
    session_id: Option<String>,
    /// The session's CSRF token; `None` for a bearer-header request (not ambient: no CSRF).
    pub csrf: Option<String>,
    /// A session cookie to set with this response (a new anonymous session).
    new_cookie: Option<String>,
}

impl Viewer {
    pub fn can(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

fn random_hex() -> String {
    // Two v4 UUIDs: 244 bits from the OS's random source.
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

fn same_bytes(a: &str, b: &str) -> bool {
    // Constant time in the length of the expected token.
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

fn session_cookie(id: &str) -> String {
    format!("{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECONDS_MAX}")
}

/// Behind a TLS-terminating proxy (it says so in `X-Forwarded-Proto`, or the form came from an
/// https origin) the cookie is also `Secure`.
fn over_https(headers: &HeaderMap) -> bool {
    let says = |name: &str, prefix: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().starts_with(prefix))
    };
    says("x-forwarded-proto", "https") || says("origin", "https://")
}

/// Why a request cannot see a page.
pub enum Refusal {
    /// Not signed in: go to the sign-in page, then back.
    SignIn,
    /// Signed in, without the role.
    Forbidden(&'static str),
}

impl Ui {
    fn open(&self) -> bool {
        self.api.tokens.is_empty()
    }

    /// Whether the request carries a live session (the guard lets a POST read its body only
    /// then).
    pub(crate) fn has_session(&self, headers: &HeaderMap) -> bool {
        let Some(id) = cookie_value(headers) else {
            return false;
        };
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions
            .get(&id)
            .is_some_and(|s| s.started.elapsed() < Duration::from_secs(SESSION_SECONDS_MAX))
    }

    fn new_session(&self, principal: Option<Arc<str>>) -> (String, String) {
        let id = random_hex();
        let csrf = random_hex();
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let max_age = Duration::from_secs(SESSION_SECONDS_MAX);
        sessions.retain(|_, s| s.started.elapsed() < max_age);
        // A principal's own oldest session goes first; the table's oldest only when the
        // table itself is full (anonymous loopback sessions, or very many principals).
        let oldest = |of_principal: bool| {
            sessions
                .iter()
                .filter(|(_, s)| !of_principal || s.principal == principal)
                .min_by_key(|(_, s)| s.started)
                .map(|(id, _)| id.clone())
        };
        let own = sessions
            .values()
            .filter(|s| s.principal == principal)
            .count();
        let evict = if principal.is_some() && own >= SESSIONS_PER_PRINCIPAL_MAX {
            oldest(true)
        } else if sessions.len() >= SESSIONS_MAX {
            oldest(false)
        } else {
            None
        };
        if let Some(oldest) = evict {
            sessions.remove(&oldest);
        }
        sessions.insert(
            id.clone(),
            Session {
                principal,
                csrf: csrf.clone(),
                started: Instant::now(),
                flash: None,
            },
        );
        (id, csrf)
    }

    /// The viewer of a request: a bearer header, else the session cookie; on an open service a
    /// new anonymous session when there is none.
    pub fn viewer(&self, headers: &HeaderMap) -> Result<Viewer, Refusal> {
        if !self.open() {
            if let Some(presented) = crate::auth::bearer(headers) {
                let principal = presented
                    .ok()
                    .and_then(|secret| self.api.tokens.authenticate(secret))
                    .ok_or(Refusal::SignIn)?;
                return Ok(Viewer {
                    roles: principal.roles,
                    principal: principal.name,
                    signed_in: false,
                    session_id: None,
                    csrf: None,
                    new_cookie: None,
                });
            }
        }
        let all = vec![Role::Reader, Role::Operator, Role::Reporter];
        let loopback: Arc<str> = Arc::from(crate::auth::LOOPBACK_PRINCIPAL);
        if let Some(id) = cookie_value(headers) {
            let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(session) = sessions
                .get(&id)
                .filter(|s| s.started.elapsed() < Duration::from_secs(SESSION_SECONDS_MAX))
            {
                let found = match &session.principal {
                    None if self.open() => Some((all.clone(), loopback.clone())),
                    None => None,
                    // A principal no longer configured ends its sessions.
                    Some(name) => self
                        .api
                        .tokens
                        .principal_named(name)
                        .map(|p| (p.roles, p.name)),
                };
                if let Some((roles, principal)) = found {
                    return Ok(Viewer {
                        roles,
                        principal,
                        signed_in: session.principal.is_some(),
                        session_id: Some(id),
                        csrf: Some(session.csrf.clone()),
                        new_cookie: None,
                    });
                }
            }
        }
        if self.open() {
            let (id, csrf) = self.new_session(None);
            return Ok(Viewer {
                roles: all,
                principal: loopback,
                signed_in: false,
                new_cookie: Some(session_cookie(&id)),
                session_id: Some(id),
                csrf: Some(csrf),
            });
        }
        Err(Refusal::SignIn)
    }

    /// A viewer who may read, or the refusal.
    pub fn reader(&self, headers: &HeaderMap) -> Result<Viewer, Refusal> {
        let viewer = self.viewer(headers)?;
        if viewer.can(Role::Reader) || viewer.can(Role::Operator) {
            Ok(viewer)
        } else {
            Err(Refusal::Forbidden("this token lacks the reader role"))
        }
    }

    fn take_flash(&self, viewer: &Viewer) -> Option<Vec<pages::ActionOutcome>> {
        let id = viewer.session_id.as_ref()?;
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.get_mut(id)?.flash.take()
    }

    fn set_flash(&self, viewer: &Viewer, outcomes: Vec<pages::ActionOutcome>) -> bool {
        let Some(id) = viewer.session_id.as_ref() else {
            return false;
        };
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        match sessions.get_mut(id) {
            Some(session) => {
                session.flash = Some(outcomes);
                true
            }
            None => false,
        }
    }
}

/// A POST from a browser must come from this origin (the `Origin` header, else `Referer`), and a
/// session's POST must carry the session's CSRF token. A bearer-header POST is not ambient and
/// needs neither.
fn check_post(viewer: &Viewer, headers: &HeaderMap, form: &Form) -> Result<(), &'static str> {
    if viewer.csrf.is_none() {
        return Ok(());
    }
    same_origin(headers)?;
    let expected = viewer.csrf.as_deref().unwrap_or("");
    match form.get("csrf") {
        Some(sent) if same_bytes(sent, expected) => Ok(()),
        _ => Err("the form has expired or did not come from this page; reload it and try again"),
    }
}

fn same_origin(headers: &HeaderMap) -> Result<(), &'static str> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .ok_or("a request without a Host header")?;
    let source = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok())
        .ok_or("a form sent without its origin is refused")?;
    let source_host = crate::auth::origin_host(source).unwrap_or("");
    if source_host.eq_ignore_ascii_case(host) {
        Ok(())
    } else {
        Err("a form sent from another site is refused")
    }
}

/// An `application/x-www-form-urlencoded` body: every pair, repeated names kept.
pub struct Form(Vec<(String, String)>);

impl Form {
    fn parse(body: &[u8]) -> Form {
        Form(
            form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }
}

/// A UI response: HTML (or an export) with the headers every page gets.
pub fn respond(viewer: Option<&Viewer>, status: StatusCode, html: String) -> Response {
    let mut response = (status, axum::response::Html(html)).into_response();
    decorate(viewer, &mut response);
    response
}

fn decorate(viewer: Option<&Viewer>, response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if let Some(cookie) = viewer.and_then(|v| v.new_cookie.as_ref()) {
        if let Ok(value) = HeaderValue::from_str(cookie) {
            headers.append(header::SET_COOKIE, value);
        }
    }
}

/// A page that says what went wrong: the API's error code and message (never internal detail:
/// `ApiError` already keeps that in the log).
pub fn error_page(viewer: Option<&Viewer>, error: ApiError) -> Response {
    let (status, code, message) = error.parts();
    let body = format!(
        "<p class=\"error\" role=\"alert\"><strong>{}</strong> ({})</p><p><a href=\"/ui/\">Back to the search</a></p>",
        html::esc(message),
        html::esc(code)
    );
    let title = if status.is_server_error() {
        "Something went wrong"
    } else {
        "Cannot show this page"
    };
    match viewer {
        Some(viewer) => respond(
            Some(viewer),
            status,
            html::page(title, html::Nav::None, viewer, None, &body),
        ),
        None => respond(None, status, bare_page(title, &body)),
    }
}

fn bare_page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><meta name=\"color-scheme\" content=\"light dark\"><title>{t} · taskledger</title><link rel=\"stylesheet\" href=\"/ui/assets/ui.css\"></head><body class=\"bare\"><main id=\"main\"><h1>{t}</h1>{body}</main></body></html>",
        t = html::esc(title)
    )
}

/// Turns a refusal into the sign-in redirect or a 403 page.
pub fn refused(refusal: Refusal, path_and_query: &str) -> Response {
    match refusal {
        Refusal::SignIn => {
            let target = html::href("/ui/login", &[("next", path_and_query)]);
            let mut response = axum::response::Redirect::to(&target).into_response();
            decorate(None, &mut response);
            response
        }
        Refusal::Forbidden(why) => {
            error_page(None, ApiError::new(StatusCode::FORBIDDEN, "forbidden", why))
        }
    }
}

/// Only a path of the UI may be a place to go back to (no open redirect), and only one that
/// can be a `Location` header (no control character, visible ASCII): anything else goes back to
/// the search, decided before any action runs.
fn local_target(next: Option<&str>) -> String {
    match next {
        Some(next)
            if next.starts_with("/ui/")
                && !next.starts_with("//")
                && !next.contains('\\')
                && next.len() <= 2048
                && next.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            next.to_owned()
        }
        _ => "/ui/".to_owned(),
    }
}

async fn login_page(
    State(ui): State<Arc<Ui>>,
    axum::extract::Query(params): axum::extract::Query<HashMap<String, String>>,
) -> Response {
    if ui.open() {
        return axum::response::Redirect::to("/ui/").into_response();
    }
    let next = local_target(params.get("next").map(String::as_str));
    respond(None, StatusCode::OK, login_html(&next, None))
}

fn login_html(next: &str, problem: Option<&str>) -> String {
    let problem = problem
        .map(|p| format!("<p class=\"error\" role=\"alert\">{}</p>", html::esc(p)))
        .unwrap_or_default();
    bare_page(
        "Sign in",
        &format!(
            "{problem}<form method=\"post\" action=\"/ui/login\" class=\"login\">\
<label for=\"token\">Bearer token</label>\
<input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required autofocus>\
<input type=\"hidden\" name=\"next\" value=\"{}\">\
<button type=\"submit\">Sign in</button>\
<p class=\"hint\">The same tokens as the API (<code>[server] tokens</code> or <code>TASKLEDGER_TOKENS</code>); the token stays on the server for this session.</p></form>",
            html::esc(next)
        ),
    )
}

async fn login(State(ui): State<Arc<Ui>>, headers: HeaderMap, body: Bytes) -> Response {
    let form = Form::parse(&body);
    let next = local_target(form.get("next"));
    if let Err(why) = same_origin(&headers) {
        return respond(None, StatusCode::FORBIDDEN, login_html(&next, Some(why)));
    }
    let token = form.get("token").unwrap_or("").trim();
    match ui.api.tokens.authenticate(token) {
        Some(principal) if principal.can(Role::Reader) || principal.can(Role::Operator) => {
            let (id, _) = ui.new_session(Some(principal.name));
            let mut response = axum::response::Redirect::to(&next).into_response();
            let mut cookie = session_cookie(&id);
            if over_https(&headers) {
                cookie.push_str("; Secure");
            }
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        Some(_) => respond(
            None,
            StatusCode::FORBIDDEN,
            login_html(
                &next,
                Some("this token has neither the reader nor the operator role"),
            ),
        ),
        None => respond(
            None,
            StatusCode::UNAUTHORIZED,
            login_html(&next, Some("unknown token")),
        ),
    }
}

async fn logout(State(ui): State<Arc<Ui>>, headers: HeaderMap, body: Bytes) -> Response {
    let form = Form::parse(&body);
    let Ok(viewer) = ui.viewer(&headers) else {
        return axum::response::Redirect::to("/ui/login").into_response();
    };
    if let Err(why) = check_post(&viewer, &headers, &form) {
        return error_page(
            Some(&viewer),
            ApiError::new(StatusCode::FORBIDDEN, "forbidden", why),
        );
    }
    if let Some(id) = &viewer.session_id {
        ui.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
    let mut response = axum::response::Redirect::to("/ui/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "taskledger_session=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    response
}

fn asset(content_type: &'static str, text: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        text,
    )
        .into_response()
}

/// The UI's routes, with their own state beside the API's (also returned: the guard asks it
/// whether a request carries a session).
pub(crate) fn router(api: Arc<AppState>) -> (Router, Arc<Ui>) {
    let ui = Arc::new(Ui {
        api,
        sessions: Mutex::new(HashMap::new()),
    });
    let router = Router::new()
        .route(
            "/ui",
            get(|| async { axum::response::Redirect::permanent("/ui/") }),
        )
        .route("/ui/", get(pages::home))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/tasks/{task_id}", get(pages::task))
        .route("/ui/dlq", get(pages::dlq))
        .route("/ui/actions", post(pages::action))
        .route("/ui/queues", get(pages::queues))
        .route("/ui/stuck", get(pages::stuck))
        .route("/ui/due", get(pages::due))
        .route(
            "/ui/assets/ui.css",
            get(|| async { asset("text/css; charset=utf-8", CSS) }),
        )
        .route(
            "/ui/assets/ui.js",
            get(|| async { asset("text/javascript; charset=utf-8", JS) }),
        )
        .with_state(ui.clone());
    (router, ui)
}

/// Whether `path` is the UI's (HTML answers, forms, sessions) rather than the API's.
pub(crate) fn is_ui_path(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/")
}

/// What an unknown path gets: an HTML page under `/ui/`, the API's JSON error elsewhere.
pub(crate) async fn not_found(uri: axum::http::Uri) -> Response {
    let error = ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no page or route {}", uri.path()),
    );
    if is_ui_path(uri.path()) {
        error_page(None, error)
    } else {
        error.into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use taskledger_domain::Policy;
    use taskledger_ingest::{Ledger, LedgerConfig, SystemClock};
    use taskledger_projections::MemoryKv;
    use taskledger_store::{MemoryStore, SharedStore};
    use tower::ServiceExt;

    fn service(tokens: &[(&str, &[Role])]) -> Router {
        let store: SharedStore = Arc::new(MemoryStore::new());
        let (_sender, projected) = tokio::sync::watch::channel(0);
        std::mem::forget(_sender);
        crate::app(Arc::new(AppState {
            ledger: Arc::new(Ledger::new(
                store.clone(),
                Policy::default(),
                Arc::new(SystemClock),
                LedgerConfig::default(),
            )),
            store,
            models: Arc::new(MemoryKv::new()),
            tokens: Arc::new(
                crate::Tokens::new(
                    tokens
                        .iter()
                        .map(|(t, roles)| crate::TokenSpec {
                            source: format!("token {t}"),
                            name: t.to_string(),
                            secret: t.to_string(),
                            roles: roles.to_vec(),
                        })
                        .collect(),
                    64,
                )
                .unwrap(),
            ),
            limits: crate::Limits::default(),
            projected,
            metrics: None,
            commit_stats: None,
        }))
    }

    async fn send(router: &Router, request: Request<Body>) -> (StatusCode, HeaderMap, String) {
        let response = router.clone().oneshot(request).await.unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }

    fn post(uri: &str, origin: Option<&str>, cookie: Option<&str>, form: &str) -> Request<Body> {
        let mut request = Request::post(uri)
            .header(header::HOST, "ledger.test")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(origin) = origin {
            request = request.header(header::ORIGIN, origin);
        }
        if let Some(cookie) = cookie {
            request = request.header(header::COOKIE, cookie);
        }
        request.body(Body::from(form.to_owned())).unwrap()
    }

    fn get(uri: &str, cookie: Option<&str>) -> Request<Body> {
        let mut request = Request::get(uri).header(header::HOST, "ledger.test");
        if let Some(cookie) = cookie {
            request = request.header(header::COOKIE, cookie);
        }
        request.body(Body::empty()).unwrap()
    }

    fn csrf_of(page: &str) -> String {
        let at = page
            .find("name=\"csrf\" content=\"")
            .expect("the page's csrf token")
            + 21;
        page[at..at + 64].to_owned()
    }

    #[tokio::test]
    async fn sign_in_sessions_and_csrf() {
        let router = service(&[
            ("ops-token", &[Role::Operator, Role::Reader]),
            ("rep-token", &[Role::Reporter]),
        ]);
        // Not signed in: to the sign-in page, coming back to the same link.
        let (status, headers, _) = send(&router, get("/ui/dlq?queue=mail", None)).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(
            headers[header::LOCATION],
            "/ui/login?next=%2Fui%2Fdlq%3Fqueue%3Dmail"
        );
        // A sign-in from another site, an unknown token, a token without a reading role.
        let form = "token=ops-token&next=%2Fui%2Fdlq";
        let (status, _, _) = send(
            &router,
            post("/ui/login", Some("http://evil.test"), None, form),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _, page) = send(
            &router,
            post("/ui/login", Some("http://ledger.test"), None, "token=nope"),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(page.contains("unknown token"));
        let (status, _, _) = send(
            &router,
            post(
                "/ui/login",
                Some("http://ledger.test"),
                None,
                "token=rep-token",
            ),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        // Signed in: a session cookie, never the token; an open redirect is refused.
        let (status, headers, _) = send(
            &router,
            post(
                "/ui/login",
                Some("http://ledger.test"),
                None,
                "token=ops-token&next=https%3A%2F%2Fevil.test%2F",
            ),
        )
        .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(headers[header::LOCATION], "/ui/");
        let cookie = headers[header::SET_COOKIE].to_str().unwrap().to_owned();
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
            "{cookie}"
        );
        assert!(!cookie.contains("ops-token"));
        let session = cookie.split(';').next().unwrap().to_owned();
        let (status, _, page) = send(&router, get("/ui/dlq", Some(&session))).await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains("Dead-letter queue"));
        // A POST without the session's CSRF token, or from another origin, is refused.
        let csrf = csrf_of(&page);
        let action = "action=retry&sel=q%3A1%7C00000000-0000-4000-8000-000000000001";
        let (status, _, page) = send(
            &router,
            post(
                "/ui/actions",
                Some("http://ledger.test"),
                Some(&session),
                action,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{page}");
        let with_token = format!("{action}&csrf={csrf}");
        let (status, _, _) = send(
            &router,
            post(
                "/ui/actions",
                Some("http://evil.test"),
                Some(&session),
                &with_token,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _, _) = send(
            &router,
            post("/ui/actions", None, Some(&session), &with_token),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "no Origin and no Referer");
        // With both, the action runs (a retry of an unknown task is rejected, and says so).
        let (status, headers, _) = send(
            &router,
            post(
                "/ui/actions",
                Some("http://ledger.test"),
                Some(&session),
                &with_token,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let back = headers[header::LOCATION].to_str().unwrap().to_owned();
        let (_, _, page) = send(&router, get(&back, Some(&session))).await;
        assert!(page.contains("Outcome: 0 of 1 accepted"), "{page}");
        assert!(page.contains("rejected: unknownExecution"), "{page}");
        // Unknown paths: an HTML page under /ui/, JSON elsewhere.
        let (status, headers, page) = send(&router, get("/ui/nothing-here", Some(&session))).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        assert!(page.contains("no page or route /ui/nothing-here"));
        // Behind tokens, the API answers nothing to a caller without one (not even 404).
        let (status, _, body) = send(&router, get("/v1/nothing-here", None)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body.contains("\"code\":\"unauthorized\""), "{body}");
        let mut api_get = get("/v1/nothing-here", None);
        api_get.headers_mut().insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer ops-token"),
        );
        let (status, _, body) = send(&router, api_get).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("\"code\":\"not_found\""), "{body}");
        // A UI form posted without a session is refused before its body is read.
        let (status, _, _) = send(
            &router,
            post(
                "/ui/actions",
                Some("http://ledger.test"),
                None,
                "action=retry",
            ),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        // Behind TLS the cookie is Secure too.
        let mut login = post(
            "/ui/login",
            Some("https://ledger.test"),
            None,
            "token=ops-token",
        );
        login
            .headers_mut()
            .insert("x-forwarded-proto", HeaderValue::from_static("https"));
        let (_, headers, _) = send(&router, login).await;
        assert!(headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .ends_with("; Secure"));
        // Signing out ends the session.
        let (status, _, _) = send(
            &router,
            post(
                "/ui/logout",
                Some("http://ledger.test"),
                Some(&session),
                &format!("csrf={csrf}"),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let (status, _, _) = send(&router, get("/ui/dlq", Some(&session))).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
    }

    /// A request of the open (no-token) service, addressed to localhost.
    fn local(mut request: Request<Body>) -> Request<Body> {
        request
            .headers_mut()
            .insert(header::HOST, HeaderValue::from_static("localhost:7070"));
        if request.headers().contains_key(header::ORIGIN) {
            request.headers_mut().insert(
                header::ORIGIN,
                HeaderValue::from_static("http://localhost:7070"),
            );
        }
        request
    }

    #[tokio::test]
    async fn without_tokens_only_loopback_hosts_and_same_origin_forms() {
        let router = service(&[]);
        // DNS rebinding: a page of evil.example resolved to 127.0.0.1 sends its own Host.
        let (status, _, page) = send(&router, get("/ui/dlq", None)).await;
        assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
        assert!(page.contains("loopback"), "{page}");
        let (status, _, body) = send(&router, get("/v1/dlq", None)).await;
        assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
        assert!(body.contains("\"code\":\"misdirected\""), "{body}");
        // A form of another site, to a loopback host: refused before anything runs.
        let mut foreign = local(post("/ui/actions", None, None, "action=retry"));
        foreign.headers_mut().insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        let (status, _, _) = send(&router, foreign).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn without_tokens_no_sign_in_but_posts_still_need_the_csrf_token() {
        let router = service(&[]);
        let (status, headers, page) = send(&router, local(get("/ui/", None))).await;
        assert_eq!(status, StatusCode::OK);
        let session = headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let action = "action=retry&sel=q%3A1%7C00000000-0000-4000-8000-000000000001";
        let (status, _, _) = send(
            &router,
            local(post(
                "/ui/actions",
                Some("http://ledger.test"),
                Some(&session),
                action,
            )),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let with_token = format!("{action}&csrf={}", csrf_of(&page));
        let (status, _, _) = send(
            &router,
            local(post(
                "/ui/actions",
                Some("http://ledger.test"),
                Some(&session),
                &with_token,
            )),
        )
        .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        // An error page says what is wrong and nothing internal.
        let (status, _, page) =
            send(&router, local(get("/ui/dlq?cursor=zz", Some(&session)))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(page.contains("is not a cursor of this listing"), "{page}");
    }

    #[test]
    fn forms_keep_repeated_names_and_helpers_escape() {
        let form = Form::parse(b"sel=a%7C1&sel=b%7C2&reason=x+y");
        assert_eq!(form.all("sel").collect::<Vec<_>>(), ["a|1", "b|2"]);
        assert_eq!(form.get("reason"), Some("x y"));
        assert_eq!(local_target(Some("//evil.test/ui/")), "/ui/");
        assert_eq!(local_target(Some("/ui/dlq?queue=a")), "/ui/dlq?queue=a");
        // A control character could not be a Location: back to the search, before any action.
        assert_eq!(local_target(Some("/ui/dlq\r\nSet-Cookie: x=1")), "/ui/");
        assert_eq!(local_target(Some("/ui/dlq\u{7f}")), "/ui/");
        assert_eq!(
            html::csv_field("=HYPERLINK(\"http://x\")"),
            "\"'=HYPERLINK(\"\"http://x\"\")\""
        );
        for formula in ["+1", "-1", "@SUM(A1)", "\tx", "\rx"] {
            assert!(
                html::csv_field(formula)
                    .trim_start_matches('"')
                    .starts_with('\''),
                "{formula:?}"
            );
        }
        assert_eq!(
            html::esc("<a href=\"x\">'"),
            "&lt;a href=&quot;x&quot;&gt;&#x27;"
        );
        assert_eq!(html::csv_field("a,\"b\""), "\"a,\"\"b\"\"\"");
        assert_eq!(html::relative(0, 90_000), "1 min ago");
        assert_eq!(html::relative(7_200_000, 0), "in 2 h");
        let time = html::time(Some(taskledger_domain::Timestamp(0)), 3_600_000);
        assert_eq!(
            time,
            "<time datetime=\"1970-01-01T00:00:00.000Z\" title=\"1970-01-01T00:00:00.000Z (UTC)\">1 h ago</time>"
        );
        assert!(html::status("dlq").contains("✖") && html::status("dlq").contains("dlq"));
    }
}
