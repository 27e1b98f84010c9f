//! The Contabo client against wiremock: one server per test, one test per behaviour.

use crate::util::*;
use contabo_rotator::contabo::models::{CredentialFilter, UserFilter};
use contabo_rotator::contabo::ApiError;
use serde_json::json;
use std::collections::HashSet;
use std::time::Duration;
use wiremock::matchers::{
    body_string_contains, header, header_exists, method, path, path_regex, query_param,
};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn user(n: usize) -> serde_json::Value {
    json!({"tenantId":"DE","customerId":"54321","userId":format!("u-{n}"),
           "firstName":"F","lastName":"L","email":format!("user{n}@example.com"),
           "emailVerified":true,"enabled":true,"totp":false,"locale":"en",
           "roles":[],"owner":false,"sendInvoiceEmail":false})
}

fn page(
    items: Vec<serde_json::Value>,
    page: u64,
    total_pages: u64,
    total: u64,
) -> serde_json::Value {
    json!({"_pagination":{"size":2,"totalElements":total,"totalPages":total_pages,"page":page},
           "data":items,"_links":{"self":"/v1/users","first":"/v1/users?page=1","last":"/v1/users"}})
}

/// A server with a token endpoint that always grants.
async fn server_with_token() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=password"))
        .respond_with(ResponseTemplate::new(200).set_body_json(token_body("first", 300)))
        .mount(&server)
        .await;
    server
}

fn client_for(server: &MockServer) -> contabo_rotator::contabo::ContaboClient {
    client(fast_config(
        &server.uri(),
        &format!("{}/token", server.uri()),
    ))
}

