//! The webhook sink against wiremock: one `MockServer` per test, one
//! behaviour per test, with `.expect(n)` on the calls.

use super::*;
use crate::sinks::change::{CredentialRef, Rotated};
use crate::sinks::SnapshotCredential;
use secrecy::SecretString;
use std::time::Instant;
use url::Url;
use wiremock::matchers::{header as with_header, header_exists, method};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const KEY: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const S3_SECRET: &str = "S3-unit-secret-4Kd9";

struct Fixture {
    _dir: tempfile::TempDir,
    state: StateDir,
    retry: RetryPolicy,
    snapshot: Snapshot,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        Fixture {
            _dir: dir,
            state,
            retry: RetryPolicy {
                max_retries: 2,
                base: Duration::from_millis(1),
                cap: Duration::from_millis(5),
                deadline: Duration::from_secs(10),
            },
            snapshot: Snapshot::new(
                None,
                &[SnapshotCredential {
                    user_id: "u-1".into(),
                    user_email: "app@example.com".into(),
                    storage: crate::sinks::Storage::new(
                        "os-1",
                        "EU 1",
                        "European Union",
                        "https://eu2.contabostorage.com",
                    ),
                    credential_id: 42,
                    keys: crate::sinks::Keys::new("NEWKEY", S3_SECRET),
                    rotated_at: None,
                    twin: None,
                }],
            ),
        }
    }

    fn ctx(&self) -> Context<'_> {
        Context {
            state: &self.state,
            snapshot: Some(&self.snapshot),
            records: None,
            client_id: "INT-1",
            retry: &self.retry,
        }
    }

    /// The outbox as stored, and the bytes of the database and its log.
    fn outbox_text(&self) -> String {
        let mut text = format!("{:?}", self.state.load_outbox().unwrap());
        for name in ["state.db", "state.db-wal"] {
            let bytes = std::fs::read(self.state.path().join(name)).unwrap_or_default();
            text.push_str(&String::from_utf8_lossy(&bytes));
        }
        text
    }

    fn queued(&self, sink: &WebhookSink) -> Vec<String> {
        self.state
            .load_outbox()
            .unwrap()
            .queues
            .get(&id(sink))
            .map(|q| q.events.iter().map(|e| e.id.clone()).collect())
            .unwrap_or_default()
    }
}

fn sink(server: &MockServer, include_secrets: bool) -> WebhookSink {
    WebhookSink {
        url: Url::parse(&format!("{}/hooks/tok3n", server.uri())).unwrap(),
        signing_secrets: vec![SecretString::from(KEY)],
        include_secrets,
        timeout: Duration::from_secs(2),
        headers: vec![("X-Env".into(), SecretString::from("test"))],
        ca: None,
    }
}

fn id(sink: &WebhookSink) -> String {
    crate::sinks::sink_id(&SinkSettings::Webhook(sink.clone()))
}

/// `n` S3 rotation events.
fn events(n: usize) -> Vec<NewEvent> {
    let mut rotated = Vec::new();
    for i in 0..n {
        rotated.push(Rotated {
            kind: crate::sinks::Kind::ObjectStorage,
            subject: format!("s{i}"),
            credential: Some(CredentialRef {
                user_id: "u-1".into(),
                user_email: "app@example.com".into(),
                object_storage_id: "os-1".into(),
                object_storage_name: "EU 1".into(),
                region: "European Union".into(),
                credential_id: 42,
            }),
            at: Utc::now(),
            rotation_id: uuid::Uuid::new_v4(),
            old_access_key: Some("OLDKEY".into()),
            new_access_key: Some("NEWKEY".into()),
            old_fingerprint: "hmac-sha256:a".into(),
            new_fingerprint: "hmac-sha256:b".into(),
            recovered: false,
        });
    }
    events_for(&rotated, &[], "INT-1", "")
}

fn header<'r>(request: &'r Request, name: &str) -> &'r str {
    request.headers.get(name).unwrap().to_str().unwrap()
}

#[tokio::test]
async fn a_2xx_delivers_signed_thin_events_and_empties_the_queue() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(header_exists("webhook-signature"))
        .respond_with(ResponseTemplate::new(204))
        .expect(2)
        .mount(&server)
        .await;
    let f = Fixture::new();
    let hook = sink(&server, false);
    let new = events(2);
    let last = deliver(&hook, &id(&hook), &new, &f.ctx()).await.unwrap();
    assert_eq!(last.as_deref(), Some(new[1].event.id.as_str()));
    assert!(f.queued(&hook).is_empty());

    let requests = server.received_requests().await.unwrap();
    let signer = Signer::new(&hook.signing_secrets).unwrap();
    for (request, e) in requests.iter().zip(&new) {
        assert_eq!(request.url.path(), "/hooks/tok3n");
        assert_eq!(header(request, "content-type"), "application/json");
        assert_eq!(header(request, "x-env"), "test");
        assert_eq!(header(request, "webhook-id"), e.event.id);
        let ts: i64 = header(request, "webhook-timestamp").parse().unwrap();
        assert!((Utc::now().timestamp() - ts).abs() < 60);
        assert_eq!(
            header(request, "webhook-signature"),
            signer.sign(&e.event.id, ts, &request.body)
        );
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body["type"], OBJECT_STORAGE_CREDENTIAL_ROTATED);
        assert_eq!(body["data"]["access_key"], "NEWKEY");
        assert!(body["data"].get("secret_key").is_none());
        assert!(!String::from_utf8_lossy(&request.body).contains(S3_SECRET));
    }
}

