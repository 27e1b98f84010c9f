//! Handlers of the `/v1` endpoints. They run after the bearer and
//! `x-request-id` checks, under the state lock, and build the spec's JSON
//! shapes (camelCase fields, `data` always an array).

use axum::response::Response;
use hyper::StatusCode;
use secrecy::ExposeSecret;
use serde_json::{json, Map, Value};

use super::routes::{CredentialPath, Route};
use super::state::{Credential, NewUser, Refusal, State, Storage, User, UserPatch};
use super::wire::{self, ApiError, PageRequest, Query};

/// Locales the spec allows on users.
const LOCALES: [&str; 8] = ["de-DE", "de", "en-US", "en", "es", "es-ES", "pt-BR", "pt"];

/// Runs the handler for an authenticated `/v1` route.
pub(super) fn handle(
    state: &mut State,
    route: Route,
    query: Option<&str>,
    body: &[u8],
) -> Response {
    let q = Query::parse(query);
    let result = match route {
        Route::ListUsers => list_users(state, &q),
        Route::CreateUser => create_user(state, body),
        Route::GetUser(id) => get_user(state, &id),
        Route::UpdateUser(id) => update_user(state, &id, body),
        Route::DeleteUser(id) => delete_user(state, &id),
        Route::GetClient => Ok(get_client(state)),
        Route::GenerateClientSecret => Ok(generate_client_secret(state)),
        Route::ListCredentials(id) => list_credentials(state, &id, &q),
        Route::GetCredential(p) => get_credential(state, &p),
        Route::RegenerateCredential(p) => regenerate_credential(state, &p),
        Route::ResetPassword(id) | Route::ResendEmailVerification(id) => {
            user_email_action(state, &id, &q)
        }
        Route::ListObjectStorages => list_object_storages(state, &q),
        Route::Token | Route::Mark(_) | Route::MethodNotAllowed | Route::NotFound => {
            Err(ApiError::not_found())
        }
    };
    result.unwrap_or_else(ApiError::into_response)
}

type Handled = Result<Response, ApiError>;

fn refusal(r: Refusal, what: &str) -> ApiError {
    match r {
        Refusal::NotFound => ApiError::new(StatusCode::NOT_FOUND, format!("{what} not found")),
        Refusal::DuplicateEmail => ApiError::new(
            StatusCode::CONFLICT,
            "A user with this email address already exists",
        ),
        Refusal::OwnerUndeletable => {
            ApiError::new(StatusCode::FORBIDDEN, "The account owner cannot be deleted")
        }
    }
}

fn user_json(state: &State, u: &User) -> Value {
    json!({
        "tenantId": state.tenant_id,
        "customerId": state.customer_id,
        "userId": u.user_id,
        "firstName": u.first_name,
        "lastName": u.last_name,
        "email": u.email,
        "emailVerified": u.email_verified,
        "enabled": u.enabled,
        "totp": u.totp,
        "locale": u.locale,
        "roles": [],
        "owner": u.owner,
        "sendInvoiceEmail": u.send_invoice_email,
    })
}

fn credential_json(state: &State, c: &Credential) -> Value {
    let storage = state.storage(&c.object_storage_id);
    json!({
        "tenantId": state.tenant_id,
        "customerId": state.customer_id,
        "accessKey": c.access_key,
        "secretKey": c.secret_key.expose_secret(),
        "objectStorageId": c.object_storage_id,
        "displayName": storage.map_or("", |s| s.display_name.as_str()),
        "region": storage.map_or("", |s| s.region.name),
        "credentialId": c.credential_id,
    })
}

fn storage_json(state: &State, s: &Storage) -> Value {
    json!({
        "tenantId": state.tenant_id,
        "customerId": state.customer_id,
        "objectStorageId": s.object_storage_id,
        "createdDate": s.created_date,
        "cancelDate": "",
        "autoScaling": { "state": "disabled", "sizeLimitTB": 0 },
        "dataCenter": s.data_center(),
        "totalPurchasedSpaceTB": s.total_purchased_space_tb,
        "s3Url": s.s3_url,
        "s3TenantId": s.s3_tenant_id,
        "status": "READY",
        "region": s.region.name,
        "displayName": s.display_name,
    })
}

