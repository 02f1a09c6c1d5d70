//! The HTTP endpoints of a running job, on axum: `/metrics` for Prometheus (at
//! `--metrics-addr`, per process), and the web view with its JSON API (at `--ui-addr`,
//! for the whole job).
//!
//! | path | what |
//! |---|---|
//! | `GET /` | the web view: one page, its script and style inside, no CDN |
//! | `GET /api/job` | the job now, as JSON ([`crate::status::JobSnapshot`]) |
//! | `POST /api/push` | a process's report ([`crate::status::ProcessStatus`]), from the other processes of a cluster |
//! | `GET /metrics` | this process's metrics, Prometheus text format |
//!
//! Each server runs on its own thread with a single-threaded tokio runtime, off the
//! workers, and stops when dropped.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use riffle_engine::{Error, Result};

use crate::metrics::Metrics;
use crate::prometheus::{ProcessInfo, render};
use crate::status::{JobView, ProcessStatus};

/// The web view's page: HTML, style and script in one file, embedded in the binary.
const INDEX: &str = include_str!("ui/index.html");

/// What a server answers.
pub enum Serves {
    /// This process's metrics at `/metrics`.
    Metrics(Arc<Metrics>, ProcessInfo),
    /// The job's web view, its JSON API, and the other processes' reports.
    View(Arc<JobView>),
}

/// A running server; stops when dropped.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts serving `serves` on `addr`; `flag` names the option it came from, for errors.
///
/// # Errors
/// The address is not host:port or cannot be bound, naming it and the option.
pub fn start(addr: &str, flag: &str, serves: Serves) -> Result<Server> {
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|e| Error::Config(format!("cannot serve on {flag} {addr}: {e}; pick another address or port")))?;
    let local = listener.local_addr().map_err(|e| Error::Config(format!("{flag} {addr}: {e}")))?;
    listener.set_nonblocking(true).map_err(|e| Error::Config(format!("{flag} {addr}: {e}")))?;
    let router = match serves {
        Serves::Metrics(metrics, info) => Router::new()
            .route("/metrics", get(metrics_text))
            .with_state((metrics, info))
            .fallback(|| async { (axum::http::StatusCode::NOT_FOUND, "metrics are at /metrics\n") }),
        Serves::View(view) => Router::new()
            .route("/", get(|| async { Html(INDEX) }))
            .route("/api/job", get(job))
            .route("/api/push", post(push))
            .with_state(view),
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the runtime for {flag}: {e}")))?;
    let thread = std::thread::Builder::new()
        .name(format!("riffle:http {local}"))
        .spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
                let _ = axum::serve(listener, router)
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await;
            })
        })
        .map_err(|e| Error::Internal(format!("cannot start the thread for {flag}: {e}")))?;
    tracing::info!(%local, "serving {flag}");
    Ok(Server { addr: local, shutdown: Some(tx), thread: Some(thread) })
}

async fn metrics_text(State((metrics, info)): State<(Arc<Metrics>, ProcessInfo)>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], render(&metrics, info))
}

async fn job(State(view): State<Arc<JobView>>) -> impl IntoResponse {
    axum::Json(view.snapshot())
}

async fn push(State(view): State<Arc<JobView>>, axum::Json(status): axum::Json<ProcessStatus>) -> impl IntoResponse {
    view.update(status);
    axum::http::StatusCode::NO_CONTENT
}

/// Sends a process's report to the process holding the job's view, at `url`
/// (`http://HOST:PORT/api/push`). A failure is logged at debug and otherwise ignored:
/// the view is for watching, and the job must not stop for it.
pub fn push_status(agent: &ureq::Agent, url: &str, status: &ProcessStatus) {
    if let Err(e) = agent.post(url).send_json(status) {
        tracing::debug!(%url, "could not report to the job's view: {e}");
    }
}

/// An HTTP client with short timeouts, for [`push_status`].
pub fn push_agent() -> ureq::Agent {
    ureq::Agent::config_builder().timeout_global(Some(std::time::Duration::from_secs(2))).build().into()
}