/// What stays queued after a send keeps its order: a refused event stays,
/// a 410 is dropped, a delivered one leaves, and the first event the
/// receiver is unavailable for stops the send with the rest behind it.
#[tokio::test]
async fn a_send_keeps_refused_and_unsent_events_in_order() {
    let server = MockServer::start().await;
    let f = Fixture::new();
    let hook = sink(&server, false);
    let new = events(6);
    let answers = [204, 400, 410, 204, 503, 204];
    for (e, status) in new.iter().zip(answers) {
        Mock::given(method("POST"))
            .and(with_header("webhook-id", e.event.id.as_str()))
            .respond_with(ResponseTemplate::new(status))
            .mount(&server)
            .await;
    }
    let err = deliver(&hook, &id(&hook), &new, &f.ctx())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("3 events not delivered"), "{err}");
    let ids = |i: &[usize]| -> Vec<String> { i.iter().map(|&i| new[i].event.id.clone()).collect() };
    assert_eq!(f.queued(&hook), ids(&[1, 4, 5]));
    let sent: Vec<String> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| header(r, "webhook-id").to_owned())
        .collect();
    // The 503 is tried three times (two retries); the last event is not.
    assert_eq!(sent, ids(&[0, 1, 2, 3, 4, 4, 4]));
}

#[tokio::test]
async fn include_secrets_adds_the_current_secret_to_the_body_only() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let f = Fixture::new();
    let hook = sink(&server, true);
    deliver(&hook, &id(&hook), &events(1), &f.ctx())
        .await
        .unwrap();
    let requests = server.received_requests().await.unwrap();
    let body: serde_json::Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(body["data"]["secret_key"], S3_SECRET);
    assert_eq!(body["data"]["s3_url"], "https://eu2.contabostorage.com");
    assert!(!f.outbox_text().contains(S3_SECRET));
}

#[tokio::test]
async fn include_secrets_to_a_plain_http_remote_url_is_refused_at_send_time() {
    let f = Fixture::new();
    let hook = WebhookSink {
        url: Url::parse("http://hooks.example.com/x").unwrap(),
        signing_secrets: vec![SecretString::from(KEY)],
        include_secrets: true,
        timeout: Duration::from_secs(1),
        headers: Vec::new(),
        ca: None,
    };
    let err = deliver(&hook, &id(&hook), &events(1), &f.ctx())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("refusing to send secrets"),
        "{err}"
    );
}

#[tokio::test]
async fn a_503_is_retried_with_the_same_webhook_id() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let f = Fixture::new();
    let hook = sink(&server, false);
    deliver(&hook, &id(&hook), &events(1), &f.ctx())
        .await
        .unwrap();
    let requests = server.received_requests().await.unwrap();
    let ids: Vec<&str> = requests.iter().map(|r| header(r, "webhook-id")).collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
}

#[tokio::test]
async fn a_webhook_still_down_keeps_every_event_and_fails_the_sink() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .expect(3) // one event: the first attempt and two retries; the second waits
        .mount(&server)
        .await;
    let f = Fixture::new();
    let hook = sink(&server, false);
    let new = events(2);
    let err = deliver(&hook, &id(&hook), &new, &f.ctx())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("2 events not delivered"), "{text}");
    assert!(text.contains("HTTP 503"), "{text}");
    assert!(!text.contains("tok3n"), "no URL path in errors: {text}");
    let queued = f.queued(&hook);
    assert_eq!(queued, [new[0].event.id.clone(), new[1].event.id.clone()]);
    let outbox = f.state.load_outbox().unwrap();
    let first = &outbox.queues[&id(&hook)].events[0];
    assert_eq!(first.attempts, 3);
    assert!(first.last_error.as_deref().unwrap().contains("503"));
}

#[tokio::test]
async fn retry_after_on_429_is_honoured() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let f = Fixture::new();
    let hook = sink(&server, false);
    let started = Instant::now();
    deliver(&hook, &id(&hook), &events(1), &f.ctx())
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1));
}

#[tokio::test]
async fn retry_after_on_503_is_honoured() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503).insert_header("retry-after", "1"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let f = Fixture::new();
    let hook = sink(&server, false);
    let started = Instant::now();
    deliver(&hook, &id(&hook), &events(1), &f.ctx())
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1));
}

