//! Fault injection: the rules tests install with `Simulator::set_faults`,
//! the seeded engine that decides which rule fires for a request, and the
//! canned responses of the faults that answer instead of the handler.

use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use hyper::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use hyper::StatusCode;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::routes::Operation;
use super::wire;

/// A failure the simulator can inject into one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// 429 `{"statusCode":429,"message":"Too Many Requests"}`, with a
    /// `Retry-After: N` header (seconds) when set. Nothing is applied.
    TooManyRequests { retry_after: Option<u64> },
    /// 500 with Contabo's usual message. Nothing is applied.
    InternalServerError,
    /// 503 with an HTML body, as a load balancer sends. Nothing is applied.
    ServiceUnavailable,
    /// Waits this long, then handles the request normally.
    Latency(Duration),
    /// Closes the connection without a response and without applying anything.
    DropBeforeApply,
    /// Applies the request (e.g. regenerates a key), then closes the
    /// connection without a response.
    DropAfterApply,
    /// Applies the request, then answers 200 (or the handler's 2xx) with the
    /// JSON body cut off halfway.
    MalformedBody,
    /// 502 from a proxy (HTML). Nothing is applied.
    BadGateway,
    /// Applies the request, then a proxy answers 504 (HTML) instead.
    GatewayTimeoutAfterApply,
    /// A proxy answers 504 at once; the request is applied this much later,
    /// as by a backend still working on it.
    ApplyLater(Duration),
    /// Applies the request, then answers 200 with this JSON body instead of
    /// the handler's (e.g. `{"data":[]}`, or a secret that is `null`).
    AppliedWithBody(&'static str),
    /// Answers normally, with `_pagination.totalElements` one higher than
    /// the list holds (as when an item is added while the list is read).
    WrongTotal,
    /// Answers 200 with this JSON body and applies nothing (a gateway that
    /// answered for a backend that never saw the request).
    NotAppliedWithBody(&'static str),
    /// On a credentials list: answers with each regenerated credential's
    /// previous key pair, as a lagging read replica would.
    StaleRead,
}

impl Fault {
    /// Short name for the request log.
    pub(super) fn label(&self) -> String {
        match self {
            Fault::TooManyRequests {
                retry_after: Some(s),
            } => format!("TooManyRequests(retry_after={s})"),
            Fault::TooManyRequests { retry_after: None } => "TooManyRequests".to_owned(),
            Fault::InternalServerError => "InternalServerError".to_owned(),
            Fault::ServiceUnavailable => "ServiceUnavailable".to_owned(),
            Fault::Latency(d) => format!("Latency({}ms)", d.as_millis()),
            Fault::DropBeforeApply => "DropBeforeApply".to_owned(),
            Fault::DropAfterApply => "DropAfterApply".to_owned(),
            Fault::MalformedBody => "MalformedBody".to_owned(),
            Fault::BadGateway => "BadGateway".to_owned(),
            Fault::GatewayTimeoutAfterApply => "GatewayTimeoutAfterApply".to_owned(),
            Fault::ApplyLater(d) => format!("ApplyLater({}ms)", d.as_millis()),
            Fault::AppliedWithBody(_) => "AppliedWithBody".to_owned(),
            Fault::WrongTotal => "WrongTotal".to_owned(),
            Fault::NotAppliedWithBody(_) => "NotAppliedWithBody".to_owned(),
            Fault::StaleRead => "StaleRead".to_owned(),
        }
    }
}

/// When and how often a [`Fault`] fires.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultRule {
    /// The operation it applies to; `None` matches every request, the token
    /// endpoint and unknown paths included.
    pub operation: Option<Operation>,
    /// What happens when the rule fires.
    pub fault: Fault,
    /// Chance (0..=1) that a matching request triggers the fault, drawn from
    /// the simulator's seeded RNG. Values outside the range are clamped.
    pub probability: f64,
    /// Fire at most this many times; `None` for no limit.
    pub remaining: Option<u32>,
    /// Only requests whose path contains this (e.g. one user's id).
    pub path_contains: Option<String>,
}

