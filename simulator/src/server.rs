//! The server: the accept loop, HTTP/1 serving per connection, and the
//! pipeline every request goes through (record → fault → checks → handler).
//!
//! `axum::serve` cannot abandon a request without answering, which the drop
//! faults need. So each connection is served with `hyper`'s HTTP/1 server
//! under a `CancellationToken`: a request that must die cancels the token,
//! and the connection task drops the connection future, closing the socket
//! with no response written.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{HeaderMap, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::faults::{self, Fault, FaultEngine, FaultRule};
use super::routes::{Operation, Route, TOKEN_PATH};
use super::state::State;
use super::{handlers, s3, token, wire, SimulatorOptions};

/// Largest request body read; the API's bodies are tiny.
const BODY_LIMIT: usize = 1 << 20;

/// One request as the simulator saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub operation: Operation,
    pub method: String,
    /// Path without the query string.
    pub path: String,
    pub query: Option<String>,
    /// The `x-request-id` header, if sent.
    pub request_id: Option<String>,
    /// The `x-trace-id` header, if sent.
    pub trace_id: Option<String>,
    /// Status sent; 0 when the connection closed without a response
    /// (a drop fault, or the client gave up first).
    pub status: u16,
    /// Label of the fault that fired on this request, if any.
    pub fault: Option<String>,
    /// When the request arrived.
    pub received_at: Instant,
    /// When a mutating request was applied to the account (a regenerate's
    /// old secret stops working at this instant); `None` if it was not.
    pub applied_at: Option<Instant>,
}

/// What the `Simulator` handle and the server tasks share.
#[derive(Debug)]
pub(super) struct Shared {
    state: Mutex<State>,
    faults: Mutex<FaultEngine>,
    requests: Mutex<Vec<RecordedRequest>>,
    s3: Mutex<s3::Store>,
}

/// What a listener serves.
#[derive(Debug, Clone, Copy)]
pub(super) enum Listener {
    /// The API and the token endpoint.
    Api,
    /// The S3 endpoint of `REGIONS[i]`.
    S3(usize),
}

/// Holds an answer until `deadline`, to the tenth of a millisecond.
///
/// Tokio's timer counts whole milliseconds and rounds every deadline up: a
/// `sleep(1 ms)` held an answer 2.1 ms on average here, and `sleep(20 ms)`
/// about 21.5 ms, so a benchmark at "20 ms" measured the timer as much as
/// the client. The timer takes all but the last 2 ms, and a blocking
/// thread's `nanosleep` (precise to tens of microseconds) the rest.
async fn hold(deadline: Instant) {
    let coarse = deadline.checked_sub(Duration::from_millis(2));
    if let Some(coarse) = coarse.filter(|c| *c > Instant::now()) {
        tokio::time::sleep_until(coarse.into()).await;
    }
    let rest = deadline.saturating_duration_since(Instant::now());
    if !rest.is_zero() {
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(rest)).await;
    }
}

/// Locks `m`; a panic in a test thread must not hide the state from asserts.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(super) fn new(opts: &SimulatorOptions, addr: SocketAddr, s3_urls: &[String]) -> Self {
        let issuer = format!(
            "http://{addr}{}",
            TOKEN_PATH.trim_end_matches("/protocol/openid-connect/token")
        );
        Self {
            state: Mutex::new(State::generate(opts, issuer, s3_urls)),
            faults: Mutex::new(FaultEngine::new(opts.seed)),
            requests: Mutex::new(Vec::new()),
            s3: Mutex::new(s3::Store::default()),
        }
    }

    pub(super) fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    pub(super) fn s3(&self) -> MutexGuard<'_, s3::Store> {
        lock(&self.s3)
    }

    pub(super) fn set_faults(&self, rules: Vec<FaultRule>) {
        lock(&self.faults).set_rules(rules);
    }

    pub(super) fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.requests).clone()
    }

    fn record(&self, request: RecordedRequest) -> usize {
        let mut log = lock(&self.requests);
        log.push(request);
        log.len() - 1
    }

    fn update(&self, index: usize, f: impl FnOnce(&mut RecordedRequest)) {
        if let Some(r) = lock(&self.requests).get_mut(index) {
            f(r);
        }
    }

    /// Records the status of a response about to be sent.
    fn finish(&self, index: usize, resp: Response) -> Response {
        let status = resp.status().as_u16();
        self.update(index, |r| r.status = status);
        resp
    }
}