#[tokio::test]
async fn a_410_drops_the_event_and_audits_it() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(410))
        .expect(1)
        .mount(&server)
        .await;
    let f = Fixture::new();
    let hook = sink(&server, false);
    let new = events(1);
    let last = deliver(&hook, &id(&hook), &new, &f.ctx()).await.unwrap();
    assert_eq!(last, None, "dropped, not delivered");
    assert!(f.queued(&hook).is_empty());
    let audit = std::fs::read_to_string(f.state.path().join("audit.log")).unwrap();
    assert!(audit.contains(&new[0].event.id), "{audit}");
    assert!(audit.contains("\"dropped\":true"), "{audit}");
}

#[tokio::test]
async fn another_4xx_keeps_the_event_without_retrying_and_tries_the_next() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let f = Fixture::new();
    let hook = sink(&server, false);
    let new = events(2);
    let err = deliver(&hook, &id(&hook), &new, &f.ctx())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("HTTP 400"), "{err}");
    assert_eq!(f.queued(&hook), [new[0].event.id.clone()]);
}

#[tokio::test]
async fn a_receiver_echoing_the_secret_leaks_it_nowhere() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(|request: &Request| {
            ResponseTemplate::new(422).set_body_bytes(request.body.clone())
        })
        .expect(1)
        .mount(&server)
        .await;
    let f = Fixture::new();
    let hook = sink(&server, true);
    let err = deliver(&hook, &id(&hook), &events(1), &f.ctx())
        .await
        .unwrap_err();
    let requests = server.received_requests().await.unwrap();
    assert!(String::from_utf8_lossy(&requests[0].body).contains(S3_SECRET));
    for text in [err.to_string(), format!("{err:?}"), f.outbox_text()] {
        assert!(!text.contains(S3_SECRET), "{text}");
    }
}

#[tokio::test]
async fn queued_events_are_sent_again_later_with_their_ids() {
    let server = MockServer::start().await;
    let f = Fixture::new();
    let hook = sink(&server, false);
    let new = events(1);
    {
        let _down = Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(500))
            .expect(3)
            .mount_as_scoped(&server)
            .await;
        assert!(deliver(&hook, &id(&hook), &new, &f.ctx()).await.is_err());
    }
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let results = resend_pending(
        &[SinkSettings::Webhook(hook.clone())],
        &f.state,
        "INT-1",
        &f.retry,
    )
    .await;
    assert_eq!(results.len(), 1);
    assert_eq!(
        results[0].1.as_ref().unwrap().as_deref(),
        Some(new[0].event.id.as_str())
    );
    let requests = server.received_requests().await.unwrap();
    assert_eq!(
        header(requests.last().unwrap(), "webhook-id"),
        new[0].event.id
    );
    assert!(f.queued(&hook).is_empty());
}

#[tokio::test]
async fn healthcheck_accepts_any_answer_and_fails_without_one() {
    let server = MockServer::start().await;
    Mock::given(method("HEAD"))
        .respond_with(ResponseTemplate::new(405))
        .expect(1)
        .mount(&server)
        .await;
    healthcheck(&sink(&server, false)).await.unwrap();

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut hook = sink(&server, false);
    hook.url = Url::parse(&format!("http://127.0.0.1:{port}/hooks/tok3n")).unwrap();
    let err = healthcheck(&hook).await.unwrap_err().to_string();
    assert!(err.contains("not reachable"), "{err}");
    assert!(!err.contains("tok3n"), "{err}");
}

#[tokio::test]
async fn a_timeout_keeps_the_event() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
        .expect(1)
        .mount(&server)
        .await;
    let mut f = Fixture::new();
    f.retry.max_retries = 0;
    let mut hook = sink(&server, false);
    hook.timeout = Duration::from_secs(1);
    let new = events(1);
    let err = deliver(&hook, &id(&hook), &new, &f.ctx())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no answer within 1s"), "{err}");
    assert_eq!(f.queued(&hook), [new[0].event.id.clone()]);
}

#[test]
fn sink_ids_keep_the_url_path_out_and_tell_urls_apart() {
    let hook = |url: &str| {
        SinkSettings::Webhook(WebhookSink {
            url: Url::parse(url).unwrap(),
            signing_secrets: vec![SecretString::from(KEY)],
            include_secrets: false,
            timeout: Duration::from_secs(1),
            headers: Vec::new(),
            ca: None,
        })
    };
    let a = crate::sinks::sink_id(&hook("https://h.example.com/hooks/tok3n?k=v"));
    let b = crate::sinks::sink_id(&hook("https://h.example.com/hooks/other"));
    assert!(a.starts_with("webhook:https://h.example.com#"), "{a}");
    assert!(!a.contains("tok3n") && !a.contains("k=v"), "{a}");
    assert_ne!(a, b);
    assert_eq!(
        a,
        crate::sinks::sink_id(&hook("https://h.example.com/hooks/tok3n?k=v"))
    );
}
