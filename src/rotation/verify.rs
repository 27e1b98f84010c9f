//! Verification: a regenerated S3 key proven at the storage itself
//! (docs/design.md §4, `[object_storage] verify = "s3"`).
//!
//! The Contabo API's answer says the key was changed; it does not say that
//! the storage accepts it, nor how long that takes. So after the confirm
//! the new key signs a `ListBuckets` (SigV4, path-style, the storage's
//! region) at the storage's `s3Url`, and the request is repeated while the
//! storage refuses it, for at most `verify_timeout`. A job with probe
//! buckets (a twin's standby key) must then list each of them too
//! (ListObjectsV2 with `max-keys=0`): a key that cannot is refused, naming
//! the bucket. Then the old key is tried once: whether it is refused now is
//! recorded as a figure, never a failure.
//!
//! Every request waits for the proofs' budget first (`pace`): one rate
//! for all proofs together, and a `503 SlowDown` pauses and slows them
//! all. A `SlowDown` is never a refusal of the key: the proof goes on
//! within `verify_timeout`.
//!
//! A proof never holds up delivery (the old key is dead already): the
//! coordinator starts it beside the sink writes and reports it when it
//! ends. Probes are counted apart from the API's requests.
//!
//! Signing is done by `aws-sigv4`, the signer of AWS's own Rust SDK: it
//! signs headers (what the simulator and real storages check), with the
//! S3 settings (single URI encoding, no path normalisation,
//! `x-amz-content-sha256`), and needs no SDK client or credential chain.
//! rusty-s3 only presigns URLs, and reqsign brings its own credential
//! loading, which a rotator holding the key in memory has no use for.

use crate::inventory::CredentialEntry;
use crate::sinks::change::CredentialRef;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use pace::Pacer;
use secrecy::{ExposeSecret, SecretString};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;
use uuid::Uuid;

mod pace;

/// One probe's own bound (within what is left of `verify_timeout`).
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Waits between probes of a key the storage does not accept yet.
const FIRST_WAIT: Duration = Duration::from_millis(200);
const MAX_WAIT: Duration = Duration::from_secs(3);
/// At most this many proofs at once: each is a handful of small requests,
/// and a slow storage must not gather thousands of waiting tasks.
pub(super) const MAX_PROOFS: usize = 32;

/// Proofs at once for `[api] concurrency`: twice the API's slots (a proof
/// is two requests one after the other, a rotated credential about 1.7
/// spread over the slots, so the storage keeps up at the same latency),
/// at least 8 and at most [`MAX_PROOFS`]. Each proof in flight holds an
/// HTTP connection to the storage (about 50 KB): at concurrency 8, 32
/// proof slots kept up to 32 of them open where 16 do the same work.
pub(super) fn proof_slots(concurrency: usize) -> usize {
    (2 * concurrency).clamp(8, MAX_PROOFS)
}
/// At most this many proofs wait for a slot; then the pass waits before
/// starting more users (each waiting proof holds a new and an old key).
pub(super) const MAX_PROOF_BACKLOG: usize = 128;

/// A rotated credential to prove: its new and old key pairs and where.
pub(super) struct Job {
    pub rotation_id: Uuid,
    pub subject: String,
    pub credential: CredentialRef,
    pub endpoint: String,
    pub region: &'static str,
    pub access_key: String,
    pub secret_key: SecretString,
    pub old_access_key: String,
    pub old_secret_key: SecretString,
    /// Buckets the new key must list as well, after ListBuckets (a twin's
    /// `probe_buckets`); empty from [`Job::new`].
    pub probe_buckets: Vec<String>,
}

impl Job {
    /// The job for `entry` (its old values) rotated to `new`.
    pub fn new(
        rotation_id: Uuid,
        old: &CredentialEntry,
        new_access_key: &str,
        new_secret_key: &SecretString,
    ) -> Job {
        Job {
            rotation_id,
            subject: super::subject_of(old),
            credential: CredentialRef::from(old),
            endpoint: old.s3_url.clone(),
            region: crate::sinks::formats::region_code(&old.region),
            access_key: new_access_key.to_owned(),
            secret_key: new_secret_key.clone(),
            old_access_key: old.access_key.clone(),
            old_secret_key: old.secret_key.clone(),
            probe_buckets: Vec::new(),
        }
    }
}

