//! `ApiError`: what can go wrong talking to Contabo, named by operation.
//!
//! No variant holds a secret, a token or a URL with credentials: transport
//! errors are stripped of their URL, bodies are never echoed except the
//! vendor's short `message` field, and JSON errors keep only their category
//! and position (serde's messages can quote the offending value).

use std::time::Duration;

/// An error from one Contabo API or token-endpoint operation.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// 401 on an API call even after logging in again.
    #[error("{op}: HTTP 401 Unauthorized, also after logging in again")]
    Unauthorized { op: &'static str },

    /// 429 Too Many Requests.
    #[error("{op}: HTTP 429 Too Many Requests{}", fmt_retry_after(*.retry_after))]
    RateLimited {
        op: &'static str,
        retry_after: Option<Duration>,
    },

    /// A 429 whose `Retry-After` is longer than `[api] max_retry_after`:
    /// not waited for, not retried.
    #[error("{op}: HTTP 429 Too Many Requests with Retry-After {}s, more than [api] max_retry_after ({}s); not waiting that long", .retry_after.as_secs(), .cap.as_secs())]
    RetryAfterTooLong {
        op: &'static str,
        retry_after: Duration,
        cap: Duration,
    },

    /// The circuit breaker is open: the API failed too often in a row, and
    /// this call was not sent.
    #[error("{op}: not sent: the API failed {failures} times in a row ([api] max_consecutive_failures), so this pass stopped calling it")]
    CircuitOpen { op: &'static str, failures: u32 },

    /// The run is stopping (a shutdown signal): this call, which waited
    /// for its slot, was not sent.
    #[error("{op}: not sent: the run is stopping")]
    Stopped { op: &'static str },

    /// A 5xx answer.
    #[error("{op}: HTTP {status} server error{}", fmt_message(.message))]
    Server {
        op: &'static str,
        status: u16,
        message: Option<String>,
    },

    /// Any other non-success status (400, 403, 404, 409 …): not retried.
    #[error("{op}: HTTP {status}{}", fmt_message(.message))]
    Status {
        op: &'static str,
        status: u16,
        message: Option<String>,
    },

    /// A 3xx answer. Redirects are never followed: a login form or a
    /// bearer token re-sent to wherever a `Location` points would leak it.
    /// The target is not quoted (it may carry anything).
    #[error("{op}: HTTP {status} redirect refused: redirects are not followed; set the endpoint's final https URL in the configuration")]
    Redirect { op: &'static str, status: u16 },

    /// No answer within the configured timeout.
    #[error("{op}: no answer within {}s", .timeout.as_secs_f32())]
    Timeout { op: &'static str, timeout: Duration },

    /// Connection refused, reset or closed before an answer.
    #[error("{op}: connection failed: {detail}")]
    Transport { op: &'static str, detail: String },

    /// A 2xx answer whose body is not what the endpoint documents.
    #[error("{op}: malformed response: {detail}")]
    Malformed { op: &'static str, detail: String },

    /// `_pagination` promised more pages than the server delivered.
    #[error("{op}: page {page} of {total_pages} came back empty after {received} items (expected {expected})")]
    Truncated {
        op: &'static str,
        page: i64,
        total_pages: i64,
        received: usize,
        expected: i64,
    },

    /// A complete walk of a list returned a different number of items than
    /// its `_pagination.totalElements` said (twice in a row).
    #[error("{op}: the list has {received} items but totalElements says {expected} (it changed while being read, twice)")]
    Miscounted {
        op: &'static str,
        received: usize,
        expected: i64,
    },

    /// The token endpoint refused the credentials (OAuth2 `error` and `error_description`).
    #[error("login refused by the token endpoint (HTTP {status}): {error}{}", fmt_message(.description))]
    LoginRefused {
        status: u16,
        error: String,
        description: Option<String>,
    },

    /// An earlier attempt of this call got no answer (it may have been
    /// applied) and the later ones failed: the outcome stays unknown,
    /// whatever they answered.
    #[error("{op}: outcome unknown: an earlier attempt may have been applied ({first}); the last attempt: {last}")]
    MaybeApplied {
        op: &'static str,
        first: Box<ApiError>,
        last: Box<ApiError>,
    },

    /// Retries exhausted (attempts or deadline); `last` is the final failure.
    #[error("{op}: gave up after {attempts} attempts: {last}")]
    GaveUp {
        op: &'static str,
        attempts: u32,
        last: Box<ApiError>,
    },

    /// The HTTP client could not be built (bad TLS setup and the like).
    #[error("cannot build the HTTP client: {0}")]
    Setup(String),
}

impl crate::retry::Retryable for ApiError {
    fn is_retryable(&self) -> bool {
        ApiError::is_retryable(self)
    }

    fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            ApiError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    fn gave_up(self, op: &'static str, attempts: u32) -> ApiError {
        ApiError::GaveUp {
            op,
            attempts,
            last: Box::new(self),
        }
    }
}

impl ApiError {
    /// Whether another attempt may succeed: rate limits, 5xx, timeouts and
    /// dropped connections. 4xx answers and malformed bodies are final.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ApiError::RateLimited { .. }
                | ApiError::Server { .. }
                | ApiError::Timeout { .. }
                | ApiError::Transport { .. }
        )
    }

    /// The HTTP status, when the server answered with one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Unauthorized { .. } => Some(401),
            ApiError::RateLimited { .. } | ApiError::RetryAfterTooLong { .. } => Some(429),
            ApiError::Server { status, .. }
            | ApiError::Status { status, .. }
            | ApiError::Redirect { status, .. }
            | ApiError::LoginRefused { status, .. } => Some(*status),
            ApiError::GaveUp { last, .. } | ApiError::MaybeApplied { last, .. } => last.status(),
            _ => None,
        }
    }

    /// Whether the request may have reached the server and been applied
    /// although no answer came back (timeouts, dropped connections, 5xx).
    /// The rotation engine uses this to decide when to read state back.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            ApiError::Timeout { .. }
            | ApiError::Transport { .. }
            | ApiError::Server { .. }
            | ApiError::MaybeApplied { .. } => true,
            ApiError::GaveUp { last, .. } => last.outcome_unknown(),
            _ => false,
        }
    }

    /// Builds a [`ApiError::Transport`] or [`ApiError::Timeout`] from a reqwest
    /// error, with the URL removed and the source chain flattened.
    pub(crate) fn from_reqwest(op: &'static str, err: reqwest::Error, timeout: Duration) -> Self {
        if err.is_timeout() {
            return ApiError::Timeout { op, timeout };
        }
        ApiError::Transport {
            op,
            detail: crate::net::transport_detail(err),
        }
    }

    /// Builds a [`ApiError::Malformed`] from a JSON error without quoting the body.
    pub(crate) fn malformed_json(op: &'static str, err: &serde_json::Error) -> Self {
        let what = match err.classify() {
            serde_json::error::Category::Eof => "truncated JSON",
            serde_json::error::Category::Syntax => "invalid JSON",
            serde_json::error::Category::Data => "JSON of the wrong shape",
            serde_json::error::Category::Io => "unreadable body",
        };
        ApiError::Malformed {
            op,
            detail: format!("{what} at line {} column {}", err.line(), err.column()),
        }
    }
}

