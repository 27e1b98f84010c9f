//! One event's POST, with retries: signed per attempt (a fresh
//! `webhook-timestamp`, the same `webhook-id`), classified by status.
//!
//! The receiver's response body is never read: it may echo the payload, and
//! with `include_secrets` that holds a secret. Errors carry status codes and
//! connection errors (without the URL) only.

use super::signature::Signer;
use super::WebhookSink;
use crate::retry::{parse_retry_after, RetryPolicy, Retryable};
use reqwest::header::{HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use secrecy::{ExposeSecret, SecretString};
use std::time::Duration;

/// The `op` of errors, as in `webhook: HTTP 503 server error`.
const OP: &str = "webhook";

/// Why one POST (or the event's retries) failed. Status codes and
/// connection errors only: never the URL or the receiver's body.
#[derive(Debug, thiserror::Error)]
pub(super) enum SendError {
    #[error("{OP}: HTTP 429 Too Many Requests{}", retry_after.map(|d| format!(" (Retry-After {}s)", d.as_secs())).unwrap_or_default())]
    RateLimited { retry_after: Option<Duration> },
    #[error("{OP}: HTTP {status} server error")]
    Server { status: u16 },
    #[error("{OP}: HTTP {status}")]
    Status { status: u16 },
    #[error("{OP}: no answer within {}s", .timeout.as_secs_f32())]
    Timeout { timeout: Duration },
    #[error("{OP}: connection failed: {detail}")]
    Transport { detail: String },
    #[error("{OP}: gave up after {attempts} attempts: {last}")]
    GaveUp { attempts: u32, last: Box<SendError> },
}

impl SendError {
    fn from_reqwest(err: reqwest::Error, timeout: Duration) -> SendError {
        if err.is_timeout() {
            SendError::Timeout { timeout }
        } else {
            SendError::Transport {
                detail: crate::net::transport_detail(err),
            }
        }
    }

    fn status(&self) -> Option<u16> {
        match self {
            SendError::RateLimited { .. } => Some(429),
            SendError::Server { status } | SendError::Status { status } => Some(*status),
            SendError::GaveUp { last, .. } => last.status(),
            _ => None,
        }
    }
}

impl Retryable for SendError {
    /// 429, 5xx, timeouts and dropped connections; other answers are final.
    fn is_retryable(&self) -> bool {
        !matches!(self, SendError::Status { .. } | SendError::GaveUp { .. })
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            SendError::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }

    fn gave_up(self, _op: &'static str, attempts: u32) -> SendError {
        SendError::GaveUp {
            attempts,
            last: Box::new(self),
        }
    }
}

/// How one event's delivery ended.
#[derive(Debug)]
pub(super) enum Outcome {
    /// 2xx: the receiver has it.
    Delivered,
    /// 410 Gone: the receiver does not want it; it is dropped.
    Gone,
    /// Another 4xx (or a 3xx, since redirects are not followed): kept, and
    /// not retried in this run.
    Rejected(SendError),
    /// 5xx, 429, timeouts and connection errors after the run's retries:
    /// kept for the next run.
    Unavailable(SendError),
}

/// Sends events to one webhook.
pub(super) struct Sender<'a> {
    http: reqwest::Client,
    sink: &'a WebhookSink,
    signer: Signer,
    retry: &'a RetryPolicy,
}

/// Why a webhook cannot be sent to at all.
#[derive(Debug, thiserror::Error)]
pub(super) enum SetupError {
    #[error("cannot build the HTTP client: {0}")]
    Client(reqwest::Error),
    #[error("{0}")]
    Signer(&'static str),
    #[error("HEAD: no answer within {0}s")]
    Timeout(f32),
    #[error("HEAD: connection failed: {0}")]
    Connection(String),
}

/// The HTTP client of a webhook: the sink's timeout, no redirects (a
/// redirect could carry a secret-bearing body to another host).
pub(super) fn http_client(sink: &WebhookSink) -> Result<reqwest::Client, SetupError> {
    let builder = crate::net::client_builder()
        .connect_timeout(sink.timeout)
        .timeout(sink.timeout)
        .redirect(reqwest::redirect::Policy::none());
    crate::tls::trust(builder, sink.ca.as_ref())
        .build()
        .map_err(|e| SetupError::Client(e.without_url()))
}

impl<'a> Sender<'a> {
    pub(super) fn new(sink: &'a WebhookSink, retry: &'a RetryPolicy) -> Result<Self, SetupError> {
        let signer = Signer::new(&sink.signing_secrets).map_err(SetupError::Signer)?;
        Ok(Sender {
            http: http_client(sink)?,
            sink,
            signer,
            retry,
        })
    }

    /// Delivers one event, retrying transient failures within the policy.
    /// `attempted` is called before every attempt (to count it).
    pub(super) async fn send(
        &self,
        id: &str,
        body: &SecretString,
        mut attempted: impl FnMut(),
    ) -> Outcome {
        let mut backoff = self.retry.start(OP);
        loop {
            attempted();
            let (err, retry_after) = match self.attempt(id, body).await {
                Ok(()) => return Outcome::Delivered,
                Err(failure) => failure,
            };
            if err.status() == Some(410) {
                return Outcome::Gone;
            }
            let retryable = err.is_retryable();
            match backoff.next_after(err, retry_after) {
                Ok(delay) => tokio::time::sleep(delay).await,
                Err(err) if retryable => return Outcome::Unavailable(err),
                Err(err) => return Outcome::Rejected(err),
            }
        }
    }

    /// One POST. A failure comes with the `Retry-After` the server sent.
    async fn attempt(
        &self,
        id: &str,
        body: &SecretString,
    ) -> Result<(), (SendError, Option<Duration>)> {
        let timestamp = chrono::Utc::now().timestamp();
        let bytes = body.expose_secret().as_bytes();
        let signature = self.signer.sign(id, timestamp, bytes);
        let request = self
            .http
            .post(self.sink.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature);
        let response = with_headers(request, self.sink)
            .body(bytes.to_vec())
            .send()
            .await
            .map_err(|e| (SendError::from_reqwest(e, self.sink.timeout), None))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        // Dropped unread: the body may echo the payload.
        drop(response);
        tracing::debug!(status, webhook_id = id, "Webhook answered.");
        let err = match status {
            200..=299 => return Ok(()),
            429 => SendError::RateLimited { retry_after },
            500..=599 => SendError::Server { status },
            _ => SendError::Status { status },
        };
        Err((err, retry_after))
    }
}

/// A HEAD request to the webhook URL: any HTTP answer means reachable.
pub(super) async fn probe(sink: &WebhookSink) -> Result<u16, SetupError> {
    let request = with_headers(http_client(sink)?.head(sink.url.clone()), sink);
    match request.send().await {
        Ok(response) => Ok(response.status().as_u16()),
        Err(e) if e.is_timeout() => Err(SetupError::Timeout(sink.timeout.as_secs_f32())),
        Err(e) => Err(SetupError::Connection(crate::net::transport_detail(e))),
    }
}

/// Adds the sink's own headers (validated by the configuration; the
/// reserved ones cannot be among them). Their values are secrets: this is
/// the one place they are exposed, into values marked sensitive (which
/// `Debug` hides and HTTP/2 would never index).
fn with_headers(
    mut request: reqwest::RequestBuilder,
    sink: &WebhookSink,
) -> reqwest::RequestBuilder {
    for (name, value) in &sink.headers {
        if let (Ok(name), Ok(mut value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value.expose_secret()),
        ) {
            value.set_sensitive(true);
            request = request.header(name, value);
        }
    }
    request
}