/// How a proof ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The storage accepted a request signed with the new key.
    Accepted {
        /// Whether the old key was refused right after (`None`: that probe
        /// got no S3 answer).
        old_key_refused: Option<bool>,
    },
    /// Not accepted within `verify_timeout`: the last S3 error code (or
    /// what kept the request from an answer), and the probe bucket it was
    /// about (`None`: ListBuckets, the key itself).
    Refused {
        last_error: String,
        bucket: Option<String>,
    },
}

impl Outcome {
    /// What kept the key from being proven, for reports (`None` when it
    /// was accepted): the S3 code, and the probe bucket if it was one.
    pub fn error(&self) -> Option<String> {
        match self {
            Outcome::Accepted { .. } => None,
            Outcome::Refused {
                last_error,
                bucket: None,
            } => Some(last_error.clone()),
            Outcome::Refused {
                last_error,
                bucket: Some(bucket),
            } => Some(format!("{last_error} on probe bucket {bucket}")),
        }
    }
}

/// A finished proof.
pub(super) struct Proof {
    pub job: Job,
    pub outcome: Outcome,
    /// Requests sent with the new key.
    pub attempts: u32,
    pub elapsed: Duration,
}

/// Sends the probes; shared by a pass's proofs (clones share the budget,
/// the pause and the counts).
#[derive(Clone)]
pub(super) struct Prover {
    http: reqwest::Client,
    timeout: Duration,
    pacer: Arc<Pacer>,
    probes: Arc<AtomicU64>,
    slow_downs: Arc<AtomicU64>,
}

/// What a proof's request is for.
#[derive(Clone, Copy)]
enum Target<'a> {
    /// `GET /`: ListBuckets.
    Storage,
    /// `GET /{bucket}?list-type=2&max-keys=0`: ListObjectsV2, no keys.
    Bucket(&'a str),
}

impl Prover {
    /// A prover whose proofs each end within `timeout`, and together send
    /// at most `requests_per_second` (`verify_requests_per_second`).
    pub fn new(timeout: Duration, requests_per_second: f64) -> Prover {
        let builder = crate::net::client_builder()
            // A redirect would carry the signed request elsewhere.
            .redirect(reqwest::redirect::Policy::none());
        let http = crate::tls::trust(builder, None)
            .build()
            .expect("the TLS backend initialises");
        Prover {
            http,
            timeout,
            pacer: Arc::new(Pacer::new(requests_per_second)),
            probes: Arc::new(AtomicU64::new(0)),
            slow_downs: Arc::new(AtomicU64::new(0)),
        }
    }

    /// S3 requests sent so far.
    pub fn probes(&self) -> u64 {
        self.probes.load(Ordering::Relaxed)
    }

    /// Of [`Prover::probes`], those the storage answered with `SlowDown`.
    pub fn slow_downs(&self) -> u64 {
        self.slow_downs.load(Ordering::Relaxed)
    }