fn contains_ci(haystack: &str, needle: &str) -> bool {
    haystack.to_lowercase().contains(&needle.to_lowercase())
}

/// Fields lists can be ordered by (`orderBy=field:asc|desc`). The spec
/// names none; these are each item's scalar fields.
const USER_FIELDS: &[&str] = &[
    "userId",
    "firstName",
    "lastName",
    "email",
    "enabled",
    "owner",
];
const CREDENTIAL_FIELDS: &[&str] = &[
    "credentialId",
    "objectStorageId",
    "displayName",
    "region",
    "accessKey",
];
const STORAGE_FIELDS: &[&str] = &[
    "objectStorageId",
    "displayName",
    "region",
    "createdDate",
    "dataCenter",
];

/// A different start for every unordered list, with `unstable_order`.
fn unordered_shift(state: &State) -> Option<usize> {
    state.unstable_order.then(|| {
        state
            .order_shift
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1
    })
}

/// `GET /v1/users`.
fn list_users(state: &State, q: &Query) -> Handled {
    let page = PageRequest::from_query(q, state.page_size_cap)?;
    let enabled = q.get_bool("enabled")?;
    let owner = q.get_bool("owner")?;
    // Only validated: every simulated user belongs to the one account.
    q.get_bool("default")?;
    let email = q.get("email");
    let search = q.get("search");
    let items = state
        .users
        .iter()
        .filter(|u| email.is_none_or(|e| contains_ci(&u.email, e)))
        .filter(|u| enabled.is_none_or(|e| u.enabled == e))
        .filter(|u| owner.is_none_or(|o| u.owner == o))
        .filter(|u| {
            search.is_none_or(|s| {
                let full = format!("{} {}", u.first_name, u.last_name);
                [&u.first_name, &u.last_name, &u.email, &full]
                    .iter()
                    .any(|f| contains_ci(f, s))
            })
        })
        .map(|u| user_json(state, u))
        .collect();
    let items = wire::order(items, q, USER_FIELDS, unordered_shift(state))?;
    Ok(wire::list_response(items, page, "/v1/users"))
}

/// Parses a JSON object body, refusing properties outside `allowed`
/// (the API validates bodies strictly).
fn parse_body(body: &[u8], allowed: &[&str]) -> Result<Map<String, Value>, ApiError> {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
        return Err(ApiError::bad_request("Request body must be a JSON object"));
    };
    if let Some(key) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "property {key} should not exist"
        )));
    }
    Ok(map)
}

fn opt_string(map: &Map<String, Value>, key: &str) -> Result<Option<String>, ApiError> {
    match map.get(key) {
        None => Ok(None),
        Some(Value::String(s)) if (1..=255).contains(&s.chars().count()) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::bad_request(format!(
            "{key} must be a string of 1 to 255 characters"
        ))),
    }
}

fn opt_bool(map: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    match map.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::bad_request(format!(
            "{key} must be a boolean value"
        ))),
    }
}

fn opt_locale(map: &Map<String, Value>) -> Result<Option<String>, ApiError> {
    match opt_string(map, "locale")? {
        Some(l) if !LOCALES.contains(&l.as_str()) => Err(ApiError::bad_request(format!(
            "locale must be one of the following values: {}",
            LOCALES.join(", ")
        ))),
        other => Ok(other),
    }
}

fn opt_roles(map: &Map<String, Value>) -> Result<Option<Vec<i64>>, ApiError> {
    let Some(value) = map.get("roles") else {
        return Ok(None);
    };
    value
        .as_array()
        .and_then(|a| a.iter().map(Value::as_i64).collect::<Option<Vec<_>>>())
        .map(Some)
        .ok_or_else(|| ApiError::bad_request("roles must be an array of integer numbers"))
}

fn required<T>(value: Option<T>, key: &str) -> Result<T, ApiError> {
    value.ok_or_else(|| ApiError::bad_request(format!("{key} should not be empty")))
}

