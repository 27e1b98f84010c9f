//! No proxy for loopback (docs/design.md §1.8): with every proxy variable
//! pointing at a listener, the real binary reaches the simulator's API,
//! token endpoint and S3 endpoint, and a loopback webhook with
//! `include_secrets`, directly. The listener, standing in for the proxy,
//! must never see a connection: through it would go the client secret, the
//! API password and the S3 secret keys.

use crate::util::{args, options, output_text, run_bin_env, write_config};
use crate::util::{Receiver, Reply};
use base64::Engine;
use contabo_simulator::Simulator;
use secrecy::ExposeSecret;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A stand-in proxy on 127.0.0.1: counts the connections it accepts and
/// hangs up on each, so a client sent there fails at once.
struct StandInProxy {
    url: String,
    accepted: Arc<AtomicUsize>,
    server: tokio::task::JoinHandle<()>,
}

impl StandInProxy {
    async fn start() -> StandInProxy {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        StandInProxy {
            url,
            accepted,
            server,
        }
    }

    /// Every proxy variable, both cases, pointing here; `NO_PROXY` empty,
    /// so that nothing in the test's own environment exempts loopback.
    fn env(&self) -> Vec<(String, String)> {
        let mut env = Vec::new();
        for name in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"] {
            env.push((name.to_owned(), self.url.clone()));
            env.push((name.to_ascii_lowercase(), self.url.clone()));
        }
        env.push(("NO_PROXY".to_owned(), String::new()));
        env.push(("no_proxy".to_owned(), String::new()));
        env
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for StandInProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_is_reached_directly_whatever_the_proxy_variables_say() {
    let proxy = StandInProxy::start().await;
    let opts = options(2);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let hooks = Receiver::start(Reply::status(200)).await;
    let key = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode("proxy-test-signing-key-0123456789")
    );
    // The client secret rotated too (its PUT, and a login with the new
    // one), the new keys proven at the storage (`verify = "s3"`, the
    // default), and a webhook that carries the secrets.
    let setup = write_config(
        &sim,
        &opts,
        &format!(
            r#"
[client_secret]
rotate = true

[[sinks]]
type = "file"
path = "{{root}}/contabo.json"
format = "json"

[[sinks]]
type = "webhook"
url = "{url}"
signing_secret = "{key}"
include_secrets = true
timeout = "2s"
"#,
            url = hooks.url(),
        ),
    );

    let check = run_bin_env(args(&setup.config, &["check", "--online"]), proxy.env()).await;
    let out = run_bin_env(args(&setup.config, &["-v", "--run-now"]), proxy.env()).await;
    assert_eq!(
        proxy.accepted(),
        0,
        "a client went through the proxy to a loopback host:\n{}\n{}",
        output_text(&check),
        output_text(&out)
    );
    assert_eq!(check.status.code(), Some(0), "{}", output_text(&check));
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));

    // The run did its work: every current secret key is in the file sink,
    // and the webhook received events with the secrets.
    let snapshot = sim.snapshot();
    let json = std::fs::read_to_string(setup.dir.path().join("contabo.json")).unwrap();
    let posts = hooks.posts();
    assert!(!posts.is_empty(), "the webhook received events");
    let mut keys = 0;
    for credential in snapshot.users.iter().flat_map(|u| &u.credentials) {
        let secret = credential.secret_key.expose_secret();
        assert!(json.contains(secret), "the sink holds every current key");
        assert!(
            posts.iter().any(|p| p.body.contains(secret)),
            "the webhook got every current key"
        );
        keys += 1;
    }
    assert_eq!(keys, 6);
    assert!(
        sim.s3_requests().iter().any(|r| r.signature.is_some()),
        "the new keys were proven at the storage"
    );
    assert_eq!(proxy.accepted(), 0);
}
