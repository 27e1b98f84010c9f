//! End-to-end tests of the simulator: a real server on 127.0.0.1 driven
//! with reqwest, one behaviour per test.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use reqwest::{Client, Method, RequestBuilder, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::*;

const V4_ID: &str = "04e0f898-37b4-48bc-a794-1a57abe6aa31";

// A test client of a loopback server, with no proxy at all.
#[allow(clippy::disallowed_methods)]
fn http() -> Client {
    Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("reqwest client builds")
}

async fn start(opts: SimulatorOptions) -> Simulator {
    Simulator::start(opts).await.expect("simulator starts")
}

async fn token_request(sim: &Simulator, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let resp = http()
        .post(sim.token_url())
        .form(form)
        .send()
        .await
        .expect("token request is answered");
    let status = resp.status();
    (status, resp.json().await.expect("token response is JSON"))
}

/// Password grant with `secret`; returns the token response.
async fn login_with(sim: &Simulator, secret: &str) -> (StatusCode, Value) {
    let opts = SimulatorOptions::default();
    token_request(
        sim,
        &[
            ("grant_type", "password"),
            ("client_id", &opts.client_id),
            ("client_secret", secret),
            ("username", &opts.username),
            ("password", opts.password.expose_secret()),
        ],
    )
    .await
}

