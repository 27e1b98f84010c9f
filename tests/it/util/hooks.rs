//! A webhook receiver on 127.0.0.1 that answers 200 and keeps the POSTs,
//! for the tests that need one without scripting its answers (the crash,
//! leak and proxy suites).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use std::sync::{Arc, Mutex};

/// One POST a [`Hooks`] receiver got.
#[derive(Clone, Debug)]
pub(crate) struct Post {
    pub(crate) webhook_id: String,
    /// The `Authorization` header, if any (the leak suite's control).
    pub(crate) authorization: Option<String>,
    pub(crate) body: String,
}

/// A webhook receiver on 127.0.0.1 that answers every request with 200 and
/// keeps the POSTs (shared with the leak suite).
pub(crate) struct Hooks {
    pub(crate) url: String,
    posts: Arc<Mutex<Vec<Post>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Hooks {
    pub(crate) async fn start() -> Hooks {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let url = format!(
            "http://127.0.0.1:{}/hooks/in",
            listener.local_addr().unwrap().port()
        );
        let posts = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new().fallback(keep).with_state(posts.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Hooks { url, posts, server }
    }

    pub(crate) fn posts(&self) -> Vec<Post> {
        self.posts.lock().unwrap().clone()
    }
}

impl Drop for Hooks {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn keep(
    State(posts): State<Arc<Mutex<Vec<Post>>>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    if method == Method::POST {
        posts.lock().unwrap().push(Post {
            webhook_id: headers
                .get("webhook-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
            authorization: headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    StatusCode::OK
}