/// `POST /v1/users`.
fn create_user(state: &mut State, body: &[u8]) -> Handled {
    let map = parse_body(
        body,
        &[
            "firstName",
            "lastName",
            "email",
            "enabled",
            "totp",
            "locale",
            "roles",
            "sendInvoiceEmail",
        ],
    )?;
    let new = NewUser {
        first_name: required(opt_string(&map, "firstName")?, "firstName")?,
        last_name: required(opt_string(&map, "lastName")?, "lastName")?,
        email: required(opt_string(&map, "email")?, "email")?,
        enabled: required(opt_bool(&map, "enabled")?, "enabled")?,
        totp: required(opt_bool(&map, "totp")?, "totp")?,
        locale: required(opt_locale(&map)?, "locale")?,
        roles: opt_roles(&map)?.unwrap_or_default(),
        send_invoice_email: opt_bool(&map, "sendInvoiceEmail")?.unwrap_or(false),
    };
    if !new.email.contains('@') {
        return Err(ApiError::bad_request("email must be an email"));
    }
    let user_id = state.create_user(new).map_err(|r| refusal(r, "User"))?;
    tracing::debug!(%user_id, "Simulator created a user.");
    let item = json!({
        "tenantId": state.tenant_id,
        "customerId": state.customer_id,
        "userId": user_id,
    });
    Ok(wire::find_response(
        StatusCode::CREATED,
        item,
        &format!("/v1/users/{user_id}"),
    ))
}

/// `GET /v1/users/{userId}`.
fn get_user(state: &State, user_id: &str) -> Handled {
    let user = state
        .user(user_id)
        .ok_or_else(|| refusal(Refusal::NotFound, "User"))?;
    Ok(wire::find_response(
        StatusCode::OK,
        user_json(state, user),
        &format!("/v1/users/{user_id}"),
    ))
}

/// `PATCH /v1/users/{userId}`: answers with `_links` only.
fn update_user(state: &mut State, user_id: &str, body: &[u8]) -> Handled {
    if state.user(user_id).is_none() {
        return Err(refusal(Refusal::NotFound, "User"));
    }
    let map = parse_body(
        body,
        &[
            "firstName",
            "lastName",
            "enabled",
            "totp",
            "locale",
            "roles",
            "sendInvoiceEmail",
        ],
    )?;
    let patch = UserPatch {
        first_name: opt_string(&map, "firstName")?,
        last_name: opt_string(&map, "lastName")?,
        enabled: opt_bool(&map, "enabled")?,
        totp: opt_bool(&map, "totp")?,
        locale: opt_locale(&map)?,
        roles: opt_roles(&map)?,
        send_invoice_email: opt_bool(&map, "sendInvoiceEmail")?,
    };
    state
        .update_user(user_id, patch)
        .map_err(|r| refusal(r, "User"))?;
    Ok(wire::json(
        StatusCode::OK,
        &json!({ "_links": { "self": format!("/v1/users/{user_id}") } }),
    ))
}

/// `DELETE /v1/users/{userId}`.
fn delete_user(state: &mut State, user_id: &str) -> Handled {
    state.delete_user(user_id).map_err(|r| refusal(r, "User"))?;
    tracing::debug!(%user_id, "Simulator deleted a user.");
    Ok(wire::empty(StatusCode::NO_CONTENT))
}

/// `GET /v1/users/client`: includes the current secret in clear.
fn get_client(state: &State) -> Response {
    let item = json!({
        "tenantId": state.tenant_id,
        "customerId": state.customer_id,
        "id": state.client_uuid,
        "clientId": state.client_id,
        "secret": state.client_secret.expose_secret(),
    });
    wire::find_response(StatusCode::OK, item, "/v1/users/client")
}

/// `PUT /v1/users/client/secret`.
fn generate_client_secret(state: &mut State) -> Response {
    let secret = state.rotate_client_secret();
    tracing::debug!("Simulator generated a new client secret.");
    let item = json!({
        "tenantId": state.tenant_id,
        "customerId": state.customer_id,
        "secret": secret.expose_secret(),
    });
    wire::find_response(StatusCode::OK, item, "/v1/users/client/secret")
}