/// Accepts connections until `shutdown` is cancelled.
pub(super) async fn accept_loop(
    listener: TcpListener,
    kind: Listener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    tracker.spawn(serve_connection(
                        stream,
                        kind,
                        Arc::clone(&shared),
                        shutdown.child_token(),
                    ));
                }
                Err(error) => {
                    tracing::debug!(%error, "Simulator failed to accept a connection.");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
    tracing::debug!("Simulator stopped accepting connections.");
}

/// Serves one connection until it closes, or until `conn` is cancelled
/// (by a drop fault or shutdown), which drops it without a response.
async fn serve_connection(
    stream: TcpStream,
    kind: Listener,
    shared: Arc<Shared>,
    conn: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let service = {
        let conn = conn.clone();
        service_fn(move |req: Request<Incoming>| {
            let shared = Arc::clone(&shared);
            let conn = conn.clone();
            async move {
                Ok::<_, Infallible>(match kind {
                    Listener::Api => dispatch(&shared, &conn, req).await,
                    Listener::S3(region) => s3::dispatch(&shared, region, req).await,
                })
            }
        })
    };
    let mut builder = http1::Builder::new();
    // No header-read timer: it would need a hyper timer and would fire
    // early in tests that pause tokio's clock.
    builder.header_read_timeout(None::<Duration>);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        result = connection => {
            if let Err(error) = result {
                tracing::debug!(%error, "Simulator connection ended with an error.");
            }
        }
        () = conn.cancelled() => {
            tracing::debug!("Simulator closed a connection without responding.");
        }
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Cancels the connection and never returns: the connection task drops this
/// future together with the socket.
async fn drop_connection(conn: &CancellationToken) -> Response {
    conn.cancel();
    std::future::pending().await
}

/// The pipeline for one request.
async fn dispatch(
    shared: &Arc<Shared>,
    conn: &CancellationToken,
    req: Request<Incoming>,
) -> Response {
    let (parts, body) = req.into_parts();
    let route = Route::parse(&parts.method, parts.uri.path());
    let operation = route.operation();
    let received_at = Instant::now();
    let index = shared.record(RecordedRequest {
        operation,
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        request_id: header(&parts.headers, "x-request-id"),
        trace_id: header(&parts.headers, "x-trace-id"),
        status: 0,
        fault: None,
        received_at,
        applied_at: None,
    });
    let fault = lock(&shared.faults).pick(operation, parts.uri.path());
    if let Some(f) = &fault {
        let label = f.label();
        tracing::debug!(?operation, fault = %label, "Simulator injects a fault.");
        shared.update(index, |r| r.fault = Some(label));
    }
    // Read the whole body first so a dropped connection had the request
    // fully delivered, as with a server that dies while processing it.
    let Ok(body) = axum::body::to_bytes(Body::new(body), BODY_LIMIT).await else {
        let resp = wire::api_error(StatusCode::PAYLOAD_TOO_LARGE, "Payload Too Large");
        return shared.finish(index, resp);
    };
    match &fault {
        Some(Fault::TooManyRequests { retry_after }) => {
            return shared.finish(index, faults::too_many_requests(*retry_after));
        }
        Some(Fault::InternalServerError) => {
            return shared.finish(index, faults::internal_server_error());
        }
        Some(Fault::ServiceUnavailable) => {
            return shared.finish(index, faults::service_unavailable());
        }
        Some(Fault::BadGateway) => {
            return shared.finish(index, faults::gateway(StatusCode::BAD_GATEWAY));
        }
        Some(Fault::ApplyLater(delay)) => {
            // A proxy gave up on the backend, which applies the request later.
            let (shared2, delay) = (Arc::clone(shared), *delay);
            let (headers, query) = (parts.headers.clone(), parts.uri.query().map(str::to_owned));
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let resp = respond(&shared2, route, &headers, query.as_deref(), &body);
                if operation.is_mutating() && resp.status().is_success() {
                    shared2.update(index, |r| r.applied_at = Some(Instant::now()));
                }
            });
            return shared.finish(index, faults::gateway(StatusCode::GATEWAY_TIMEOUT));
        }
        Some(Fault::NotAppliedWithBody(text)) => {
            return shared.finish(index, faults::json_ok(text));
        }
        Some(Fault::DropBeforeApply) => return drop_connection(conn).await,
        Some(Fault::Latency(delay)) => hold(received_at + *delay).await,
        Some(
            Fault::DropAfterApply
            | Fault::MalformedBody
            | Fault::GatewayTimeoutAfterApply
            | Fault::AppliedWithBody(_)
            | Fault::WrongTotal
            | Fault::StaleRead,
        )
        | None => {}
    }
    let resp = respond(shared, route, &parts.headers, parts.uri.query(), &body);
    if operation.is_mutating() && resp.status().is_success() {
        shared.update(index, |r| r.applied_at = Some(Instant::now()));
    }
    let resp = match fault {
        Some(Fault::DropAfterApply) => return drop_connection(conn).await,
        Some(Fault::MalformedBody) => faults::malformed(resp).await,
        Some(Fault::GatewayTimeoutAfterApply) => faults::gateway(StatusCode::GATEWAY_TIMEOUT),
        Some(Fault::AppliedWithBody(text)) => faults::json_ok(text),
        Some(Fault::WrongTotal) => faults::wrong_total(resp).await,
        Some(Fault::StaleRead) => {
            let previous = |id: i64| {
                let state = shared.state();
                state.previous_pair(id).map(|(a, s)| {
                    (
                        a.to_owned(),
                        secrecy::ExposeSecret::expose_secret(s).to_owned(),
                    )
                })
            };
            faults::stale(resp, previous).await
        }
        _ => resp,
    };
    tracing::debug!(
        ?operation,
        method = %parts.method,
        path = parts.uri.path(),
        status = resp.status().as_u16(),
        "Simulator answered a request."
    );
    shared.finish(index, resp)
}