/// The access token of a password grant with the default credentials.
async fn login(sim: &Simulator) -> String {
    let secret = SimulatorOptions::default().client_secret;
    let (status, body) = login_with(sim, secret.expose_secret()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

/// An authenticated `/v1` request with a fresh v4 request id.
fn api(sim: &Simulator, method: Method, path: &str, token: &str) -> RequestBuilder {
    http()
        .request(method, sim.base_url().join(path).unwrap())
        .bearer_auth(token)
        .header("x-request-id", uuid::Uuid::new_v4().to_string())
}

async fn json_of(req: RequestBuilder) -> (StatusCode, Value) {
    let resp = req.send().await.expect("request is answered");
    let status = resp.status();
    let text = resp.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    };
    (status, body)
}

fn jwt_payload(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("JWT has a payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn credentials_path(user_id: &str, c: &SimCredential) -> String {
    format!(
        "/v1/users/{user_id}/object-storages/{}/credentials/{}",
        c.object_storage_id, c.credential_id
    )
}

#[tokio::test]
async fn password_and_refresh_grants_issue_tokens() {
    let sim = start(SimulatorOptions::default()).await;
    let opts = SimulatorOptions::default();
    let (status, body) = login_with(&sim, opts.client_secret.expose_secret()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 300);
    assert_eq!(body["refresh_expires_in"], 1800);
    assert_eq!(body["not-before-policy"], 0);
    assert_eq!(body["scope"], "profile email");
    assert!(body["session_state"].is_string());
    let access = body["access_token"].as_str().unwrap();
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(access.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "RS256");
    let claims = jwt_payload(access);
    assert_eq!(claims["sub"], sim.api_user_id());
    assert_eq!(claims["preferred_username"], opts.username);
    assert_eq!(claims["tenantId"], "INT");
    assert_eq!(claims["customerId"], "10000001");
    assert!(claims["exp"].as_i64().unwrap() > claims["iat"].as_i64().unwrap());

    let refresh = body["refresh_token"].as_str().unwrap();
    let (status, refreshed) = token_request(
        &sim,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", &opts.client_id),
            ("client_secret", opts.client_secret.expose_secret()),
            ("refresh_token", refresh),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    let new_access = refreshed["access_token"].as_str().unwrap();
    assert_ne!(new_access, access);
    assert_eq!(refreshed["session_state"], body["session_state"]);
    let (status, _) = json_of(api(&sim, Method::GET, "/v1/users/client", new_access)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn token_endpoint_errors_are_keycloak_shaped() {
    let sim = start(SimulatorOptions::default()).await;
    let opts = SimulatorOptions::default();
    let (status, body) = login_with(&sim, "wrong-secret").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "unauthorized_client");
    assert_eq!(body["error_description"], "Invalid client secret");

    let secret = opts.client_secret.expose_secret();
    let base = [
        ("client_id", opts.client_id.as_str()),
        ("client_secret", secret),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut form = base.to_vec();
        form.extend_from_slice(extra);
        form
    };
    type Case<'a> = (Vec<(&'a str, &'a str)>, StatusCode, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (
            with(&[
                ("grant_type", "password"),
                ("username", "api-user@example.com"),
                ("password", "nope"),
            ]),
            StatusCode::UNAUTHORIZED,
            "invalid_grant",
            "Invalid user credentials",
        ),
        (
            with(&[("grant_type", "refresh_token"), ("refresh_token", "a.b.c")]),
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Token is not active",
        ),
        (
            with(&[("grant_type", "client_credentials")]),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Unsupported grant_type",
        ),
        (
            with(&[("username", "api-user@example.com")]),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Missing form parameter: grant_type",
        ),
        (
            with(&[("grant_type", "password")]),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Missing parameter: username or password",
        ),
    ];
    for (form, want_status, error, description) in cases {
        let (status, body) = token_request(&sim, &form).await;
        assert_eq!(status, want_status, "{form:?}");
        assert_eq!(body["error"], error, "{form:?}");
        assert_eq!(body["error_description"], description, "{form:?}");
    }
}

#[tokio::test]
async fn api_requires_an_issued_live_bearer_token() {
    let sim = start(SimulatorOptions::default()).await;
    let resp = http()
        .get(sim.base_url().join("/v1/users").unwrap())
        .header("x-request-id", V4_ID)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"statusCode": 401, "message": "Unauthorized"})
    );

    let forged = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln";
    let (status, _) = json_of(api(&sim, Method::GET, "/v1/users", forged)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let token = login(&sim).await;
    let (status, _) = json_of(api(&sim, Method::GET, "/v1/users", &token)).await;
    assert_eq!(status, StatusCode::OK);
    sim.expire_access_tokens();
    let (status, _) = json_of(api(&sim, Method::GET, "/v1/users", &token)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn x_request_id_must_match_the_spec_pattern() {
    let sim = start(SimulatorOptions::default()).await;
    let token = login(&sim).await;
    let url = sim.base_url().join("/v1/users/client").unwrap();
    let send = |id: Option<&'static str>| {
        let mut req = http().get(url.clone()).bearer_auth(&token);
        if let Some(id) = id {
            req = req
                .header("x-request-id", id)
                .header("x-trace-id", "run-42");
        }
        json_of(req)
    };
    let invalid = serde_json::json!({
        "statusCode": 400,
        "message": "x-request-id header is missing or invalid",
    });
    let (status, body) = send(None).await;
    assert_eq!((status, body), (StatusCode::BAD_REQUEST, invalid.clone()));
    let v7 = "0190a5b2-7c3e-7d4f-8a1b-2c3d4e5f6a7b";
    let (status, body) = send(Some(v7)).await;
    assert_eq!((status, body), (StatusCode::BAD_REQUEST, invalid));
    let (status, _) = send(Some(V4_ID)).await;
    assert_eq!(status, StatusCode::OK);

    let last = sim.requests().pop().unwrap();
    assert_eq!(last.operation, Operation::RetrieveUserClient);
    assert_eq!(last.request_id.as_deref(), Some(V4_ID));
    assert_eq!(last.trace_id.as_deref(), Some("run-42"));
    assert_eq!(last.status, 200);
}

#[tokio::test]
async fn pagination_with_a_size_cap_walks_every_user_once() {
    let sim = start(SimulatorOptions {
        users: 23,
        page_size_cap: 5,
        ..SimulatorOptions::default()
    })
    .await;
    let token = login(&sim).await;
    let mut seen = Vec::new();
    let mut page = 1;
    loop {
        let path = format!("/v1/users?page={page}&size=50");
        let (status, body) = json_of(api(&sim, Method::GET, &path, &token)).await;
        assert_eq!(status, StatusCode::OK);
        let p = &body["_pagination"];
        assert_eq!(p["size"], 5, "size is capped");
        assert_eq!(p["totalElements"], 23);
        assert_eq!(p["totalPages"], 5);
        assert_eq!(p["page"], page);
        assert_eq!(body["_links"]["first"], "/v1/users?page=1&size=5");
        assert_eq!(body["_links"]["last"], "/v1/users?page=5&size=5");
        assert_eq!(body["_links"]["next"].is_string(), page < 5);
        assert_eq!(body["_links"]["previous"].is_string(), page > 1);
        for user in body["data"].as_array().unwrap() {
            seen.push(user["userId"].as_str().unwrap().to_owned());
        }
        if page >= p["totalPages"].as_u64().unwrap() {
            break;
        }
        page += 1;
    }
    let expected: Vec<String> = sim
        .snapshot()
        .users
        .into_iter()
        .map(|u| u.user_id)
        .collect();
    assert_eq!(seen, expected);

    let (_, beyond) = json_of(api(&sim, Method::GET, "/v1/users?page=9", &token)).await;
    assert_eq!(beyond["data"], serde_json::json!([]));
    let (_, filtered) = json_of(api(&sim, Method::GET, "/v1/users?email=user01", &token)).await;
    assert_eq!(
        filtered["_pagination"]["totalElements"], 10,
        "user010..user019"
    );
    let (status, _) = json_of(api(&sim, Method::GET, "/v1/users?size=0", &token)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn regenerate_changes_both_keys_and_get_reflects_it() {
    let sim = start(SimulatorOptions::default()).await;
    let token = login(&sim).await;
    let before = sim.snapshot();
    let user = &before.users[1];
    let cred = &user.credentials[0];
    let path = credentials_path(&user.user_id, cred);

    let (status, body) = json_of(api(&sim, Method::PATCH, &path, &token)).await;
    assert_eq!(status, StatusCode::OK);
    let data = &body["data"][0];
    assert_eq!(data["credentialId"], cred.credential_id);
    assert_eq!(data["objectStorageId"], cred.object_storage_id.as_str());
    assert_eq!(data["region"], "European Union");
    assert_ne!(data["accessKey"], cred.access_key.as_str());
    assert_ne!(data["secretKey"], cred.secret_key.expose_secret());

    let (status, got) = json_of(api(&sim, Method::GET, &path, &token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["data"][0], *data);

    let after = sim.snapshot();
    let new = &after.users[1].credentials[0];
    assert_eq!(data["secretKey"], new.secret_key.expose_secret());
    assert_eq!(
        after.users[1].credentials[1].access_key, user.credentials[1].access_key,
        "other credentials keep their keys"
    );
    let issued: Vec<String> = sim
        .issued_secrets()
        .iter()
        .map(|s| s.expose_secret().to_owned())
        .collect();
    assert!(issued.contains(&cred.secret_key.expose_secret().to_owned()));
    assert!(issued.contains(&new.secret_key.expose_secret().to_owned()));

    let list = format!("/v1/users/{}/object-storages/credentials", user.user_id);
    let (_, listed) = json_of(api(&sim, Method::GET, &list, &token)).await;
    assert_eq!(listed["data"][0], *data);
    assert_eq!(listed["_pagination"]["totalElements"], 3);
    let missing = format!(
        "/v1/users/{}/object-storages/{}/credentials/1",
        user.user_id, cred.object_storage_id
    );
    let (status, _) = json_of(api(&sim, Method::PATCH, &missing, &token)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn shared_credentials_change_together() {
    let sim = start(SimulatorOptions {
        shared_credentials: true,
        ..SimulatorOptions::default()
    })
    .await;
    let token = login(&sim).await;
    let before = sim.snapshot();
    let user = &before.users[2];
    let keys: HashSet<_> = user.credentials.iter().map(|c| &c.access_key).collect();
    assert_eq!(keys.len(), 1, "one key pair per user");

    let path = credentials_path(&user.user_id, &user.credentials[1]);
    let (status, body) = json_of(api(&sim, Method::PATCH, &path, &token)).await;
    assert_eq!(status, StatusCode::OK);
    let after = sim.snapshot();
    for c in &after.users[2].credentials {
        assert_eq!(body["data"][0]["accessKey"], c.access_key.as_str());
        assert_eq!(body["data"][0]["secretKey"], c.secret_key.expose_secret());
        assert_ne!(c.access_key, user.credentials[0].access_key);
    }
    assert_eq!(
        after.users[1].credentials[0].access_key, before.users[1].credentials[0].access_key,
        "other users are untouched"
    );
}

#[tokio::test]
async fn client_secret_rotation_refuses_the_old_secret_for_new_logins() {
    let sim = start(SimulatorOptions::default()).await;
    let opts = SimulatorOptions::default();
    let old = opts.client_secret.expose_secret();
    let (_, tokens) = login_with(&sim, old).await;
    let token = tokens["access_token"].as_str().unwrap();

    let (status, body) = json_of(api(&sim, Method::PUT, "/v1/users/client/secret", token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["_links"]["self"], "/v1/users/client/secret");
    let new = body["data"][0]["secret"].as_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&new).is_ok());
    assert_ne!(new, old);

    let (status, body) = login_with(&sim, old).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "unauthorized_client");
    let (status, body) = token_request(
        &sim,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", &opts.client_id),
            ("client_secret", old),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
        ],
    )
    .await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::UNAUTHORIZED, &"unauthorized_client".into())
    );

    let (status, client) = json_of(api(&sim, Method::GET, "/v1/users/client", token)).await;
    assert_eq!(status, StatusCode::OK, "the existing token keeps working");
    assert_eq!(client["data"][0]["secret"], new.as_str());
    assert_eq!(client["data"][0]["clientId"], opts.client_id.as_str());
    assert_eq!(login_with(&sim, &new).await.0, StatusCode::OK);
    assert_eq!(sim.snapshot().client_secret.expose_secret(), new);

    let issued: Vec<String> = sim
        .issued_secrets()
        .iter()
        .map(|s| s.expose_secret().to_owned())
        .collect();
    for s in [old, new.as_str(), token, opts.password.expose_secret()] {
        assert!(issued.iter().any(|i| i == s));
    }
}

#[tokio::test]
async fn users_can_be_created_updated_and_deleted() {
    let sim = start(SimulatorOptions::default()).await;
    let token = login(&sim).await;
    let body = serde_json::json!({
        "firstName": "Jana", "lastName": "Novak", "email": "jana@example.com",
        "enabled": true, "totp": false, "locale": "en", "roles": [2],
    });
    let (status, created) = json_of(api(&sim, Method::POST, "/v1/users", &token).json(&body)).await;
    assert_eq!(status, StatusCode::CREATED);
    let id = created["data"][0]["userId"].as_str().unwrap().to_owned();
    assert_eq!(created["data"][0]["tenantId"], "INT");
    let snap = sim.snapshot();
    let user = snap.users.iter().find(|u| u.user_id == id).unwrap();
    assert_eq!(user.credentials.len(), 3);

    let (status, _) = json_of(api(&sim, Method::POST, "/v1/users", &token).json(&body)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let incomplete = serde_json::json!({"email": "x@example.com", "enabled": true});
    let (status, _) = json_of(api(&sim, Method::POST, "/v1/users", &token).json(&incomplete)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let path = format!("/v1/users/{id}");
    let patch = serde_json::json!({"enabled": false, "locale": "de"});
    let (status, updated) = json_of(api(&sim, Method::PATCH, &path, &token).json(&patch)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(updated, serde_json::json!({"_links": {"self": path}}));
    let (_, got) = json_of(api(&sim, Method::GET, &path, &token)).await;
    assert_eq!(got["data"][0]["enabled"], false);
    assert_eq!(got["data"][0]["locale"], "de");
    assert_eq!(got["data"][0]["roles"], serde_json::json!([]));

    let (status, _) = json_of(api(&sim, Method::DELETE, &path, &token)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = json_of(api(&sim, Method::GET, &path, &token)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(sim.snapshot().users.iter().all(|u| u.user_id != id));

    let reset = format!("/v1/users/{}/reset-password", sim.api_user_id());
    let (status, _) = json_of(api(&sim, Method::POST, &reset, &token)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = json_of(api(&sim, Method::GET, "/v1/nothing", &token)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        serde_json::json!({"statusCode": 404, "message": "Not Found"})
    );
}

#[tokio::test]
async fn object_storages_list_matches_the_spec_shape() {
    let sim = start(SimulatorOptions {
        s3_endpoint: false,
        ..SimulatorOptions::default()
    })
    .await;
    let token = login(&sim).await;
    let (status, body) = json_of(api(&sim, Method::GET, "/v1/object-storages", &token)).await;
    assert_eq!(status, StatusCode::OK);
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    for key in [
        "tenantId",
        "customerId",
        "objectStorageId",
        "createdDate",
        "cancelDate",
        "autoScaling",
        "dataCenter",
        "totalPurchasedSpaceTB",
        "s3Url",
        "s3TenantId",
        "status",
        "region",
        "displayName",
    ] {
        assert!(data[0].get(key).is_some(), "missing {key}");
    }
    assert_eq!(data[0]["s3Url"], "https://eu2.contabostorage.com");
    assert_eq!(data[1]["s3Url"], "usc1.contabostorage.com");
    let (_, us) = json_of(api(
        &sim,
        Method::GET,
        "/v1/object-storages?region=US-central",
        &token,
    ))
    .await;
    assert_eq!(us["data"][0]["region"], "United States (Central)");
    assert_eq!(us["_pagination"]["totalElements"], 1);
}

#[tokio::test]
async fn rate_limit_and_server_error_faults() {
    let sim = start(SimulatorOptions::default()).await;
    let token = login(&sim).await;
    sim.set_faults(vec![
        FaultRule::always(Fault::TooManyRequests {
            retry_after: Some(7),
        })
        .times(1),
        FaultRule::always(Fault::TooManyRequests { retry_after: None }).times(1),
        FaultRule::always(Fault::InternalServerError).times(2),
        FaultRule::always(Fault::ServiceUnavailable).times(1),
    ]);
    let get = || api(&sim, Method::GET, "/v1/users/client", &token).send();

    let resp = get().await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "7");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"statusCode": 429, "message": "Too Many Requests"})
    );

    let resp = get().await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().get("retry-after").is_none());

    for _ in 0..2 {
        let resp = get().await.unwrap();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(
            body["message"],
            "Internal Server Error, retry or contact support"
        );
    }
    let resp = get().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.text().await.unwrap().contains("503"));
    assert_eq!(
        get().await.unwrap().status(),
        StatusCode::OK,
        "rules are used up"
    );

    let log = sim.requests();
    let statuses: Vec<u16> = log.iter().skip(1).map(|r| r.status).collect();
    assert_eq!(statuses, [429, 429, 500, 500, 503, 200]);
    assert_eq!(
        log[1].fault.as_deref(),
        Some("TooManyRequests(retry_after=7)")
    );
    assert_eq!(log[6].fault, None);
}

#[tokio::test]
async fn faults_can_target_one_operation_including_the_token_endpoint() {
    let sim = start(SimulatorOptions::default()).await;
    sim.set_faults(vec![FaultRule::always(Fault::InternalServerError)
        .on(Operation::Token)
        .times(1)]);
    let secret = SimulatorOptions::default().client_secret;
    let (status, _) = login_with(&sim, secret.expose_secret()).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let token = login(&sim).await;
    sim.set_faults(vec![
        FaultRule::always(Fault::InternalServerError).on(Operation::GenerateClientSecret)
    ]);
    let (status, _) = json_of(api(&sim, Method::GET, "/v1/users/client", &token)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = json_of(api(&sim, Method::PUT, "/v1/users/client/secret", &token)).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        sim.snapshot().client_secret.expose_secret(),
        secret.expose_secret()
    );
}

#[tokio::test]
async fn latency_delays_the_response() {
    let sim = start(SimulatorOptions::default()).await;
    let token = login(&sim).await;
    sim.set_faults(vec![FaultRule::always(Fault::Latency(
        Duration::from_millis(300),
    ))]);
    let started = Instant::now();
    let (status, _) = json_of(api(&sim, Method::GET, "/v1/users/client", &token)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        sim.requests().last().unwrap().fault.as_deref(),
        Some("Latency(300ms)")
    );
}

#[tokio::test]
async fn drop_before_apply_leaves_state_unchanged() {
    let sim = start(SimulatorOptions::default()).await;
    let token = login(&sim).await;
    let before = sim.snapshot();
    let user = &before.users[0];
    let path = credentials_path(&user.user_id, &user.credentials[0]);
    sim.set_faults(vec![FaultRule::always(Fault::DropBeforeApply)
        .on(Operation::RegenerateObjectStorageCredentials)
        .times(1)]);

    let err = api(&sim, Method::PATCH, &path, &token)
        .send()
        .await
        .unwrap_err();
    assert!(!err.is_timeout(), "{err}");
    let after = sim.snapshot();
    assert_eq!(
        after.users[0].credentials[0].secret_key.expose_secret(),
        user.credentials[0].secret_key.expose_secret()
    );
    let log = sim.requests();
    let regenerations: Vec<_> = log
        .iter()
        .filter(|r| r.operation == Operation::RegenerateObjectStorageCredentials)
        .collect();
    assert_eq!(regenerations.len(), 1, "the client did not resend");
    assert_eq!(regenerations[0].status, 0);
    assert_eq!(regenerations[0].fault.as_deref(), Some("DropBeforeApply"));
    let (status, _) = json_of(api(&sim, Method::PATCH, &path, &token)).await;
    assert_eq!(status, StatusCode::OK, "the next attempt goes through");
}

#[tokio::test]
async fn drop_after_apply_applies_without_answering() {
    let sim = start(SimulatorOptions::default()).await;
    let token = login(&sim).await;
    let old = sim.snapshot().client_secret;
    sim.set_faults(vec![FaultRule::always(Fault::DropAfterApply)
        .on(Operation::GenerateClientSecret)
        .times(1)]);
    let err = api(&sim, Method::PUT, "/v1/users/client/secret", &token)
        .send()
        .await
        .unwrap_err();
    assert!(!err.is_timeout(), "{err}");
    let new = sim.snapshot().client_secret;
    assert_ne!(
        new.expose_secret(),
        old.expose_secret(),
        "the rotation happened"
    );
    let (_, client) = json_of(api(&sim, Method::GET, "/v1/users/client", &token)).await;
    assert_eq!(
        client["data"][0]["secret"],
        new.expose_secret(),
        "recoverable via GET"
    );
    let ops: Vec<(Operation, u16)> = sim
        .requests()
        .iter()
        .map(|r| (r.operation, r.status))
        .collect();
    assert_eq!(
        ops[1..],
        [
            (Operation::GenerateClientSecret, 0),
            (Operation::RetrieveUserClient, 200)
        ]
    );
}

#[tokio::test]
async fn malformed_body_is_truncated_json() {
    let sim = start(SimulatorOptions::default()).await;
    let token = login(&sim).await;
    sim.set_faults(vec![FaultRule::always(Fault::MalformedBody).times(1)]);
    let resp = api(&sim, Method::GET, "/v1/users", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    assert!(text.starts_with('{'));
    assert!(serde_json::from_str::<Value>(&text).is_err());
}

#[tokio::test]
async fn snapshot_debug_output_contains_no_secret() {
    let sim = start(SimulatorOptions::default()).await;
    let token = login(&sim).await;
    let snapshot = sim.snapshot();
    let printed = format!("{snapshot:?} {:?} {:?}", SimulatorOptions::default(), sim);
    let secrets = sim.issued_secrets();
    assert!(
        secrets.len() >= 2 + 4 * 3 + 2,
        "client secret, password, S3 keys, tokens"
    );
    for secret in &secrets {
        assert!(!printed.contains(secret.expose_secret()));
    }
    assert!(!printed.contains(&token));
    let as_secret = SecretString::from(token.clone());
    assert!(secrets
        .iter()
        .any(|s| s.expose_secret() == as_secret.expose_secret()));
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let sim = start(SimulatorOptions::default()).await;
    let token_url = sim.token_url();
    let client = http();
    let alive = client.post(token_url.clone()).send().await.unwrap();
    assert_eq!(alive.status(), StatusCode::BAD_REQUEST);
    sim.shutdown().await;
    let err = client.post(token_url).send().await.unwrap_err();
    assert!(err.is_connect() || err.is_request(), "{err}");
}

/// The headers that sign `method url` with `body` for S3 in `region` with
/// `key`, as a client signs: `aws-sigv4` with the S3 settings (single URI
/// encoding, no path normalisation, `x-amz-content-sha256`), the settings
/// the rotator's verifier signs its probes with.
fn signed_headers(
    method: &str,
    url: &str,
    body: &[u8],
    region: &str,
    (access_key, secret_key): (&str, &SecretString),
) -> Vec<(String, String)> {
    use aws_sigv4::http_request::{
        sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest,
        SigningSettings, UriPathNormalizationMode,
    };
    use aws_sigv4::sign::v4;

    let identity = aws_credential_types::Credentials::new(
        access_key,
        secret_key.expose_secret(),
        None,
        None,
        "simulator-tests",
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
        .time(std::time::SystemTime::now())
        .settings(settings)
        .build()
        .expect("signing parameters")
        .into();
    let request = SignableRequest::new(method, url, std::iter::empty(), SignableBody::Bytes(body))
        .expect("the request can be signed");
    let (instructions, _) = sign(request, &params).expect("signing").into_parts();
    instructions
        .headers()
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect()
}

/// A SigV4-signed S3 request to `url` (`http://…/path`) with `key`.
async fn s3(
    method: Method,
    url: &str,
    region: &str,
    key: (&str, &SecretString),
    body: &[u8],
) -> (StatusCode, String) {
    let headers = signed_headers(method.as_str(), url, body, region, key);
    let mut req = http().request(method, url).body(body.to_vec());
    for (n, v) in headers {
        req = req.header(n, v);
    }
    let resp = req.send().await.expect("S3 request is answered");
    (resp.status(), resp.text().await.unwrap())
}

/// The EU credential of user 1 and its storage's URL.
fn eu_credential(sim: &Simulator) -> (String, SimCredential) {
    let snapshot = sim.snapshot();
    let user = &snapshot.users[1];
    let c = user.credentials[0].clone();
    assert_eq!(c.region, "European Union");
    (user.user_id.clone(), c)
}

fn s3_code(body: &str) -> &str {
    body.split("<Code>")
        .nth(1)
        .and_then(|rest| rest.split("</Code>").next())
        .unwrap_or("")
}

#[tokio::test]
async fn s3_endpoint_checks_sigv4_against_the_keys_held() {
    let sim = start(SimulatorOptions::default()).await;
    let endpoints = sim.s3_endpoints().to_vec();
    assert_eq!(endpoints.len(), 3);
    let (_, c) = eu_credential(&sim);
    assert_eq!(
        c.s3_url, endpoints[0].url,
        "the storage's s3Url is the endpoint"
    );
    let root = format!("{}/", c.s3_url);
    let key = (c.access_key.as_str(), &c.secret_key);

    let (status, body) = s3(Method::GET, &root, "eu", key, b"").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("<Name>sim-bucket</Name>"), "{body}");

    let wrong = SecretString::from("x".repeat(40));
    let (status, body) = s3(Method::GET, &root, "eu", (&c.access_key, &wrong), b"").await;
    assert_eq!(
        (status, s3_code(&body)),
        (StatusCode::FORBIDDEN, "SignatureDoesNotMatch")
    );
    let (status, body) = s3(Method::GET, &root, "eu", ("AKUNKNOWN", &c.secret_key), b"").await;
    assert_eq!(
        (status, s3_code(&body)),
        (StatusCode::FORBIDDEN, "InvalidAccessKeyId")
    );
    let (status, body) = s3(Method::GET, &root, "us-east-1", key, b"").await;
    assert_eq!(
        (status, s3_code(&body)),
        (StatusCode::BAD_REQUEST, "AuthorizationHeaderMalformed")
    );
    assert!(body.contains("expecting &apos;eu&apos;"), "{body}");
    // The EU key is not a key of the Singapore storage.
    let sin = format!("{}/", endpoints[2].url);
    let (status, body) = s3(Method::GET, &sin, "sin", key, b"").await;
    assert_eq!(
        (status, s3_code(&body)),
        (StatusCode::FORBIDDEN, "InvalidAccessKeyId")
    );
    let resp = http().get(&root).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(s3_code(&resp.text().await.unwrap()), "AccessDenied");

    let log = sim.s3_requests();
    assert_eq!(log.len(), 6);
    assert_eq!(log[0].status, 200);
    assert_eq!(log[1].code, Some("SignatureDoesNotMatch"));
    assert_eq!(log[4].region, "sin");
    assert_eq!(log[5].access_key, None);
}

#[tokio::test]
async fn s3_objects_put_list_get_head_delete() {
    let sim = start(SimulatorOptions::default()).await;
    let (_, c) = eu_credential(&sim);
    let key = (c.access_key.as_str(), &c.secret_key);
    let object = format!("{}/sim-bucket/dir/hello%20world.txt", c.s3_url);
    let (status, body) = s3(Method::PUT, &object, "eu", key, b"hello").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        sim.s3_object("eu", "sim-bucket", "dir/hello world.txt"),
        Some(b"hello".to_vec())
    );
    let (status, body) = s3(Method::GET, &object, "eu", key, b"").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "hello"));
    let (status, _) = s3(Method::HEAD, &object, "eu", key, b"").await;
    assert_eq!(status, StatusCode::OK);

    let list = format!(
        "{}/sim-bucket?delimiter=%2F&encoding-type=url&list-type=2&prefix=",
        c.s3_url
    );
    let (status, body) = s3(Method::GET, &list, "eu", key, b"").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.contains("<CommonPrefixes><Prefix>dir/</Prefix>"),
        "{body}"
    );
    let list = format!("{}/sim-bucket?list-type=2&prefix=dir%2F", c.s3_url);
    let (_, body) = s3(Method::GET, &list, "eu", key, b"").await;
    assert!(body.contains("<Key>dir/hello world.txt</Key>"), "{body}");
    assert!(body.contains("<Size>5</Size>"), "{body}");
    assert!(body.contains("<KeyCount>1</KeyCount>"), "{body}");

    let (status, _) = s3(Method::DELETE, &object, "eu", key, b"").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = s3(Method::GET, &object, "eu", key, b"").await;
    assert_eq!(
        (status, s3_code(&body)),
        (StatusCode::NOT_FOUND, "NoSuchKey")
    );
    let missing = format!("{}/no-such-bucket/x", c.s3_url);
    let (status, body) = s3(Method::GET, &missing, "eu", key, b"").await;
    assert_eq!(
        (status, s3_code(&body)),
        (StatusCode::NOT_FOUND, "NoSuchBucket")
    );
}

