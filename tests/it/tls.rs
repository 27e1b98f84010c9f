//! Private CAs: a TLS server on loopback whose certificate is signed by a
//! CA made in the test. The webhook sink and the API client reach it with
//! `ca_file` and refuse it without (the system's trust store does not hold
//! that CA, until `SSL_CERT_FILE` adds it); a `ca_file` that is missing,
//! holds no certificate or one that cannot be a trust root is a
//! configuration error naming its key.

use crate::util::{args, options, run_bin, write_config};
use crate::util::{client, fast_config, token_body};
use contabo_simulator::Simulator;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio_rustls::rustls;

/// A CA and a certificate for 127.0.0.1 and localhost signed by it.
struct Pki {
    ca_pem: String,
    server: rustls::ServerConfig,
}

fn pki() -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "contabo-rotator test CA");
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "receiver.test");
    let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
    let chain = vec![cert.der().clone()];
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        server,
    }
}

/// An HTTPS server on 127.0.0.1: answers `POST /token` with a token,
/// `GET /v1/users` with an empty page and anything else with 200; records
/// `METHOD path` of each request.
struct TlsServer {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsServer {
    /// Webhook POSTs received so far.
    fn posts(&self) -> usize {
        let seen = self.seen.lock().unwrap();
        seen.iter().filter(|l| *l == "POST /hooks/rotator").count()
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn tls_server(config: rustls::ServerConfig) -> TlsServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, log) = (acceptor.clone(), log.clone());
            tokio::spawn(async move {
                // A client that does not trust the CA ends the handshake.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let log = log.clone();
                    async move {
                        let line = format!("{} {}", req.method(), req.uri().path());
                        let _ =
                            axum::body::to_bytes(axum::body::Body::new(req.into_body()), 1 << 20)
                                .await;
                        let body = match line.as_str() {
                            "POST /token" => token_body("tls", 300).to_string(),
                            "GET /v1/users" => serde_json::json!({
                                "data": [],
                                "_pagination": {"size": 100, "totalElements": 0, "totalPages": 0, "page": 1}
                            })
                            .to_string(),
                            _ => String::new(),
                        };
                        log.lock().unwrap().push(line);
                        Ok::<_, std::convert::Infallible>(
                            Response::builder()
                                .header("content-type", "application/json")
                                .body(axum::body::Body::from(body))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    TlsServer { port, seen, task }
}

use crate::util::output_text as shown;

fn webhook(port: u16, ca_file: Option<&Path>) -> String {
    format!(
        "[[sinks]]\ntype = \"webhook\"\nurl = \"https://127.0.0.1:{port}/hooks/rotator\"\n\
         signing_secret = \"whsec_dGVzdC1zaWduaW5nLWtleS0wMTIzNDU2Nzg5YWJjZGVm\"\ntimeout = \"2s\"\n{}",
        ca_file
            .map(|p| format!("ca_file = \"{}\"\n", p.display()))
            .unwrap_or_default()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_behind_a_private_ca_is_reached_with_ca_file_only() {
    let pki = pki();
    let server = tls_server(pki.server).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let opts = options(1);

    // Without ca_file: the system's roots do not hold the test CA.
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let setup = write_config(&sim, &opts, &webhook(server.port, None));
    crate::util::edit_config(&setup, &[("max_retries = 10", "max_retries = 0")]);
    let out = run_bin(args(&setup.config, &["--run-now"])).await;
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    assert!(
        shown(&out).contains("webhook https://127.0.0.1"),
        "{}",
        shown(&out)
    );
    assert!(
        server.seen.lock().unwrap().is_empty(),
        "no request got through an untrusted handshake"
    );
    // `check --online` says the same.
    let out = run_bin(args(&setup.config, &["check", "--online"])).await;
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));

    // With ca_file: every rotation event is delivered.
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let setup = write_config(&sim, &opts, &webhook(server.port, Some(&ca)));
    let out = run_bin(args(&setup.config, &["--run-now"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
    let posts = server.posts();
    // Three rotations and their three `verified` follow-ups.
    assert_eq!(posts, 6, "{:?}", server.seen.lock().unwrap());

    // The system's trust store is read (rustls-native-certs): a CA added
    // there (here through SSL_CERT_FILE) is trusted without ca_file.
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let setup = write_config(&sim, &opts, &webhook(server.port, None));
    let out = crate::util::run_bin_env(
        args(&setup.config, &["--run-now"]),
        vec![("SSL_CERT_FILE".into(), ca.display().to_string())],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
    let posts_now = server.posts();
    assert_eq!(posts_now, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_client_trusts_api_ca_file() {
    let pki = pki();
    let server = tls_server(pki.server).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let base = format!("https://127.0.0.1:{}", server.port);
    let token = format!("{base}/token");

    let untrusted = client(fast_config(&base, &token));
    let err = untrusted.list_users(&Default::default()).await.unwrap_err();
    assert!(server.seen.lock().unwrap().is_empty(), "{err}");

    let mut config = fast_config(&base, &token);
    config.ca = Some(contabo_rotator::tls::ExtraRoots::load(&ca).unwrap());
    let users = client(config)
        .list_users(&Default::default())
        .await
        .unwrap();
    assert!(users.is_empty());
    assert_eq!(
        *server.seen.lock().unwrap(),
        ["POST /token", "GET /v1/users"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_file_without_a_certificate_is_refused_naming_its_key() {
    let opts = options(1);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("not-a-ca.pem");
    std::fs::write(&not_pem, "just text\n").unwrap();
    let missing = dir.path().join("missing.pem");
    // A PEM block whose content is no X.509 certificate.
    let not_x509 = dir.path().join("not-x509.pem");
    std::fs::write(
        &not_x509,
        "-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQ==\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    for (extra, key, problem) in [
        (
            webhook(1, Some(&not_pem)),
            "sinks[0].ca_file",
            "holds no PEM certificate",
        ),
        (
            webhook(1, Some(&not_x509)),
            "sinks[0].ca_file",
            "certificate 1 of 1 cannot be a trust root",
        ),
        (
            webhook(1, Some(&missing)),
            "sinks[0].ca_file",
            "cannot read",
        ),
    ] {
        let setup = write_config(&sim, &opts, &extra);
        let out = run_bin(args(&setup.config, &["check"])).await;
        assert_eq!(out.status.code(), Some(78), "{}", shown(&out));
        let text = shown(&out);
        assert!(text.contains(key) && text.contains(problem), "{text}");
    }
    let setup = write_config(&sim, &opts, "");
    crate::util::edit_config(
        &setup,
        &[(
            "timeout = \"10s\"\n",
            &format!("timeout = \"10s\"\nca_file = \"{}\"\n", missing.display()),
        )],
    );
    let out = run_bin(args(&setup.config, &["--run-now"])).await;
    assert_eq!(out.status.code(), Some(78), "{}", shown(&out));
    assert!(shown(&out).contains("api.ca_file"), "{}", shown(&out));
    assert!(sim.requests().is_empty(), "nothing sent");
}