/// The mixed faults of the fault suite and of the benchmark's
/// `--faults mixed`, on every kind of call (the token endpoint and the
/// client-secret PUT included): 10 % 429 (no `Retry-After`), 10 % 5xx
/// (500 and 503 alike) and 5 % answers dropped after the change was
/// applied. Rules are drawn in order, so the later rates are of what the
/// earlier ones let through.
pub fn mixed_faults() -> Vec<FaultRule> {
    vec![
        FaultRule::always(Fault::TooManyRequests { retry_after: None }).with_probability(0.10),
        FaultRule::always(Fault::InternalServerError).with_probability(0.05),
        FaultRule::always(Fault::ServiceUnavailable).with_probability(0.05),
        FaultRule::always(Fault::DropAfterApply).with_probability(0.05),
    ]
}

impl FaultRule {
    /// A rule that fires `fault` on every request, every time.
    pub fn always(fault: Fault) -> Self {
        Self {
            operation: None,
            fault,
            probability: 1.0,
            remaining: None,
            path_contains: None,
        }
    }

    /// Restricts the rule to one operation.
    pub fn on(mut self, operation: Operation) -> Self {
        self.operation = Some(operation);
        self
    }

    /// Restricts the rule to paths containing `part` (one user's id, say).
    pub fn on_path(mut self, part: impl Into<String>) -> Self {
        self.path_contains = Some(part.into());
        self
    }

    /// Limits the rule to `n` firings.
    pub fn times(mut self, n: u32) -> Self {
        self.remaining = Some(n);
        self
    }

    /// Sets the chance that a matching request triggers the fault.
    pub fn with_probability(mut self, probability: f64) -> Self {
        self.probability = probability;
        self
    }
}

/// The installed rules plus the RNG for probability draws.
#[derive(Debug)]
pub(super) struct FaultEngine {
    rules: Vec<FaultRule>,
    /// Separate from the data RNG so fault draws don't shift generated keys.
    rng: StdRng,
}

impl FaultEngine {
    pub(super) fn new(seed: u64) -> Self {
        Self {
            rules: Vec::new(),
            rng: StdRng::seed_from_u64(seed ^ 0xFA17_FA17_FA17_FA17),
        }
    }

    pub(super) fn set_rules(&mut self, rules: Vec<FaultRule>) {
        self.rules = rules;
    }

    /// The fault for one request: the first rule that matches `op`, has
    /// firings left and wins its draw. Consumes one firing of that rule.
    pub(super) fn pick(&mut self, op: Operation, path: &str) -> Option<Fault> {
        for rule in &mut self.rules {
            if rule.operation.is_some_and(|o| o != op) || rule.remaining == Some(0) {
                continue;
            }
            if rule
                .path_contains
                .as_deref()
                .is_some_and(|part| !path.contains(part))
            {
                continue;
            }
            let p = if rule.probability.is_nan() {
                0.0
            } else {
                rule.probability.clamp(0.0, 1.0)
            };
            if !self.rng.random_bool(p) {
                continue;
            }
            if let Some(n) = rule.remaining.as_mut() {
                *n -= 1;
            }
            return Some(rule.fault.clone());
        }
        None
    }
}