#[tokio::test]
async fn s3_payload_hash_must_match_the_body() {
    let sim = start(SimulatorOptions::default()).await;
    let (_, c) = eu_credential(&sim);
    let url = format!("{}/sim-bucket/k", c.s3_url);
    let headers = signed_headers(
        "PUT",
        &url,
        b"signed body",
        "eu",
        (&c.access_key, &c.secret_key),
    );
    let mut req = http().put(&url).body("another body");
    for (n, v) in headers {
        req = req.header(n, v);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        s3_code(&resp.text().await.unwrap()),
        "XAmzContentSHA256Mismatch"
    );
    assert_eq!(sim.s3_object("eu", "sim-bucket", "k"), None);
}

/// Regenerates the EU credential of user 1 and returns its new pair.
async fn regenerate_eu(sim: &Simulator) -> (SimCredential, SimCredential) {
    let token = login(sim).await;
    let (user_id, old) = eu_credential(sim);
    let (status, _) = json_of(api(
        sim,
        Method::PATCH,
        &credentials_path(&user_id, &old),
        &token,
    ))
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, new) = eu_credential(sim);
    (old, new)
}

#[tokio::test]
async fn s3_regenerate_kills_the_old_key_at_once() {
    let sim = start(SimulatorOptions::default()).await;
    let (old, new) = regenerate_eu(&sim).await;
    let root = format!("{}/", new.s3_url);
    let (status, _) = s3(
        Method::GET,
        &root,
        "eu",
        (&new.access_key, &new.secret_key),
        b"",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = s3(
        Method::GET,
        &root,
        "eu",
        (&old.access_key, &old.secret_key),
        b"",
    )
    .await;
    assert_eq!(
        (status, s3_code(&body)),
        (StatusCode::FORBIDDEN, "InvalidAccessKeyId")
    );
}

#[tokio::test]
async fn s3_propagation_keeps_the_old_key_and_refuses_the_new_for_a_while() {
    let sim = start(SimulatorOptions::default()).await;
    sim.set_s3_fault(S3Fault::Propagation(Duration::from_millis(600)));
    let (old, new) = regenerate_eu(&sim).await;
    let root = format!("{}/", new.s3_url);
    let new_key = (new.access_key.as_str(), &new.secret_key);
    let old_key = (old.access_key.as_str(), &old.secret_key);
    let (status, _) = s3(Method::GET, &root, "eu", new_key, b"").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "not propagated yet");
    let (status, _) = s3(Method::GET, &root, "eu", old_key, b"").await;
    assert_eq!(status, StatusCode::OK, "the old key still works");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (status, _) = s3(Method::GET, &root, "eu", new_key, b"").await;
    assert_eq!(status, StatusCode::OK, "propagated");
    let (status, _) = s3(Method::GET, &root, "eu", old_key, b"").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "the old key is dead");
}

