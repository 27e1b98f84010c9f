//! Malformed API answers through the real binary: each gives a typed error
//! naming the operation, no panic, and a run that reports it (exit 1).

use crate::util::{args, write_secret};
use crate::util::{token_body, USER_ID};
use serde_json::json;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn user() -> serde_json::Value {
    json!({"userId": USER_ID, "email": "app@example.com", "locale": "en", "roles": []})
}

fn variants() -> Vec<(&'static str, ResponseTemplate, &'static str)> {
    vec![
        (
            "truncated JSON",
            ResponseTemplate::new(200).set_body_string(r#"{"data":[{"userId":"#),
            "truncated JSON",
        ),
        (
            "wrong types",
            ResponseTemplate::new(200).set_body_string(r#"{"data":"yes"}"#),
            "wrong shape",
        ),
        (
            "empty body",
            ResponseTemplate::new(200).set_body_string(""),
            "empty body",
        ),
        (
            "oversized body",
            ResponseTemplate::new(200).set_body_string(format!(
                r#"{{"data":[],"pad":"{}"}}"#,
                "x".repeat(17 * 1024 * 1024)
            )),
            "larger than",
        ),
        (
            "HTML error page with 200",
            ResponseTemplate::new(200)
                .insert_header("content-type", "text/html")
                .set_body_string("<html><body>502 Bad Gateway</body></html>"),
            "invalid JSON",
        ),
        (
            "missing data array",
            ResponseTemplate::new(200).set_body_json(json!({"_links": {}})),
            "no `data` array",
        ),
        (
            "HTML error page with 404",
            ResponseTemplate::new(404).set_body_string("<html>Not Found</html>"),
            "HTTP 404",
        ),
    ]
}

async fn server(endpoint: &str, answer: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(token_body("m", 300)))
        .mount(&server)
        .await;
    // The endpoint under test answers badly; the others answer well.
    Mock::given(method("GET"))
        .and(path_regex(endpoint))
        .respond_with(answer)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/users"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"data": [user()], "_pagination": {"totalPages": 1}})),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/object-storages"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"data": [], "_pagination": {"totalPages": 1}})),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path_regex("^/v1/users/[^/]+/object-storages/credentials$"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"data": [], "_pagination": {"totalPages": 1}})),
        )
        .mount(&server)
        .await;
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_answers_are_typed_errors_reported_by_the_run() {
    let endpoints = [
        ("^/v1/users$", "retrieveUserList"),
        ("^/v1/object-storages$", "retrieveObjectStorageList"),
        (
            "^/v1/users/[^/]+/object-storages/credentials$",
            "listObjectStorageCredentials",
        ),
    ];
    let mut checked = 0;
    for (endpoint, op) in endpoints {
        for (what, answer, expected) in variants() {
            let server = server(endpoint, answer).await;
            let (code, text) = run_against(&server).await;
            assert_eq!(code, Some(1), "{op} / {what}: {text}");
            assert!(!text.contains("panicked"), "{op} / {what}: {text}");
            assert!(
                text.contains(op),
                "{op} / {what}: the report names the operation: {text}"
            );
            assert!(
                text.contains(expected),
                "{op} / {what}: expected {expected:?} in {text}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 21);
}

/// Runs `--run-now` against `server`, returning the exit code and output.
async fn run_against(server: &MockServer) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    write_secret(&dir.path().join("secret"), "client-secret-x");
    let config = dir.path().join("config.toml");
    write_secret(
        &config,
        &format!(
            "[api]\nbase_url = \"{uri}\"\ntoken_url = \"{uri}/token\"\nclient_id = \"INT-1\"\n\
             client_secret = {{ file = \"{root}/secret\" }}\nusername = \"u@example.com\"\n\
             password = {{ file = \"{root}/secret\" }}\nmax_retries = 0\n[state]\ndir = \"{root}/state\"\n\
             [object_storage]\non_first_sight = \"rotate\"\n",
            uri = server.uri(),
            root = dir.path().display()
        ),
    );
    let out = crate::util::run_bin(args(&config, &["--run-now"])).await;
    (out.status.code(), crate::util::output_text(&out))
}

/// A credential without an id (missing or null) makes its user's listing
/// malformed: that user fails, and nothing is regenerated (an id read as 0
/// would have sent `PATCH …/credentials/0`). A user without a `userId` is
/// that user's failure, named by its e-mail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_null_ids_are_a_users_failure_never_0() {
    let credential = |id: serde_json::Value| {
        json!({"accessKey": "AK", "secretKey": "sk", "objectStorageId": "os-1",
               "region": "European Union", "credentialId": id})
    };
    for id in [json!(null), json!("")] {
        let body = json!({"data": [credential(json!(7)), credential(id.clone())],
                          "_pagination": {"totalPages": 1}});
        let server = server(
            "^/v1/users/[^/]+/object-storages/credentials$",
            ResponseTemplate::new(200).set_body_json(body),
        )
        .await;
        let (code, text) = run_against(&server).await;
        assert_eq!(code, Some(1), "{id}: {text}");
        assert!(text.contains("app@example.com"), "{id}: {text}");
        let requests = server.received_requests().await.unwrap();
        assert!(
            requests
                .iter()
                .all(|r| r.method.as_str() == "GET" || r.url.path() == "/token"),
            "{id}: only reads: {:?}",
            requests
                .iter()
                .map(|r| r.url.path().to_owned())
                .collect::<Vec<_>>()
        );
    }

    let users = json!({"data": [user(), {"email": "ghost@example.com", "userId": null}],
                       "_pagination": {"totalPages": 1}});
    let server = server(
        "^/v1/users$",
        ResponseTemplate::new(200).set_body_json(users),
    )
    .await;
    let (code, text) = run_against(&server).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("ghost@example.com") && text.contains("userId"),
        "{text}"
    );
}
