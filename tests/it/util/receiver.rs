//! A webhook receiver on 127.0.0.1 whose answers a test scripts
//! ([`Reply`]), capturing every request ([`Captured`]).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the receiver answers one request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) retry_after: Option<u64>,
    /// Send the request body back (as some receivers do in error pages).
    pub(crate) echo: bool,
    /// Answer only after this long (a receiver that hangs).
    pub(crate) delay: Option<Duration>,
}

impl Reply {
    pub(crate) fn status(status: u16) -> Reply {
        Reply {
            status,
            retry_after: None,
            echo: false,
            delay: None,
        }
    }
}

/// One captured request.
#[derive(Clone, Debug)]
pub(crate) struct Captured {
    pub(crate) at: Instant,
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) headers: HashMap<String, String>,
    pub(crate) body: String,
}

#[derive(Default)]
struct Plan {
    /// Answers for the next requests, in order; then `default`.
    script: VecDeque<Reply>,
    default: Option<Reply>,
}

#[derive(Clone)]
pub(crate) struct Shared {
    plan: Arc<Mutex<Plan>>,
    pub(crate) captured: Arc<Mutex<Vec<Captured>>>,
    /// Requests are answered only while no one holds this for writing.
    pub(crate) hold: Arc<tokio::sync::RwLock<()>>,
}

/// A webhook receiver on 127.0.0.1.
pub(crate) struct Receiver {
    pub(crate) port: u16,
    pub(crate) shared: Shared,
    pub(crate) server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub(crate) async fn start(default: Reply) -> Receiver {
        Receiver::start_on(0, default).await
    }

    pub(crate) async fn start_on(port: u16, default: Reply) -> Receiver {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Shared {
            plan: Arc::new(Mutex::new(Plan {
                script: VecDeque::new(),
                default: Some(default),
            })),
            captured: Arc::new(Mutex::new(Vec::new())),
            hold: Arc::new(tokio::sync::RwLock::new(())),
        };
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver {
            port,
            shared,
            server,
        }
    }

    pub(crate) fn then(&self, replies: &[Reply]) {
        self.shared
            .plan
            .lock()
            .unwrap()
            .script
            .extend(replies.iter().copied());
    }

    pub(crate) fn answer(&self, reply: Reply) {
        self.shared.plan.lock().unwrap().default = Some(reply);
    }

    /// Holds every answer (requests are still captured) until the guard
    /// is dropped.
    pub(crate) async fn hold(&self) -> tokio::sync::OwnedRwLockWriteGuard<()> {
        self.shared.hold.clone().write_owned().await
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks/tok3n", self.port)
    }

    /// The POSTs received so far.
    pub(crate) fn posts(&self) -> Vec<Captured> {
        self.shared
            .captured
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.method == "POST")
            .cloned()
            .collect()
    }
}

impl Captured {
    /// The `webhook-id` header (empty if none).
    pub(crate) fn webhook_id(&self) -> String {
        self.headers.get("webhook-id").cloned().unwrap_or_default()
    }

    /// The `Authorization` header, if any (the leak suite's control).
    pub(crate) fn authorization(&self) -> Option<String> {
        self.headers.get("authorization").cloned()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn receive(
    State(shared): State<Shared>,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = {
        let mut plan = shared.plan.lock().unwrap();
        plan.script
            .pop_front()
            .or(plan.default)
            .unwrap_or(Reply::status(200))
    };
    shared.captured.lock().unwrap().push(Captured {
        at: Instant::now(),
        method: method.to_string(),
        path: uri.path().to_owned(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
            .collect(),
        body: String::from_utf8(body.to_vec()).unwrap(),
    });
    drop(shared.hold.read().await);
    if let Some(delay) = reply.delay {
        tokio::time::sleep(delay).await;
    }
    let mut out = HeaderMap::new();
    if let Some(secs) = reply.retry_after {
        out.insert("retry-after", secs.to_string().parse().unwrap());
    }
    let status = StatusCode::from_u16(reply.status).unwrap();
    let body = if reply.echo {
        body.to_vec()
    } else {
        Vec::new()
    };
    (status, out, body).into_response()
}