#[tokio::test]
async fn s3_never_accept_refuses_regenerated_keys_in_its_region_only() {
    let sim = start(SimulatorOptions::default()).await;
    sim.set_s3_fault_in("eu", S3Fault::NeverAccept);
    let (_, new) = regenerate_eu(&sim).await;
    let (status, body) = s3(
        Method::GET,
        &format!("{}/", new.s3_url),
        "eu",
        (&new.access_key, &new.secret_key),
        b"",
    )
    .await;
    assert_eq!(
        (status, s3_code(&body)),
        (StatusCode::FORBIDDEN, "InvalidAccessKeyId")
    );
    // Keys never regenerated still work, in every region.
    let snapshot = sim.snapshot();
    let endpoints = sim.s3_endpoints();
    for c in &snapshot.users[2].credentials {
        let region = endpoints
            .iter()
            .find(|e| e.region == c.region)
            .expect("every storage's region has an endpoint")
            .signing_region;
        let (status, _) = s3(
            Method::GET,
            &format!("{}/", c.s3_url),
            region,
            (&c.access_key, &c.secret_key),
            b"",
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{}", c.region);
    }
}

/// Beyond the account's request limit, every region's storage answers
/// `503 SlowDown` (a HEAD the 503 with no body), whatever the key; the
/// limit is one bucket of tokens for all regions, refilled at its rate.
#[tokio::test]
async fn s3_request_limit_answers_slow_down_across_regions() {
    let sim = start(SimulatorOptions::default()).await;
    // 1 request/s, a burst of 2: of 10 requests sent at once, 2 pass (3 if
    // sending them took over a second).
    sim.set_s3_request_limit(Some(1.0));
    let snapshot = sim.snapshot();
    let user = &snapshot.users[1];
    let (eu, sin) = (&user.credentials[0], &user.credentials[2]);
    assert_eq!(sin.region, "Asia (Singapore)");
    let mut answers = Vec::new();
    for i in 0..10 {
        let (c, region) = if i % 2 == 0 { (eu, "eu") } else { (sin, "sin") };
        let root = format!("{}/", c.s3_url);
        answers.push(
            s3(
                Method::GET,
                &root,
                region,
                (&c.access_key, &c.secret_key),
                b"",
            )
            .await,
        );
    }
    let passed = answers.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    assert!((2..=3).contains(&passed), "{passed} passed");
    for (status, body) in answers.iter().filter(|(s, _)| *s != StatusCode::OK) {
        assert_eq!(
            (*status, s3_code(body)),
            (StatusCode::SERVICE_UNAVAILABLE, "SlowDown")
        );
    }
    // A HEAD over the limit: the status, no body.
    let head = format!("{}/sim-bucket", eu.s3_url);
    let (status, body) = s3(
        Method::HEAD,
        &head,
        "eu",
        (&eu.access_key, &eu.secret_key),
        b"",
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "")
    );
    let log = sim.s3_requests();
    let slowed: Vec<&S3Request> = log.iter().filter(|r| r.code == Some("SlowDown")).collect();
    assert_eq!(slowed.len(), 11 - passed);
    assert!(slowed.iter().all(|r| r.status == 503));
    assert!(
        slowed.iter().any(|r| r.region == "sin"),
        "every region counts"
    );
    assert!(
        slowed
            .iter()
            .all(|r| r.access_key.as_deref() == Some(eu.access_key.as_str())
                || r.access_key.as_deref() == Some(sin.access_key.as_str())),
        "the key is logged"
    );
    // The bucket refills at the rate.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let root = format!("{}/", eu.s3_url);
    let key = (eu.access_key.as_str(), &eu.secret_key);
    let (status, _) = s3(Method::GET, &root, "eu", key, b"").await;
    assert_eq!(status, StatusCode::OK);
    // No limit: no SlowDown.
    sim.set_s3_request_limit(None);
    for _ in 0..10 {
        let (status, _) = s3(Method::GET, &root, "eu", key, b"").await;
        assert_eq!(status, StatusCode::OK);
    }
}