/// 429 Too Many Requests, with `Retry-After` when given.
pub(super) fn too_many_requests(retry_after: Option<u64>) -> Response {
    let mut resp = wire::api_error(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
    if let Some(secs) = retry_after {
        resp.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

/// 500 with the message Contabo's users report.
pub(super) fn internal_server_error() -> Response {
    wire::api_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Internal Server Error, retry or contact support",
    )
}

/// 503 from a "load balancer": HTML, not JSON.
pub(super) fn service_unavailable() -> Response {
    let html = "<html><body><h1>503 Service Unavailable</h1>\n\
                No server is available to handle this request.\n</body></html>\n";
    let mut resp = Response::new(Body::from(html));
    *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/html"));
    resp
}

/// 502 or 504 from a "proxy": HTML, not JSON.
pub(super) fn gateway(status: StatusCode) -> Response {
    let html = format!(
        "<html><body><h1>{status}</h1>\nThe upstream server did not answer in time.\n</body></html>\n"
    );
    let mut resp = Response::new(Body::from(html));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/html"));
    resp
}

/// 200 with the given JSON body.
pub(super) fn json_ok(text: &'static str) -> Response {
    let mut resp = Response::new(Body::from(text));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// Adds one to a list answer's `_pagination.totalElements`.
pub(super) async fn wrong_total(resp: Response) -> Response {
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let mut value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    if let Some(total) = value["_pagination"]["totalElements"].as_u64() {
        value["_pagination"]["totalElements"] = (total + 1).into();
    }
    let mut out = Response::from_parts(parts, Body::from(value.to_string()));
    out.headers_mut().remove(hyper::header::CONTENT_LENGTH);
    out
}

/// The credentials list with each regenerated credential's previous pair
/// (`previous` looks it up by credential id).
pub(super) async fn stale(
    resp: Response,
    previous: impl Fn(i64) -> Option<(String, String)>,
) -> Response {
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let mut value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    if let Some(items) = value["data"].as_array_mut() {
        for item in items {
            let Some(id) = item["credentialId"].as_i64() else {
                continue;
            };
            if let Some((access, secret)) = previous(id) {
                item["accessKey"] = access.into();
                item["secretKey"] = secret.into();
            }
        }
    }
    let mut out = Response::from_parts(parts, Body::from(value.to_string()));
    out.headers_mut().remove(hyper::header::CONTENT_LENGTH);
    out
}

/// Cuts the handler's JSON body in half. A 204 becomes a 200 so the client
/// has a body to choke on; an empty body becomes the start of an envelope.
pub(super) async fn malformed(resp: Response) -> Response {
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let truncated = if bytes.len() >= 2 {
        bytes.slice(..bytes.len() / 2)
    } else {
        axum::body::Bytes::from_static(b"{\"data\":[{")
    };
    let status = if parts.status == StatusCode::NO_CONTENT {
        StatusCode::OK
    } else {
        parts.status
    };
    let mut out = Response::new(Body::from(truncated));
    *out.status_mut() = status;
    out.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_matching_rule_fires_and_remaining_is_honoured() {
        let mut engine = FaultEngine::new(1);
        engine.set_rules(vec![
            FaultRule::always(Fault::InternalServerError)
                .on(Operation::CreateUser)
                .times(1),
            FaultRule::always(Fault::ServiceUnavailable).times(2),
        ]);
        assert_eq!(
            engine.pick(Operation::Token, "/"),
            Some(Fault::ServiceUnavailable)
        );
        assert_eq!(
            engine.pick(Operation::CreateUser, "/"),
            Some(Fault::InternalServerError)
        );
        assert_eq!(
            engine.pick(Operation::CreateUser, "/"),
            Some(Fault::ServiceUnavailable)
        );
        assert_eq!(engine.pick(Operation::CreateUser, "/"), None);
    }

    #[test]
    fn probability_draws_are_seeded() {
        let draw = |seed| {
            let mut engine = FaultEngine::new(seed);
            engine.set_rules(vec![
                FaultRule::always(Fault::MalformedBody).with_probability(0.5)
            ]);
            (0..64)
                .map(|_| engine.pick(Operation::Token, "/").is_some())
                .collect::<Vec<_>>()
        };
        let a = draw(7);
        assert_eq!(a, draw(7));
        let fired = a.iter().filter(|f| **f).count();
        assert!((10..=54).contains(&fired), "fired {fired} of 64");
        let mut never = FaultEngine::new(7);
        never.set_rules(vec![
            FaultRule::always(Fault::MalformedBody).with_probability(0.0)
        ]);
        assert!((0..32).all(|_| never.pick(Operation::Token, "/").is_none()));
    }
}