/// `GET /v1/users/{userId}/object-storages/credentials`.
fn list_credentials(state: &State, user_id: &str, q: &Query) -> Handled {
    let page = PageRequest::from_query(q, state.page_size_cap)?;
    let user = state
        .user(user_id)
        .ok_or_else(|| refusal(Refusal::NotFound, "User"))?;
    let storage_id = q.get("objectStorageId");
    let region = q.get("regionName");
    let display = q.get("displayName");
    let items = user
        .credentials
        .iter()
        .filter(|c| storage_id.is_none_or(|id| c.object_storage_id == id))
        .filter(|c| {
            let storage = state.storage(&c.object_storage_id);
            region.is_none_or(|r| storage.is_some_and(|s| s.region.name.eq_ignore_ascii_case(r)))
                && display
                    .is_none_or(|d| storage.is_some_and(|s| s.display_name.eq_ignore_ascii_case(d)))
        })
        .map(|c| credential_json(state, c))
        .collect();
    let items = wire::order(items, q, CREDENTIAL_FIELDS, unordered_shift(state))?;
    // The real API's credential links lack the leading slash.
    let base = format!("v1/users/{user_id}/object-storages/credentials");
    Ok(wire::list_response(items, page, &base))
}

/// Resolves a credential path to its parsed id, 400/404 otherwise.
fn credential_id(state: &State, p: &CredentialPath) -> Result<i64, ApiError> {
    let id: i64 = p
        .credential_id
        .parse()
        .map_err(|_| ApiError::bad_request("credentialId must be an integer number"))?;
    if state.user(&p.user_id).is_none() {
        return Err(refusal(Refusal::NotFound, "User"));
    }
    state
        .credential(&p.user_id, &p.object_storage_id, id)
        .map(|_| id)
        .ok_or_else(|| refusal(Refusal::NotFound, "Credential"))
}

fn credential_response(state: &State, p: &CredentialPath, id: i64) -> Handled {
    let cred = state
        .credential(&p.user_id, &p.object_storage_id, id)
        .ok_or_else(|| refusal(Refusal::NotFound, "Credential"))?;
    let self_link = format!(
        "v1/users/{}/object-storages/{}/credentials/{id}",
        p.user_id, p.object_storage_id
    );
    Ok(wire::find_response(
        StatusCode::OK,
        credential_json(state, cred),
        &self_link,
    ))
}

/// `GET …/object-storages/{objectStorageId}/credentials/{credentialId}`.
fn get_credential(state: &State, p: &CredentialPath) -> Handled {
    let id = credential_id(state, p)?;
    credential_response(state, p, id)
}

/// `PATCH …/object-storages/{objectStorageId}/credentials/{credentialId}`.
fn regenerate_credential(state: &mut State, p: &CredentialPath) -> Handled {
    let id = credential_id(state, p)?;
    state
        .regenerate_credential(&p.user_id, &p.object_storage_id, id)
        .map_err(|r| refusal(r, "Credential"))?;
    tracing::debug!(credential_id = id, user_id = %p.user_id, "Simulator regenerated a credential.");
    credential_response(state, p, id)
}

/// `POST …/reset-password` and `…/resend-email-verification`: the e-mail
/// is "sent"; nothing changes.
fn user_email_action(state: &State, user_id: &str, q: &Query) -> Handled {
    if let Some(url) = q.get("redirectUrl") {
        if url::Url::parse(url).is_err() {
            return Err(ApiError::bad_request("redirectUrl must be a URL address"));
        }
    }
    state
        .user(user_id)
        .ok_or_else(|| refusal(Refusal::NotFound, "User"))?;
    Ok(wire::empty(StatusCode::NO_CONTENT))
}

/// `GET /v1/object-storages`.
fn list_object_storages(state: &State, q: &Query) -> Handled {
    let page = PageRequest::from_query(q, state.page_size_cap)?;
    let region = q.get("region");
    let display = q.get("displayName");
    let data_center = q.get("dataCenterName");
    let s3_tenant = q.get("s3TenantId");
    let items = state
        .storages
        .iter()
        .filter(|s| {
            region.is_none_or(|r| {
                s.region.code.eq_ignore_ascii_case(r) || s.region.name.eq_ignore_ascii_case(r)
            })
        })
        .filter(|s| display.is_none_or(|d| s.display_name.eq_ignore_ascii_case(d)))
        .filter(|s| data_center.is_none_or(|d| s.data_center().eq_ignore_ascii_case(d)))
        .filter(|s| s3_tenant.is_none_or(|t| s.s3_tenant_id == t))
        .map(|s| storage_json(state, s))
        .collect();
    let items = wire::order(items, q, STORAGE_FIELDS, unordered_shift(state))?;
    Ok(wire::list_response(items, page, "/v1/object-storages"))
}
