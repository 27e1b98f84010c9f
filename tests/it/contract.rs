//! Contract test: every client call driven through Prism, the OpenAPI mock
//! server, loaded with the vendor's spec (`tests/contract/openapi.yaml`).
//! Prism checks each request against the spec (path, query, headers such as
//! the `x-request-id` pattern, bodies) and answers 422 when one does not
//! pass; any such answer or log line fails the test.
//!
//! Prism is installed by `scripts/install-prism` (run by `scripts/test` and
//! `.ci/run`). Without it this test fails with that instruction: it never skips.

use crate::util::*;
use contabo_rotator::contabo::models::{
    CreateUserRequest, CredentialFilter, UpdateUserRequest, UserFilter,
};
use std::io::Read;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

struct Prism {
    child: Child,
    log: PathBuf,
    port: u16,
}

impl Drop for Prism {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_prism(dir: &tempfile::TempDir) -> Prism {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/contract");
    let bin = root.join("node_modules/.bin/prism");
    assert!(
        bin.exists(),
        "Prism is not installed at {}: run scripts/install-prism (scripts/test does it)",
        bin.display()
    );
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let log = dir.path().join("prism.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(&bin)
        .args(["mock", "-h", "127.0.0.1", "-p", &port.to_string()])
        .arg(root.join("openapi.yaml"))
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .expect("start prism");
    let prism = Prism { child, log, port };
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "Prism did not start within 120 s; its log:\n{}",
            prism.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    prism
}

impl Prism {
    fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Prism: scripts/test installs it"]
async fn every_client_call_passes_prism_validation() {
    let dir = tempfile::tempdir().unwrap();
    let prism = start_prism(&dir);
    // The token endpoint is Keycloak's, not part of the API spec.
    let keycloak = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(token_body("contract", 300)))
        .mount(&keycloak)
        .await;
    let config = fast_config(
        &format!("http://127.0.0.1:{}", prism.port),
        &format!("{}/token", keycloak.uri()),
    );
    let client = client(config);
    let user = USER_ID;
    let storage = "9a4c7e20-c326-4a8c-900c-687ad83ba170";

    let mut calls: Vec<(&str, Result<String, contabo_rotator::contabo::ApiError>)> = Vec::new();
    calls.push((
        "retrieveUserList",
        client
            .list_users(&UserFilter {
                email: Some("example.com".into()),
                enabled: Some(true),
                owner: Some(false),
            })
            .await
            .map(|u| format!("{} users", u.len())),
    ));
    calls.push(("retrieveUser", client.get_user(user).await.map(|u| u.email)));
    calls.push((
        "createUser",
        client
            .create_user(&CreateUserRequest {
                first_name: "Ada".into(),
                last_name: "Lovelace".into(),
                email: "ada@example.com".into(),
                enabled: true,
                totp: false,
                locale: "en".into(),
                roles: Some(vec![1, 2]),
                send_invoice_email: Some(false),
            })
            .await
            .map(|c| c.user_id),
    ));
    calls.push((
        "updateUser",
        client
            .update_user(
                user,
                &UpdateUserRequest {
                    enabled: Some(false),
                    locale: Some("de".into()),
                    ..Default::default()
                },
            )
            .await
            .map(|()| "updated".into()),
    ));
    calls.push((
        "deleteUser",
        client.delete_user(user).await.map(|()| "deleted".into()),
    ));
    calls.push((
        "retrieveUserClient",
        client.get_client().await.map(|c| c.client_id),
    ));
    calls.push((
        "generateClientSecret",
        client
            .generate_client_secret(Some(uuid::Uuid::new_v4()), None)
            .await
            .map(|s| s.tenant_id),
    ));
    calls.push((
        "listObjectStorageCredentials",
        client
            .list_credentials(
                user,
                &CredentialFilter {
                    object_storage_id: Some(storage.into()),
                    region_name: Some("European Union".into()),
                    display_name: Some("Object Storage Test".into()),
                },
            )
            .await
            .map(|c| format!("{} credentials", c.len())),
    ));
    calls.push((
        "getObjectStorageCredentials",
        client
            .get_credential(user, storage, 12345)
            .await
            .map(|c| c.access_key),
    ));
    calls.push((
        "regenerateObjectStorageCredentials",
        client
            .regenerate_credential(user, storage, 12345, Some(uuid::Uuid::new_v4()))
            .await
            .map(|c| c.access_key),
    ));
    calls.push((
        "resetPassword",
        client
            .reset_password(user, Some("https://example.com/reset"))
            .await
            .map(|()| "sent".into()),
    ));
    calls.push((
        "resendEmailVerification",
        client
            .resend_email_verification(user, None)
            .await
            .map(|()| "sent".into()),
    ));
    calls.push((
        "retrieveObjectStorageList",
        client
            .list_object_storages()
            .await
            .map(|s| format!("{} storages, first {}", s.len(), s[0].s3_endpoint())),
    ));

    let log = prism.log_text();
    let failures: Vec<String> = calls
        .iter()
        .filter_map(|(op, r)| r.as_ref().err().map(|e| format!("{op}: {e}")))
        .collect();
    assert!(
        failures.is_empty(),
        "calls failed: {failures:#?}\nPrism log:\n{log}"
    );
    assert_eq!(calls.len(), 13, "all thirteen endpoints");
    assert!(
        !log.contains("did not pass the validation rules"),
        "Prism rejected a request:\n{log}"
    );
    // Every endpoint really reached Prism.
    let received = log.matches("Request received").count();
    assert!(received >= 13, "Prism saw {received} requests:\n{log}");
}