#[tokio::test]
async fn ok_list_walks_every_page_with_valid_unique_request_ids() {
    let server = server_with_token().await;
    for (p, items) in [(1, vec![user(1), user(2)]), (2, vec![user(3)])] {
        Mock::given(method("GET"))
            .and(path("/v1/users"))
            .and(query_param("page", p.to_string()))
            .and(header_exists("x-request-id"))
            .and(header_exists("x-trace-id"))
            .and(header(
                "authorization",
                format!("Bearer {}", jwt(USER_ID, "first")).as_str(),
            ))
            .respond_with(ResponseTemplate::new(200).set_body_json(page(items, p, 2, 3)))
            .expect(1)
            .mount(&server)
            .await;
    }
    let users = client_for(&server)
        .list_users(&UserFilter::default())
        .await
        .unwrap();
    let emails: Vec<_> = users.iter().map(|u| u.email.as_str()).collect();
    assert_eq!(
        emails,
        [
            "user1@example.com",
            "user2@example.com",
            "user3@example.com"
        ]
    );

    let requests = server.received_requests().await.unwrap();
    let api: Vec<_> = requests
        .iter()
        .filter(|r| r.url.path() != "/token")
        .collect();
    let ids: HashSet<_> = api
        .iter()
        .map(|r| {
            r.headers
                .get("x-request-id")
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ids.len(), api.len(), "request ids must be unique");
    assert!(ids.iter().all(|id| is_spec_request_id(id)), "{ids:?}");
    let traces: HashSet<_> = api
        .iter()
        .map(|r| r.headers.get("x-trace-id").unwrap().clone())
        .collect();
    assert_eq!(traces.len(), 1, "one trace id per run");
    assert!(
        api.iter().all(|r| !r.url.as_str().contains("first")),
        "no token in a URL"
    );
}

#[tokio::test]
async fn unauthorized_once_logs_in_again_and_succeeds() {
    let server = server_with_token().await;
    Mock::given(method("GET"))
        .and(path("/v1/users/client"))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(json!({"statusCode":401,"message":"Unauthorized"})),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/users/client"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"data":[{"clientId":"INT-12345678","secret":"s"}]})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let client = client_for(&server).get_client().await.unwrap();
    assert_eq!(client.client_id, "INT-12345678");
    let logins = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/token")
        .count();
    assert_eq!(logins, 2, "one login, then one re-login after the 401");
}

#[tokio::test]
async fn unauthorized_twice_is_a_typed_error() {
    let server = server_with_token().await;
    Mock::given(method("GET"))
        .and(path("/v1/users/client"))
        .respond_with(ResponseTemplate::new(401))
        .expect(2)
        .mount(&server)
        .await;
    let err = client_for(&server).get_client().await.unwrap_err();
    assert!(
        matches!(
            err,
            ApiError::Unauthorized {
                op: "retrieveUserClient"
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn rate_limited_with_retry_after_waits_and_retries() {
    let server = server_with_token().await;
    Mock::given(method("GET"))
        .and(path("/v1/object-storages"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "1"))
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/object-storages"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data":[{"objectStorageId":"os","s3Url":"eu2.contabostorage.com"}],"_pagination":{"totalPages":1}})))
        .expect(1)
        .mount(&server)
        .await;
    let storages = client_for(&server).list_object_storages().await.unwrap();
    assert_eq!(storages[0].s3_endpoint(), "https://eu2.contabostorage.com");
}

#[tokio::test]
async fn rate_limited_with_retry_after_beyond_the_cap_fails_without_waiting() {
    let server = server_with_token().await;
    Mock::given(method("GET"))
        .and(path("/v1/object-storages"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "3600"))
        .expect(1)
        .mount(&server)
        .await;
    let err = client_for(&server)
        .list_object_storages()
        .await
        .unwrap_err();
    match err {
        ApiError::RetryAfterTooLong {
            op: "retrieveObjectStorageList",
            retry_after,
            cap,
        } => {
            assert_eq!(retry_after, Duration::from_secs(3600));
            assert_eq!(cap, Duration::from_secs(60));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn rate_limited_without_retry_after_backs_off_and_retries() {
    let server = server_with_token().await;
    Mock::given(method("GET"))
        .and(path("/v1/users/client"))
        .respond_with(ResponseTemplate::new(429))
        .up_to_n_times(2)
        .with_priority(1)
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/users/client"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"data":[{"clientId":"INT-1","secret":"s"}]})),
        )
        .expect(1)
        .mount(&server)
        .await;
    assert_eq!(
        client_for(&server).get_client().await.unwrap().client_id,
        "INT-1"
    );
}

#[tokio::test]
async fn server_error_is_retried_up_to_max_retries() {
    let server = server_with_token().await;
    Mock::given(method("GET"))
        .and(path("/v1/users/client"))
        .respond_with(ResponseTemplate::new(500).set_body_json(
            json!({"statusCode":500,"message":"Internal Server Error, retry or contact support"}),
        ))
        .expect(4) // max_retries = 3
        .mount(&server)
        .await;
    let err = client_for(&server).get_client().await.unwrap_err();
    assert!(err.outcome_unknown());
    let text = err.to_string();
    assert!(
        text.contains("retrieveUserClient: gave up after 4 attempts"),
        "{text}"
    );
    assert!(
        text.contains("HTTP 500") && text.contains("retry or contact support"),
        "{text}"
    );
}

#[tokio::test]
async fn timeout_is_retried_then_reported() {
    let server = server_with_token().await;
    Mock::given(method("GET"))
        .and(path("/v1/users/client"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
        .expect(2)
        .mount(&server)
        .await;
    let mut config = fast_config(&server.uri(), &format!("{}/token", server.uri()));
    config.timeout = Duration::from_millis(200);
    config.retry.max_retries = 1;
    let err = client(config).get_client().await.unwrap_err();
    match err {
        ApiError::GaveUp {
            attempts: 2, last, ..
        } => assert!(matches!(*last, ApiError::Timeout { .. }), "{last:?}"),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn malformed_body_is_a_typed_error_and_not_retried() {
    let server = server_with_token().await;
    Mock::given(method("PATCH"))
        .and(path("/v1/users/u-1/object-storages/os-1/credentials/42"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string(r#"{"data":[{"accessKey":"AK","secretKey":"#),
        )
        .expect(1)
        .mount(&server)
        .await;
    let err = client_for(&server)
        .regenerate_credential("u-1", "os-1", 42, None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ApiError::Malformed { op: "regenerateObjectStorageCredentials", detail } if detail.contains("truncated")),
        "{err:?}"
    );
}

#[tokio::test]
async fn truncated_page_sequence_is_reported() {
    let server = server_with_token().await;
    Mock::given(method("GET"))
        .and(path(format!(
            "/v1/users/{USER_ID}/object-storages/credentials"
        )))
        .and(query_param("page", "1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "_pagination":{"size":1,"totalElements":3,"totalPages":3,"page":1},
            "data":[{"credentialId":1,"accessKey":"A","secretKey":"S"}]})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!(
            "/v1/users/{USER_ID}/object-storages/credentials"
        )))
        .and(query_param("page", "2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "_pagination":{"size":1,"totalElements":3,"totalPages":3,"page":2},"data":[]})))
        .expect(1)
        .mount(&server)
        .await;
    let err = client_for(&server)
        .list_credentials(USER_ID, &CredentialFilter::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ApiError::Truncated {
                page: 2,
                total_pages: 3,
                received: 1,
                expected: 3,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn list_without_pagination_stops_at_the_first_short_page() {
    let server = server_with_token().await;
    Mock::given(method("GET"))
        .and(path("/v1/users"))
        .and(query_param("page", "1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data":[user(1)]})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/users"))
        .and(query_param("page", "2"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"data":[], "_pagination": null})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let mut config = fast_config(&server.uri(), &format!("{}/token", server.uri()));
    config.page_size = 1;
    let users = client(config)
        .list_users(&UserFilter::default())
        .await
        .unwrap();
    assert_eq!(users.len(), 1);
}

#[tokio::test]
async fn missing_data_array_is_malformed() {
    let server = server_with_token().await;
    Mock::given(method("GET"))
        .and(path("/v1/users"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"_links":{"self":"/v1/users"}})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let err = client_for(&server)
        .list_users(&UserFilter::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ApiError::Malformed { .. }), "{err:?}");
}

#[tokio::test]
async fn not_found_is_final_and_names_the_operation() {
    let server = server_with_token().await;
    Mock::given(method("GET"))
        .and(path("/v1/users/nobody"))
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_json(json!({"statusCode":404,"message":"Not Found"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let err = client_for(&server).get_user("nobody").await.unwrap_err();
    assert_eq!(err.to_string(), "retrieveUser: HTTP 404: Not Found");
}

#[tokio::test]
async fn refused_login_is_final_and_makes_no_api_call() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(401).set_body_json(
            json!({"error":"invalid_grant","error_description":"Invalid user credentials"}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let err = client_for(&server)
        .list_users(&UserFilter::default())
        .await
        .unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(
        text.contains("invalid_grant") && text.contains("Invalid user credentials"),
        "{text}"
    );
    assert!(
        !text.contains(CLIENT_SECRET) && !text.contains(PASSWORD),
        "{text}"
    );
}

#[tokio::test]
async fn expired_access_token_is_renewed_with_the_refresh_grant() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=password"))
        .respond_with(ResponseTemplate::new(200).set_body_json(token_body("first", 1)))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .and(body_string_contains("refresh_token=refresh-first"))
        .respond_with(ResponseTemplate::new(200).set_body_json(token_body("second", 300)))
        .expect(1)
        .mount(&server)
        .await;
    let client = client_for(&server);
    let first = client.auth().access_token().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = client.auth().access_token().await.unwrap();
    assert!(second.generation > first.generation);
    assert_eq!(second.subject, USER_ID);
}

#[tokio::test]
async fn failed_refresh_falls_back_to_the_password_grant() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=password"))
        .respond_with(ResponseTemplate::new(200).set_body_json(token_body("any", 1)))
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .respond_with(ResponseTemplate::new(400).set_body_json(
            json!({"error":"invalid_grant","error_description":"Token is not active"}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let client = client_for(&server);
    client.auth().access_token().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    client.auth().access_token().await.unwrap();
}

#[tokio::test]
async fn connection_refused_is_a_transport_error_after_retries() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let server = server_with_token().await;
    let config = fast_config(
        &format!("http://{addr}"),
        &format!("{}/token", server.uri()),
    );
    let err = client(config).get_client().await.unwrap_err();
    match err {
        ApiError::GaveUp {
            attempts: 4, last, ..
        } => assert!(matches!(*last, ApiError::Transport { .. }), "{last:?}"),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn caller_request_id_is_sent_on_a_mutating_call() {
    let server = server_with_token().await;
    let rotation_id = uuid::Uuid::new_v4();
    Mock::given(method("PUT"))
        .and(path("/v1/users/client/secret"))
        .and(header("x-request-id", rotation_id.to_string().as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"data":[{"tenantId":"DE","customerId":"1","secret":"new-secret-value"}]}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let generated = client_for(&server)
        .generate_client_secret(Some(rotation_id), None)
        .await
        .unwrap();
    assert!(!format!("{generated:?}").contains("new-secret-value"));
}

/// A server that counts what reaches it: where a redirect points.
async fn redirect_target() -> MockServer {
    let target = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(200).set_body_json(token_body("stolen", 300)))
        .mount(&target)
        .await;
    target
}

#[tokio::test]
async fn a_token_endpoint_redirect_is_refused_and_the_form_is_never_resent() {
    for status in [307u16, 308, 302] {
        let target = redirect_target().await;
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/token"))
            .respond_with(
                ResponseTemplate::new(status)
                    .insert_header("location", format!("{}/steal", target.uri()).as_str()),
            )
            .mount(&server)
            .await;
        let err = client_for(&server).api_user_id().await.unwrap_err();
        assert!(
            matches!(err, ApiError::Redirect { op: "token", status: s } if s == status),
            "{status}: {err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains(&format!("HTTP {status} redirect refused")),
            "{text}"
        );
        assert!(
            !text.contains(&target.uri()),
            "the Location is not quoted: {text}"
        );
        assert_eq!(
            target.received_requests().await.unwrap().len(),
            0,
            "{status}: the login form went to the redirect target"
        );
        // Not retried: a redirect is a configuration problem.
        assert_eq!(
            server.received_requests().await.unwrap().len(),
            1,
            "{status}"
        );
    }
}

#[tokio::test]
async fn an_api_redirect_is_an_error_naming_the_operation_and_status() {
    let target = redirect_target().await;
    let server = server_with_token().await;
    Mock::given(method("GET"))
        .and(path("/v1/users"))
        .respond_with(
            ResponseTemplate::new(301)
                .insert_header("location", format!("{}/v1/users", target.uri()).as_str()),
        )
        .expect(1)
        .mount(&server)
        .await;
    let err = client_for(&server)
        .list_users(&UserFilter::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ApiError::Redirect {
                op: "retrieveUserList",
                status: 301
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "retrieveUserList: HTTP 301 redirect refused: redirects are not followed; \
         set the endpoint's final https URL in the configuration"
    );
    assert_eq!(
        target.received_requests().await.unwrap().len(),
        0,
        "the bearer token went to the redirect target"
    );
}

/// A regenerate that waits for its request slot while the run is told to
/// stop is never sent (`Stopped`); the one that had the slot is finished.
/// A PATCH regenerates a key at once, so one sent after a shutdown signal
/// would leave a credential in hand that the run no longer means to finish.
#[tokio::test]
async fn a_regenerate_waiting_for_its_slot_is_not_sent_once_the_run_is_stopping() {
    let server = server_with_token().await;
    // Slow enough that the stop lands while the first call holds the slot.
    Mock::given(method("PATCH"))
        .and(path_regex(
            "^/v1/users/u-1/object-storages/os-1/credentials/[12]$",
        ))
        .respond_with(
            ResponseTemplate::new(200)
                .set_delay(Duration::from_secs(1))
                .set_body_json(
                    json!({"data":[{"credentialId":1,"accessKey":"A","secretKey":"S"}]}),
                ),
        )
        .expect(1)
        .mount(&server)
        .await;
    let mut config = fast_config(&server.uri(), &format!("{}/token", server.uri()));
    config.concurrency = 1;
    let client = client(config);
    let stop = tokio_util::sync::CancellationToken::new();
    let regenerate = |id| client.regenerate_credential_unless("u-1", "os-1", id, None, Some(&stop));
    let stop_once_sent = async {
        while !server
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .any(|r| r.method.as_str() == "PATCH")
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.cancel();
    };
    let (first, second, ()) = tokio::join!(regenerate(1), regenerate(2), stop_once_sent);
    // Whichever got the slot first was answered; the other was not sent.
    let (sent, held) = if first.is_ok() {
        (first, second)
    } else {
        (second, first)
    };
    assert_eq!(sent.unwrap().access_key, "A");
    let held = held.unwrap_err();
    assert!(
        matches!(
            held,
            ApiError::Stopped {
                op: "regenerateObjectStorageCredentials"
            }
        ),
        "{held:?}"
    );
    assert!(held.to_string().contains("not sent"), "{held}");
    assert!(!held.outcome_unknown());
    let patches = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method.as_str() == "PATCH")
        .count();
    assert_eq!(patches, 1);
}