/// A bucket policy denies one user one bucket of a region: that user's
/// requests to it get `403 AccessDenied`, its other buckets and
/// ListBuckets work, and another user of the account lists the bucket.
#[tokio::test]
async fn deny_bucket_refuses_one_user_one_bucket() {
    let sim = start(SimulatorOptions::default()).await;
    assert!(sim.create_bucket("eu", "app-data"));
    assert!(!sim.create_bucket("eu", "app-data"), "exists already");
    assert!(!sim.create_bucket("mars", "app-data"), "no such region");
    let snapshot = sim.snapshot();
    let (denied, other) = (&snapshot.users[1], &snapshot.users[2]);
    let (a, b) = (&denied.credentials[0], &other.credentials[0]);
    sim.deny_bucket(&denied.user_id, Some("eu"), "app-data");
    // Denied elsewhere only: no effect at the EU storage.
    sim.deny_bucket(&denied.user_id, Some("sin"), "sim-bucket");
    let list = |bucket: &str| format!("{}/{bucket}?list-type=2&max-keys=0", a.s3_url);
    let key_a = (a.access_key.as_str(), &a.secret_key);
    let key_b = (b.access_key.as_str(), &b.secret_key);

    let (status, body) = s3(Method::GET, &list("app-data"), "eu", key_a, b"").await;
    assert_eq!(
        (status, s3_code(&body)),
        (StatusCode::FORBIDDEN, "AccessDenied")
    );
    let (status, _) = s3(
        Method::HEAD,
        &format!("{}/app-data", a.s3_url),
        "eu",
        key_a,
        b"",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = s3(Method::GET, &list("sim-bucket"), "eu", key_a, b"").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("<KeyCount>0</KeyCount>"), "{body}");
    let (status, body) = s3(Method::GET, &format!("{}/", a.s3_url), "eu", key_a, b"").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.contains("<Name>app-data</Name>"),
        "the account's buckets: {body}"
    );
    let (status, body) = s3(Method::GET, &list("app-data"), "eu", key_b, b"").await;
    assert_eq!(status, StatusCode::OK, "another user: {body}");

    let log = sim.s3_requests();
    assert_eq!(log[0].code, Some("AccessDenied"));
    assert_eq!(log[0].path, "/app-data");
    assert_eq!(log[0].access_key.as_deref(), Some(a.access_key.as_str()));

    sim.allow_bucket(&denied.user_id, None, "app-data");
    let (status, _) = s3(Method::GET, &list("app-data"), "eu", key_a, b"").await;
    assert_eq!(status, StatusCode::OK, "the policy is lifted");
}