fn fmt_retry_after(d: Option<Duration>) -> String {
    d.map(|d| format!(" (Retry-After {}s)", d.as_secs()))
        .unwrap_or_default()
}

fn fmt_message(m: &Option<String>) -> String {
    m.as_deref().map(|m| format!(": {m}")).unwrap_or_default()
}

/// The vendor's error body, `{"statusCode": 401, "message": "Unauthorized"}`.
/// Only `message` is kept, cut to 200 characters and to printable text.
pub(crate) fn vendor_message(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct VendorError {
        message: Option<serde_json::Value>,
    }
    let parsed: VendorError = serde_json::from_slice(body).ok()?;
    let text = match parsed.message? {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    };
    Some(clean_text(&text, 200))
}

/// Keeps printable characters only and cuts to `max` characters.
pub(crate) fn clean_text(text: &str, max: usize) -> String {
    let mut out: String = text.chars().filter(|c| !c.is_control()).take(max).collect();
    if text.chars().count() > max {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_message_is_taken_from_the_documented_shape_only() {
        assert_eq!(
            vendor_message(br#"{"statusCode":404,"message":"Not Found"}"#).as_deref(),
            Some("Not Found")
        );
        assert_eq!(vendor_message(b"<html>503</html>"), None);
        let long = format!(r#"{{"message":"{}"}}"#, "x".repeat(500));
        assert_eq!(
            vendor_message(long.as_bytes()).unwrap().chars().count(),
            201
        );
    }

    #[test]
    fn malformed_json_does_not_quote_the_body() {
        let err = serde_json::from_str::<u64>(r#""s3cr3t-value""#).unwrap_err();
        let e = ApiError::malformed_json("getObjectStorageCredentials", &err);
        let text = e.to_string();
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(text.contains("wrong shape"), "{text}");
    }

    #[test]
    fn retryable_classification() {
        let op = "retrieveUserList";
        assert!(ApiError::Server {
            op,
            status: 503,
            message: None
        }
        .is_retryable());
        assert!(ApiError::RateLimited {
            op,
            retry_after: None
        }
        .is_retryable());
        assert!(!ApiError::Status {
            op,
            status: 404,
            message: None
        }
        .is_retryable());
        assert!(!ApiError::Malformed {
            op,
            detail: String::new()
        }
        .is_retryable());
    }
}
