//! The HTTP server: the page (static strings from the binary), the latest snapshot as JSON,
//! and a server-sent-events stream of snapshots. Read-only: every route is a GET, and every
//! one needs the token.
//!
//! The token comes in the URL (`/?token=…`, as Jupyter does); the page's answer also sets it
//! as a cookie so that the script, the styles and the event stream it loads carry it without
//! putting it in every URL.

use crate::snapshot::Snapshot;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

const INDEX_HTML: &str = include_str!("page/index.html");
const APP_JS: &str = include_str!("page/app.js");
const STYLE_CSS: &str = include_str!("page/style.css");

/// Name of the cookie that carries the token after the first page load.
const COOKIE: &str = "cluster_dashboard_token";

/// A fresh random token: 128 bits as 32 hex digits.
pub fn new_token() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// A bound, not yet serving, dashboard server.
#[derive(Debug)]
pub struct Server {
    listener: std::net::TcpListener,
    token: String,
    rx: watch::Receiver<Arc<Snapshot>>,
}

#[derive(Clone)]
struct AppState {
    token: Arc<str>,
    rx: watch::Receiver<Arc<Snapshot>>,
}

impl Server {
    /// Binds `addr` (port 0 picks one) and serves the snapshots of `rx` to requests that
    /// carry `token`.
    pub fn bind(
        addr: SocketAddr,
        token: String,
        rx: watch::Receiver<Arc<Snapshot>>,
    ) -> std::io::Result<Server> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        Ok(Server {
            listener,
            token,
            rx,
        })
    }

    /// The address it is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The page's URL, with the token.
    pub fn url(&self) -> std::io::Result<String> {
        Ok(format!(
            "http://{}/?token={}",
            self.local_addr()?,
            self.token
        ))
    }

    /// Serves until the process ends (or the runtime fails to start).
    pub fn run(self) -> std::io::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(self.listener)?;
            let app = router(AppState {
                token: self.token.into(),
                rx: self.rx,
            });
            axum::serve(listener, app).await
        })
    }
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route(
            "/app.js",
            get(|| async { asset("text/javascript", APP_JS) }),
        )
        .route("/style.css", get(|| async { asset("text/css", STYLE_CSS) }))
        .route("/api/snapshot", get(snapshot))
        .route("/api/events", get(events))
        .layer(middleware::from_fn_with_state(state.clone(), check_token))
        .with_state(state)
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// Compares without stopping at the first difference, so that the time taken does not
/// tell how much of a guess was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token of a request: `?token=` in the query, else the cookie.
fn token_of<'a>(query: Option<&'a str>, headers: &'a HeaderMap) -> Option<&'a str> {
    let from_query = query.and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix("token=")));
    from_query.or_else(|| {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
    })
}

async fn check_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let ok = token_of(request.uri().query(), request.headers())
        .is_some_and(|t| same(t.as_bytes(), state.token.as_bytes()));
    if !ok {
        return (
            StatusCode::FORBIDDEN,
            "403 forbidden: open the URL with the token that `cluster dashboard` printed \
             (also in the profile's run/dashboard.json)\n",
        )
            .into_response();
    }
    next.run(request).await
}

async fn index(State(state): State<AppState>) -> Response {
    let mut response = asset("text/html; charset=utf-8", INDEX_HTML);
    let cookie = format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
        state.token
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

fn json_of(snapshot: &Snapshot) -> String {
    serde_json::to_string(snapshot).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

async fn snapshot(State(state): State<AppState>) -> Response {
    let body = json_of(&state.rx.borrow().clone());
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn events(
    State(state): State<AppState>,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let mut rx = state.rx.clone();
    // The current snapshot goes out at once, then each new one.
    rx.mark_changed();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok()?;
        let json = json_of(&rx.borrow_and_update().clone());
        Some((Ok(Event::default().event("snapshot").data(json)), rx))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_read_from_query_or_cookie() {
        let mut headers = HeaderMap::new();
        assert_eq!(token_of(Some("a=1&token=abc"), &headers), Some("abc"));
        assert_eq!(token_of(None, &headers), None);
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("x=1; cluster_dashboard_token=zz"),
        );
        assert_eq!(token_of(None, &headers), Some("zz"));
        assert_eq!(token_of(Some("token=q"), &headers), Some("q"));
    }

    #[test]
    fn comparison_needs_every_byte() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
        assert!(!same(b"", b"a"));
        assert_eq!(new_token().len(), 32);
        assert_ne!(new_token(), new_token());
    }
}
