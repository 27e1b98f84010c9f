//! Wire models for the Contabo endpoints contabo-rotator uses.
//!
//! Response types are deliberately forgiving (see [`super::lenient`]): unknown
//! fields are ignored, `null` in a "required" field becomes a default, enum-like
//! values such as `locale` or `status` stay strings so that values added by the
//! vendor later do not break parsing. Secret-bearing fields are
//! [`SecretString`]s from the moment they are parsed.

use super::lenient;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// `_pagination` of a list response. Every field is optional here: a missing or
/// odd block is tolerated and paging falls back to "until an empty page".
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pagination {
    #[serde(default, deserialize_with = "lenient::opt_int")]
    pub size: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_int")]
    pub total_elements: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_int")]
    pub total_pages: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_int")]
    pub page: Option<i64>,
}

/// The envelope of every Contabo response: `data` is always an array, even for
/// a single object. `_links` is ignored on purpose: paging is driven by
/// `_pagination` and our own page counter, never by link URLs.
#[derive(Debug, Deserialize)]
pub struct Envelope<T> {
    /// `None` when the key is absent or `null`: the caller decides whether that
    /// is an error (it is for every endpoint that documents a body).
    #[serde(default = "Option::default")]
    pub data: Option<Vec<T>>,
    /// Parsed leniently: a block that is not an object is treated as absent.
    #[serde(
        default,
        rename = "_pagination",
        deserialize_with = "pagination_or_none"
    )]
    pub pagination: Option<Pagination>,
}

fn pagination_or_none<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Pagination>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(serde_json::from_value(v).ok())
}

/// A user of the account (`UserResponse`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    #[serde(default, deserialize_with = "lenient::string")]
    pub tenant_id: String,
    #[serde(default, deserialize_with = "lenient::string")]
    pub customer_id: String,
    /// Empty when the API sent none: that user is reported as malformed
    /// ([`crate::inventory::Header::malformed`]), never listed.
    #[serde(default, deserialize_with = "lenient::string")]
    pub user_id: String,
    #[serde(default, deserialize_with = "lenient::string")]
    pub first_name: String,
    #[serde(default, deserialize_with = "lenient::string")]
    pub last_name: String,
    #[serde(default, deserialize_with = "lenient::string")]
    pub email: String,
    #[serde(default, deserialize_with = "lenient::boolean")]
    pub email_verified: bool,
    #[serde(default, deserialize_with = "lenient::boolean")]
    pub enabled: bool,
    #[serde(default, deserialize_with = "lenient::boolean")]
    pub totp: bool,
    /// Kept as text: the 2026 spec added locales that a closed enum would reject.
    #[serde(default, deserialize_with = "lenient::string")]
    pub locale: String,
    #[serde(default, deserialize_with = "lenient::list")]
    pub roles: Vec<Role>,
    #[serde(default, deserialize_with = "lenient::boolean")]
    pub owner: bool,
    #[serde(default, deserialize_with = "lenient::boolean")]
    pub send_invoice_email: bool,
}

/// A role attached to a user (`RoleResponse`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Role {
    #[serde(default, deserialize_with = "lenient::int")]
    pub role_id: i64,
    #[serde(default, deserialize_with = "lenient::string")]
    pub name: String,
    #[serde(default, deserialize_with = "lenient::boolean")]
    pub admin: bool,
    #[serde(default, deserialize_with = "lenient::boolean")]
    pub access_all_resources: bool,
    #[serde(default, rename = "type", deserialize_with = "lenient::string")]
    pub kind: String,
}

/// The account's OAuth client (`ClientResponse`): the GET returns the secret in clear.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiClient {
    #[serde(default, deserialize_with = "lenient::string")]
    pub tenant_id: String,
    #[serde(default, deserialize_with = "lenient::string")]
    pub customer_id: String,
    #[serde(default, deserialize_with = "lenient::string")]
    pub id: String,
    #[serde(default, deserialize_with = "lenient::string")]
    pub client_id: String,
    #[serde(default = "empty_secret", deserialize_with = "lenient::secret")]
    pub secret: SecretString,
}