    /// Proves `job`'s new key, retrying within the timeout: ListBuckets,
    /// then each probe bucket, each step repeated while the storage
    /// refuses it; then the old key once.
    pub async fn prove(&self, job: Job) -> Proof {
        let started = Instant::now();
        let deadline = started + self.timeout;
        let mut wait = FIRST_WAIT;
        let mut attempts = 0;
        // Steps passed: 0 ListBuckets, then one per probe bucket.
        let mut passed: usize = 0;
        let mut last_error: Option<(String, Option<String>)> = None;
        let outcome = loop {
            let target = match passed.checked_sub(1) {
                None => Target::Storage,
                Some(i) => match job.probe_buckets.get(i) {
                    Some(bucket) => Target::Bucket(bucket),
                    None => {
                        break Outcome::Accepted {
                            old_key_refused: self.old_key_refused(&job, deadline).await,
                        }
                    }
                },
            };
            let bucket = match target {
                Target::Storage => None,
                Target::Bucket(b) => Some(b.to_owned()),
            };
            let answer = self
                .request(&job, target, (&job.access_key, &job.secret_key), deadline)
                .await;
            if !matches!(answer, Err(Probe::NoSlot)) {
                attempts += 1;
            }
            match answer {
                Ok(()) => {
                    passed += 1;
                    continue;
                }
                // The pacer pauses every proof; this one goes on after it.
                Err(Probe::SlowDown) => {
                    last_error = Some(("SlowDown".to_owned(), bucket));
                    continue;
                }
                Err(Probe::NoSlot) => break refused(last_error),
                Err(Probe::Refused(code) | Probe::NoAnswer(code)) => {
                    last_error = Some((code, bucket));
                }
            }
            if Instant::now() + wait >= deadline {
                break refused(last_error);
            }
            if let Some((error, bucket)) = &last_error {
                tracing::debug!(credential_id = job.credential.credential_id, %error, bucket, "The storage does not accept the new key yet.");
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(MAX_WAIT);
        };
        Proof {
            job,
            outcome,
            attempts,
            elapsed: started.elapsed(),
        }
    }

    /// Whether the storage refuses the old key (`None`: no S3 answer but
    /// `SlowDown` within the deadline).
    async fn old_key_refused(&self, job: &Job, deadline: Instant) -> Option<bool> {
        // A twin's standby has no old key to compare: its keys before the
        // switch were retired long ago.
        if job.old_access_key.is_empty() {
            return None;
        }
        let old = (job.old_access_key.as_str(), &job.old_secret_key);
        loop {
            match self.request(job, Target::Storage, old, deadline).await {
                Ok(()) => return Some(false),
                Err(Probe::Refused(_)) => return Some(true),
                Err(Probe::SlowDown) => continue,
                Err(Probe::NoAnswer(_) | Probe::NoSlot) => return None,
            }
        }
    }

    /// One signed request at the job's endpoint, once the budget allows
    /// it (and before `deadline`).
    async fn request(
        &self,
        job: &Job,
        target: Target<'_>,
        (access_key, secret_key): (&str, &SecretString),
        deadline: Instant,
    ) -> Result<(), Probe> {
        let url = match target {
            Target::Storage => format!("{}/", job.endpoint.trim_end_matches('/')),
            Target::Bucket(bucket) => {
                let mut url = url::Url::parse(&job.endpoint)
                    .map_err(|e| Probe::NoAnswer(format!("the storage's URL: {e}")))?;
                url.path_segments_mut()
                    .map_err(|()| Probe::NoAnswer("the storage's URL has no path".into()))?
                    .pop_if_empty()
                    .push(bucket);
                url.set_query(Some("list-type=2&max-keys=0"));
                url.into()
            }
        };
        let ready = tokio::time::timeout_at(deadline, self.pacer.ready()).await;
        if ready.is_err() || Instant::now() >= deadline {
            return Err(Probe::NoSlot);
        }
        let headers = signed_headers(
            "GET",
            &url,
            &[],
            &[],
            job.region,
            (access_key, secret_key),
            SystemTime::now(),
        )
        .map_err(Probe::NoAnswer)?;
        let mut request = self.http.get(&url);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        self.probes.fetch_add(1, Ordering::Relaxed);
        let response = request
            .timeout(left.clamp(Duration::from_millis(100), PROBE_TIMEOUT))
            .send()
            .await
            .map_err(|e| Probe::NoAnswer(crate::net::transport_detail(e)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::retry::parse_retry_after);
        let body = response.text().await.unwrap_or_default();
        let code = s3_error_code(&body);
        // A HEAD's SlowDown has no body to say so; a GET's may lose it too.
        if status == reqwest::StatusCode::SERVICE_UNAVAILABLE
            && (code.as_deref() == Some("SlowDown") || body.trim().is_empty())
        {
            self.slow_downs.fetch_add(1, Ordering::Relaxed);
            self.pacer.slowed_down(retry_after);
            return Err(Probe::SlowDown);
        }
        let code = code.unwrap_or_else(|| format!("HTTP {}", status.as_u16()));
        if status.is_client_error() {
            Err(Probe::Refused(code))
        } else {
            Err(Probe::NoAnswer(code))
        }
    }
}

/// The refusal after `last_error` (the S3 code and the probe bucket it
/// was about), or after no answer at all.
fn refused(last_error: Option<(String, Option<String>)>) -> Outcome {
    let (last_error, bucket) = last_error.unwrap_or_else(|| {
        (
            "no request within the proofs' budget ([object_storage] verify_requests_per_second)"
                .to_owned(),
            None,
        )
    });
    Outcome::Refused { last_error, bucket }
}

/// What one probe got short of acceptance.
enum Probe {
    /// A 4xx from the storage, with its S3 error code.
    Refused(String),
    /// A 5xx, a timeout, no connection.
    NoAnswer(String),
    /// `503 SlowDown`, or a 503 with no body: the storage's request limit,
    /// not the key.
    SlowDown,
    /// The deadline came before the budget let the request go: not sent.
    NoSlot,
}

/// The headers that sign `method url` with `body` for S3 in `region`:
/// `authorization`, `x-amz-date`, `x-amz-content-sha256`, plus the
/// `extra` headers given (which are signed and must be sent as given).
/// `key` is the access key and its secret.
pub fn signed_headers(
    method: &str,
    url: &str,
    extra: &[(&str, &str)],
    body: &[u8],
    region: &str,
    (access_key, secret_key): (&str, &SecretString),
    time: SystemTime,
) -> Result<Vec<(String, String)>, String> {
    let identity = aws_credential_types::Credentials::new(
        access_key,
        secret_key.expose_secret(),
        None,
        None,
        "contabo-rotator",
    )
    .into();
    let mut settings = SigningSettings::default();
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("s3")
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| format!("signing parameters: {e}"))?
        .into();
    let request = SignableRequest::new(
        method,
        url,
        extra.iter().copied(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| format!("the request cannot be signed: {e}"))?;
    let (instructions, _) = sign(request, &params)
        .map_err(|e| format!("signing failed: {e}"))?
        .into_parts();
    let mut headers: Vec<(String, String)> = extra
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect();
    headers.extend(
        instructions
            .headers()
            .map(|(n, v)| (n.to_owned(), v.to_owned())),
    );
    Ok(headers)
}

/// The `<Code>` of an S3 XML error body. A substring search, not an XML
/// parser: the code is one element of a small fixed document, and an
/// unexpected body only loses the code (the status is reported instead).
fn s3_error_code(body: &str) -> Option<String> {
    let start = body.find("<Code>")? + "<Code>".len();
    let len = body[start..].find("</Code>")?;
    let code = body[start..start + len].trim();
    (!code.is_empty() && code.len() <= 64 && code.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then(|| code.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proof_slots_follow_the_api_slots_within_bounds() {
        let slots: Vec<usize> = [1, 4, 8, 12, 16, 100].map(proof_slots).into();
        assert_eq!(slots, [8, 8, 16, 24, 32, 32]);
    }

    /// AWS's published example (S3 API Reference, "Signature Calculations
    /// for the Authorization Header: Transferring Payload in a Single
    /// Chunk", Example: GET Object): the signer, with the settings used
    /// for the probes, gives exactly AWS's signature.
    #[test]
    fn signs_aws_published_s3_example() {
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_369_353_600); // 2013-05-24T00:00:00Z
        let secret = SecretString::from("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY");
        let headers = signed_headers(
            "GET",
            "https://examplebucket.s3.amazonaws.com/test.txt",
            &[("range", "bytes=0-9")],
            &[],
            "us-east-1",
            ("AKIAIOSFODNN7EXAMPLE", &secret),
            time,
        )
        .unwrap();
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
                .unwrap_or_else(|| panic!("no {name} header"))
        };
        assert_eq!(get("x-amz-date"), "20130524T000000Z");
        assert_eq!(
            get("x-amz-content-sha256"),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            get("authorization"),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    fn job(endpoint: &str) -> Job {
        Job {
            rotation_id: Uuid::new_v4(),
            subject: "app@example.com/Object Storage EU 1/7".into(),
            credential: CredentialRef {
                user_id: "u-1".into(),
                user_email: "app@example.com".into(),
                object_storage_id: "os-1".into(),
                object_storage_name: "Object Storage EU 1".into(),
                region: "European Union".into(),
                credential_id: 7,
            },
            endpoint: endpoint.to_owned(),
            region: "eu",
            access_key: "NEWKEY".into(),
            secret_key: SecretString::from("new-secret-value-123"),
            old_access_key: "OLDKEY".into(),
            old_secret_key: SecretString::from("old-secret-value-456"),
            probe_buckets: Vec::new(),
        }
    }

    fn refused(code: &str) -> wiremock::ResponseTemplate {
        wiremock::ResponseTemplate::new(403).set_body_string(format!(
            "<?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>no</Message></Error>"
        ))
    }

    /// A key the storage refuses at first (propagation) is probed again
    /// until accepted; then the old key is tried once.
    #[tokio::test]
    async fn a_key_accepted_after_propagation_is_proven() {
        use wiremock::matchers::{header_regex, method, path};
        use wiremock::{Mock, MockServer, ResponseTemplate};
        let server = MockServer::start().await;
        let signed_by = |key: &str| {
            header_regex(
                "authorization",
                &format!("^AWS4-HMAC-SHA256 Credential={key}/[0-9]{{8}}/eu/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=[0-9a-f]{{64}}$"),
            )
        };
        Mock::given(method("GET"))
            .and(path("/"))
            .and(signed_by("NEWKEY"))
            .respond_with(refused("InvalidAccessKeyId"))
            .up_to_n_times(2)
            .with_priority(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/"))
            .and(signed_by("NEWKEY"))
            .respond_with(ResponseTemplate::new(200).set_body_string("<ListAllMyBucketsResult/>"))
            .with_priority(2)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/"))
            .and(signed_by("OLDKEY"))
            .respond_with(refused("InvalidAccessKeyId"))
            .mount(&server)
            .await;
        let prover = Prover::new(Duration::from_secs(30), 1000.0);
        let proof = prover.prove(job(&server.uri())).await;
        assert_eq!(
            proof.outcome,
            Outcome::Accepted {
                old_key_refused: Some(true)
            }
        );
        assert_eq!(proof.attempts, 3);
        assert_eq!(
            prover.probes(),
            4,
            "three with the new key, one with the old"
        );
    }

    /// A key still refused at the end of the timeout is a refusal naming
    /// the storage's last error code, and no secret.
    #[tokio::test]
    async fn a_key_never_accepted_is_refused_with_the_s3_code() {
        use wiremock::matchers::method;
        use wiremock::{Mock, MockServer};
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(refused("SignatureDoesNotMatch"))
            .mount(&server)
            .await;
        let prover = Prover::new(Duration::from_secs(1), 1000.0);
        let proof = prover.prove(job(&server.uri())).await;
        let Outcome::Refused { last_error, bucket } = &proof.outcome else {
            panic!("accepted: {:?}", proof.outcome);
        };
        assert_eq!(
            (last_error.as_str(), bucket),
            ("SignatureDoesNotMatch", &None)
        );
        assert!(proof.attempts >= 2, "retried within the timeout");
        assert!(
            proof.elapsed < Duration::from_secs(2),
            "bounded by the timeout"
        );
        assert_eq!(
            u64::from(proof.attempts),
            prover.probes(),
            "the old key is not tried"
        );
    }

    /// A `503 SlowDown`, and a 503 with no body (a HEAD's SlowDown), are
    /// not refusals: the proof waits for the shared pause and goes on
    /// until the storage answers, and the `SlowDown`s are counted.
    #[tokio::test]
    async fn a_slow_down_pauses_the_proof_and_never_refuses_the_key() {
        use wiremock::matchers::{header_regex, method, path};
        use wiremock::{Mock, MockServer, ResponseTemplate};
        let server = MockServer::start().await;
        let signed_by = |key: &str| header_regex("authorization", &format!("Credential={key}/"));
        Mock::given(method("GET"))
            .and(path("/"))
            .and(signed_by("NEWKEY"))
            .respond_with(ResponseTemplate::new(503).set_body_string(
                "<?xml version=\"1.0\"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>",
            ))
            .up_to_n_times(1)
            .with_priority(1)
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/"))
            .and(signed_by("NEWKEY"))
            .respond_with(ResponseTemplate::new(503))
            .up_to_n_times(1)
            .with_priority(2)
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/"))
            .and(signed_by("NEWKEY"))
            .respond_with(ResponseTemplate::new(200).set_body_string("<ListAllMyBucketsResult/>"))
            .with_priority(3)
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/"))
            .and(signed_by("OLDKEY"))
            .respond_with(refused("InvalidAccessKeyId"))
            .expect(1)
            .mount(&server)
            .await;
        let prover = Prover::new(Duration::from_secs(30), 1000.0);
        let started = std::time::Instant::now();
        let proof = prover.prove(job(&server.uri())).await;
        assert_eq!(
            proof.outcome,
            Outcome::Accepted {
                old_key_refused: Some(true)
            }
        );
        assert_eq!(
            (proof.attempts, prover.probes(), prover.slow_downs()),
            (3, 4, 2)
        );
        assert!(
            started.elapsed() >= 2 * pace::PAUSE,
            "each SlowDown after a pause pauses again"
        );
    }

    /// The job of `c`, rotated to its current key (the old key is one the
    /// storage never knew), with `buckets` to probe.
    fn simulated_job(c: &contabo_simulator::SimCredential, buckets: &[&str]) -> Job {
        Job {
            endpoint: c.s3_url.clone(),
            region: crate::sinks::formats::region_code(&c.region),
            access_key: c.access_key.clone(),
            secret_key: c.secret_key.clone(),
            probe_buckets: buckets.iter().map(|b| (*b).to_owned()).collect(),
            ..job("")
        }
    }

    /// A key the storage accepts but a bucket policy keeps from a probe
    /// bucket is refused, naming the bucket, after retries; the bucket is
    /// listed with ListObjectsV2 and no keys, and another user of the
    /// account (a twin's other half) lists it and is accepted.
    #[tokio::test]
    async fn a_probe_bucket_the_key_cannot_list_refuses_it_by_name() {
        use contabo_simulator::{Simulator, SimulatorOptions};
        let sim = Simulator::start(SimulatorOptions::default()).await.unwrap();
        assert!(sim.create_bucket("eu", "app-data"));
        let snapshot = sim.snapshot();
        let (denied, other) = (&snapshot.users[1], &snapshot.users[2]);
        sim.deny_bucket(&denied.user_id, None, "app-data");
        let prover = Prover::new(Duration::from_secs(1), 1000.0);
        let buckets = ["sim-bucket", "app-data"];

        let proof = prover
            .prove(simulated_job(&denied.credentials[0], &buckets))
            .await;
        assert_eq!(
            proof.outcome,
            Outcome::Refused {
                last_error: "AccessDenied".into(),
                bucket: Some("app-data".into())
            }
        );
        assert_eq!(
            proof.outcome.error().as_deref(),
            Some("AccessDenied on probe bucket app-data")
        );
        let log = sim.s3_requests();
        let seen: Vec<(&str, u16)> = log.iter().map(|r| (r.path.as_str(), r.status)).collect();
        assert_eq!(
            seen[..3],
            [("/", 200), ("/sim-bucket", 200), ("/app-data", 403)]
        );
        assert!(
            seen[3..].iter().all(|s| *s == ("/app-data", 403)),
            "{seen:?}"
        );
        assert!(seen.len() >= 4, "retried within the timeout: {seen:?}");
        assert_eq!(log[2].query.as_deref(), Some("list-type=2&max-keys=0"));
        assert_eq!(log[2].code, Some("AccessDenied"));
        assert_eq!(
            u64::from(proof.attempts),
            prover.probes(),
            "the old key is not tried"
        );

        let proof = prover
            .prove(simulated_job(&other.credentials[0], &buckets))
            .await;
        assert_eq!(
            proof.outcome,
            Outcome::Accepted {
                old_key_refused: Some(true)
            }
        );
        assert_eq!(proof.attempts, 3, "ListBuckets and two buckets");
    }

    #[test]
    fn error_codes_are_read_from_s3_bodies() {
        let body = r#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>InvalidAccessKeyId</Code><Message>The AWS Access Key Id you provided does not exist in our records.</Message></Error>"#;
        assert_eq!(s3_error_code(body).as_deref(), Some("InvalidAccessKeyId"));
        assert_eq!(s3_error_code("<html>bad gateway</html>"), None);
        assert_eq!(s3_error_code("<Code>a b</Code>"), None, "not a code");
    }
}