/// Runs the route: the token endpoint as is, `/v1` routes after the bearer
/// and `x-request-id` checks.
fn respond(
    shared: &Shared,
    route: Route,
    headers: &HeaderMap,
    query: Option<&str>,
    body: &[u8],
) -> Response {
    match route {
        Route::NotFound => wire::ApiError::not_found().into_response(),
        Route::MethodNotAllowed => {
            wire::api_error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
        }
        Route::Token => token::handle(&mut shared.state(), headers, body),
        // A test's marker (a sink's on_change, say): recorded in the request
        // log, in order with the API calls, and answered 204.
        Route::Mark(_) => {
            let mut resp = Response::new(Body::empty());
            *resp.status_mut() = StatusCode::NO_CONTENT;
            resp
        }
        route => {
            let mut state = shared.state();
            if !token::authenticate(&state, headers) {
                return wire::api_error(StatusCode::UNAUTHORIZED, "Unauthorized");
            }
            if !headers.get("x-request-id").is_some_and(valid_request_id) {
                return wire::api_error(
                    StatusCode::BAD_REQUEST,
                    "x-request-id header is missing or invalid",
                );
            }
            handlers::handle(&mut state, route, query, body)
        }
    }
}

/// The spec's pattern for `x-request-id`:
/// `^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-5][0-9A-Fa-f]{3}-[089abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}$`.
fn valid_request_id(value: &HeaderValue) -> bool {
    let Ok(s) = value.to_str() else {
        return false;
    };
    let groups: Vec<&str> = s.split('-').collect();
    let lengths_ok = groups.len() == 5
        && groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()));
    lengths_ok
        && matches!(groups[2].as_bytes()[0], b'0'..=b'5')
        && matches!(
            groups[3].as_bytes()[0],
            b'0' | b'8' | b'9' | b'a' | b'b' | b'A' | b'B'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_id_pattern() {
        let ok = |s: &'static str| valid_request_id(&HeaderValue::from_static(s));
        assert!(ok("04e0f898-37b4-48bc-a794-1a57abe6aa31"));
        assert!(ok("51A87ECD-754E-4104-9C54-D01AD0F83406"));
        assert!(ok("04e0f898-37b4-18bc-0794-1a57abe6aa31"));
        assert!(!ok("0190a5b2-7c3e-7d4f-8a1b-2c3d4e5f6a7b"), "v7 is refused");
        assert!(!ok("04e0f898-37b4-48bc-c794-1a57abe6aa31"), "variant c");
        assert!(!ok("04e0f89-837b4-48bc-a794-1a57abe6aa31"));
        assert!(!ok("04e0f898-37b4-48bc-a794-1a57abe6aa3g"));
        assert!(!ok("04e0f898-37b4-48bc-a794-1a57abe6aa31-"));
        assert!(!ok(""));
    }
}