/// The answer to `PUT /v1/users/client/secret` (`ClientSecretResponse`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GeneratedClientSecret {
    #[serde(default, deserialize_with = "lenient::string")]
    pub tenant_id: String,
    #[serde(default, deserialize_with = "lenient::string")]
    pub customer_id: String,
    #[serde(default = "empty_secret", deserialize_with = "lenient::secret")]
    pub secret: SecretString,
}

/// One S3 credential of a user for one object storage (`CredentialData`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Credential {
    #[serde(default, deserialize_with = "lenient::string")]
    pub tenant_id: String,
    #[serde(default, deserialize_with = "lenient::string")]
    pub customer_id: String,
    #[serde(default, deserialize_with = "lenient::string")]
    pub access_key: String,
    #[serde(default = "empty_secret", deserialize_with = "lenient::secret")]
    pub secret_key: SecretString,
    #[serde(default, deserialize_with = "lenient::string")]
    pub object_storage_id: String,
    #[serde(default, deserialize_with = "lenient::string")]
    pub display_name: String,
    #[serde(default, deserialize_with = "lenient::string")]
    pub region: String,
    /// A JSON number in the body, an int64 in the path. Required: a
    /// credential without one makes its user's listing malformed.
    #[serde(deserialize_with = "lenient::id")]
    pub credential_id: i64,
}

/// An object storage of the account (`ObjectStorageResponse`), for its `s3Url`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStorage {
    #[serde(default, deserialize_with = "lenient::string")]
    pub tenant_id: String,
    #[serde(default, deserialize_with = "lenient::string")]
    pub customer_id: String,
    #[serde(default, deserialize_with = "lenient::string")]
    pub object_storage_id: String,
    #[serde(default, deserialize_with = "lenient::string")]
    pub created_date: String,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub cancel_date: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub data_center: String,
    #[serde(
        default,
        rename = "totalPurchasedSpaceTB",
        deserialize_with = "lenient::float"
    )]
    pub total_purchased_space_tb: f64,
    /// As sent: sometimes `https://host`, sometimes a bare host. Use [`ObjectStorage::s3_endpoint`].
    #[serde(default, deserialize_with = "lenient::string")]
    pub s3_url: String,
    #[serde(default, deserialize_with = "lenient::string")]
    pub s3_tenant_id: String,
    /// Kept as text: the vendor adds states without notice.
    #[serde(default, deserialize_with = "lenient::string")]
    pub status: String,
    #[serde(default, deserialize_with = "lenient::string")]
    pub region: String,
    #[serde(default, deserialize_with = "lenient::string")]
    pub display_name: String,
}

impl ObjectStorage {
    /// The S3 endpoint as a URL with a scheme (`https://` added to a bare host).
    pub fn s3_endpoint(&self) -> String {
        normalize_s3_url(&self.s3_url)
    }
}

/// Adds `https://` to a bare host and drops a trailing slash; an empty value stays empty.
pub fn normalize_s3_url(raw: &str) -> String {
    let t = raw.trim().trim_end_matches('/');
    if t.is_empty() || t.contains("://") {
        t.to_owned()
    } else {
        format!("https://{t}")
    }
}

/// The answer to `POST /v1/users` (`CreateUserResponse`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedUser {
    #[serde(default, deserialize_with = "lenient::string")]
    pub tenant_id: String,
    #[serde(default, deserialize_with = "lenient::string")]
    pub customer_id: String,
    #[serde(default, deserialize_with = "lenient::string")]
    pub user_id: String,
}

/// Body of `POST /v1/users`. The 2026 spec requires first and last name.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateUserRequest {
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub enabled: bool,
    pub totp: bool,
    pub locale: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_invoice_email: Option<bool>,
}

/// Body of `PATCH /v1/users/{userId}`: omitted fields keep their values.
/// (`email` can no longer be changed: the 2026 spec removed it.)
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateUserRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub totp: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_invoice_email: Option<bool>,
}

/// Filters of `GET /v1/users/{userId}/object-storages/credentials`.
#[derive(Debug, Clone, Default)]
pub struct CredentialFilter {
    pub object_storage_id: Option<String>,
    pub region_name: Option<String>,
    pub display_name: Option<String>,
}

/// Filters of `GET /v1/users`.
#[derive(Debug, Clone, Default)]
pub struct UserFilter {
    pub email: Option<String>,
    pub enabled: Option<bool>,
    pub owner: Option<bool>,
}

fn empty_secret() -> SecretString {
    SecretString::from(String::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn credential_tolerates_nulls_strings_and_unknown_fields() {
        let body = r#"{"data":[{"tenantId":null,"customerId":54321,"accessKey":"AK",
            "secretKey":"sk/+1","objectStorageId":"os1","displayName":null,
            "region":"European Union","credentialId":"12345","brandNew":{"x":1}}]}"#;
        let env: Envelope<Credential> = serde_json::from_str(body).unwrap();
        let c = &env.data.unwrap()[0];
        assert_eq!(c.credential_id, 12345);
        assert_eq!(c.customer_id, "54321");
        assert_eq!(c.tenant_id, "");
        assert_eq!(c.display_name, "");
        assert_eq!(c.secret_key.expose_secret(), "sk/+1");
        assert!(env.pagination.is_none());
    }

    #[test]
    fn a_missing_or_null_credential_id_is_an_error_never_0() {
        for body in [
            r#"{"accessKey":"AK"}"#,
            r#"{"credentialId":null}"#,
            r#"{"credentialId":""}"#,
        ] {
            let err = serde_json::from_str::<Credential>(body).unwrap_err();
            assert!(
                err.to_string().contains("credentialId") || err.to_string().contains("id"),
                "{body}: {err}"
            );
        }
    }

    #[test]
    fn credential_id_as_float_is_accepted_but_fraction_is_not() {
        let ok: Credential = serde_json::from_str(r#"{"credentialId":12345.0}"#).unwrap();
        assert_eq!(ok.credential_id, 12345);
        assert!(serde_json::from_str::<Credential>(r#"{"credentialId":1.5}"#).is_err());
    }

    #[test]
    fn user_with_unknown_locale_and_null_roles_parses() {
        let u: User = serde_json::from_str(
            r#"{"userId":"u1","email":"a@b.c","locale":"fr-CA","roles":null,"enabled":"true"}"#,
        )
        .unwrap();
        assert_eq!(u.locale, "fr-CA");
        assert!(u.roles.is_empty());
        assert!(u.enabled);
    }

    #[test]
    fn odd_pagination_block_is_treated_as_absent() {
        let env: Envelope<User> =
            serde_json::from_str(r#"{"_pagination":"weird","data":[]}"#).unwrap();
        assert!(env.pagination.is_none());
        let env: Envelope<User> = serde_json::from_str(
            r#"{"_pagination":{"size":10.0,"totalPages":"3","page":1},"data":[]}"#,
        )
        .unwrap();
        assert_eq!(env.pagination.unwrap().total_pages, Some(3));
    }

    #[test]
    fn missing_data_is_none_not_empty() {
        let env: Envelope<User> = serde_json::from_str(r#"{"_links":{}}"#).unwrap();
        assert!(env.data.is_none());
    }

    #[test]
    fn s3_url_gets_a_scheme_when_it_has_none() {
        assert_eq!(
            normalize_s3_url("eu1-s3.contabo.com"),
            "https://eu1-s3.contabo.com"
        );
        assert_eq!(
            normalize_s3_url("https://eu2.contabostorage.com/"),
            "https://eu2.contabostorage.com"
        );
        assert_eq!(normalize_s3_url(""), "");
    }

    #[test]
    fn debug_of_secret_bearing_models_hides_values() {
        let c: Credential = serde_json::from_str(
            r#"{"accessKey":"AK","secretKey":"TOPSECRET-S3","credentialId":1}"#,
        )
        .unwrap();
        let a: ApiClient = serde_json::from_str(r#"{"secret":"TOPSECRET-CLIENT"}"#).unwrap();
        let g: GeneratedClientSecret =
            serde_json::from_str(r#"{"secret":"TOPSECRET-NEW"}"#).unwrap();
        let all = format!("{c:?} {a:?} {g:?} {c:#?}");
        assert!(!all.contains("TOPSECRET"), "{all}");
    }
}
