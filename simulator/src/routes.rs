//! Routing: turns a method and path into a [`Route`] (with its path
//! parameters) and names the API [`Operation`] it stands for.
//!
//! One table serves both the dispatcher and the request log, so the operation
//! recorded for a request is always the one that was executed.

use hyper::Method;

/// Path of the Keycloak token endpoint on the simulator.
pub(crate) const TOKEN_PATH: &str = "/auth/realms/contabo/protocol/openid-connect/token";

/// Prefix of the simulator's marker route: a test's `on_change` (or any
/// process) POSTs `/_sim/mark/LABEL` to record LABEL in the request log, so
/// that the order of a sink write and the API calls can be asserted.
pub const MARK_PATH: &str = "/_sim/mark/";

/// The API operations the simulator serves, named after the spec's operationIds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// `POST …/openid-connect/token` (password or refresh-token grant).
    Token,
    /// `GET /v1/users`.
    RetrieveUserList,
    /// `POST /v1/users`.
    CreateUser,
    /// `GET /v1/users/{userId}`.
    RetrieveUser,
    /// `PATCH /v1/users/{userId}`.
    UpdateUser,
    /// `DELETE /v1/users/{userId}`.
    DeleteUser,
    /// `GET /v1/users/client`.
    RetrieveUserClient,
    /// `PUT /v1/users/client/secret`.
    GenerateClientSecret,
    /// `GET /v1/users/{userId}/object-storages/credentials`.
    ListObjectStorageCredentials,
    /// `GET /v1/users/{userId}/object-storages/{objectStorageId}/credentials/{credentialId}`.
    GetObjectStorageCredentials,
    /// `PATCH /v1/users/{userId}/object-storages/{objectStorageId}/credentials/{credentialId}`.
    RegenerateObjectStorageCredentials,
    /// `POST /v1/users/{userId}/reset-password`.
    ResetPassword,
    /// `POST /v1/users/{userId}/resend-email-verification`.
    ResendEmailVerification,
    /// `GET /v1/object-storages`.
    RetrieveObjectStorageList,
    /// `POST /_sim/mark/{label}`: not the API; a test's marker in the
    /// request log (see [`MARK_PATH`]).
    Mark,
    /// Any other path, or a known path with the wrong method.
    Unknown,
}

impl Operation {
    /// True for operations that change server state.
    pub fn is_mutating(&self) -> bool {
        matches!(
            self,
            Operation::CreateUser
                | Operation::UpdateUser
                | Operation::DeleteUser
                | Operation::GenerateClientSecret
                | Operation::RegenerateObjectStorageCredentials
                | Operation::ResetPassword
                | Operation::ResendEmailVerification
        )
    }
}

/// Path parameters of the single-credential endpoints. `credential_id` stays
/// raw so the handler can answer a non-integer with a JSON 400.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CredentialPath {
    pub user_id: String,
    pub object_storage_id: String,
    pub credential_id: String,
}

/// A routed request: which handler runs, with which path parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Route {
    Token,
    Mark(String),
    ListUsers,
    CreateUser,
    GetUser(String),
    UpdateUser(String),
    DeleteUser(String),
    GetClient,
    GenerateClientSecret,
    ListCredentials(String),
    GetCredential(CredentialPath),
    RegenerateCredential(CredentialPath),
    ResetPassword(String),
    ResendEmailVerification(String),
    ListObjectStorages,
    /// The path exists but not with this method.
    MethodNotAllowed,
    NotFound,
}

impl Route {
    /// Routes `method` and `path` (without the query string).
    pub(super) fn parse(method: &Method, path: &str) -> Route {
        if path == TOKEN_PATH {
            return if method == Method::POST {
                Route::Token
            } else {
                Route::MethodNotAllowed
            };
        }
        let Some(rest) = path.strip_prefix('/') else {
            return Route::NotFound;
        };
        let segs: Vec<&str> = rest.split('/').collect();
        if segs.iter().any(|s| s.is_empty()) {
            return Route::NotFound;
        }
        let m = method.clone();
        let own = |s: &str| s.to_owned();
        match segs.as_slice() {
            ["v1", "users"] => match m {
                Method::GET => Route::ListUsers,
                Method::POST => Route::CreateUser,
                _ => Route::MethodNotAllowed,
            },
            ["v1", "users", "client"] => match m {
                Method::GET => Route::GetClient,
                _ => Route::MethodNotAllowed,
            },
            ["v1", "users", "client", "secret"] => match m {
                Method::PUT => Route::GenerateClientSecret,
                _ => Route::MethodNotAllowed,
            },
            ["v1", "users", id] => match m {
                Method::GET => Route::GetUser(own(id)),
                Method::PATCH => Route::UpdateUser(own(id)),
                Method::DELETE => Route::DeleteUser(own(id)),
                _ => Route::MethodNotAllowed,
            },
            ["v1", "users", id, "reset-password"] => match m {
                Method::POST => Route::ResetPassword(own(id)),
                _ => Route::MethodNotAllowed,
            },
            ["v1", "users", id, "resend-email-verification"] => match m {
                Method::POST => Route::ResendEmailVerification(own(id)),
                _ => Route::MethodNotAllowed,
            },
            ["v1", "users", id, "object-storages", "credentials"] => match m {
                Method::GET => Route::ListCredentials(own(id)),
                _ => Route::MethodNotAllowed,
            },
            ["v1", "users", id, "object-storages", storage, "credentials", cred] => {
                let p = CredentialPath {
                    user_id: own(id),
                    object_storage_id: own(storage),
                    credential_id: own(cred),
                };
                match m {
                    Method::GET => Route::GetCredential(p),
                    Method::PATCH => Route::RegenerateCredential(p),
                    _ => Route::MethodNotAllowed,
                }
            }
            ["_sim", "mark", label] => match m {
                Method::POST => Route::Mark(own(label)),
                _ => Route::MethodNotAllowed,
            },
            ["v1", "object-storages"] => match m {
                Method::GET => Route::ListObjectStorages,
                _ => Route::MethodNotAllowed,
            },
            _ => Route::NotFound,
        }
    }

    /// The operation this route performs.
    pub(super) fn operation(&self) -> Operation {
        match self {
            Route::Token => Operation::Token,
            Route::Mark(_) => Operation::Mark,
            Route::ListUsers => Operation::RetrieveUserList,
            Route::CreateUser => Operation::CreateUser,
            Route::GetUser(_) => Operation::RetrieveUser,
            Route::UpdateUser(_) => Operation::UpdateUser,
            Route::DeleteUser(_) => Operation::DeleteUser,
            Route::GetClient => Operation::RetrieveUserClient,
            Route::GenerateClientSecret => Operation::GenerateClientSecret,
            Route::ListCredentials(_) => Operation::ListObjectStorageCredentials,
            Route::GetCredential(_) => Operation::GetObjectStorageCredentials,
            Route::RegenerateCredential(_) => Operation::RegenerateObjectStorageCredentials,
            Route::ResetPassword(_) => Operation::ResetPassword,
            Route::ResendEmailVerification(_) => Operation::ResendEmailVerification,
            Route::ListObjectStorages => Operation::RetrieveObjectStorageList,
            Route::MethodNotAllowed | Route::NotFound => Operation::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_map_to_operations() {
        let cases: &[(Method, &str, Operation)] = &[
            (Method::POST, TOKEN_PATH, Operation::Token),
            (Method::GET, TOKEN_PATH, Operation::Unknown),
            (Method::GET, "/v1/users", Operation::RetrieveUserList),
            (Method::POST, "/v1/users", Operation::CreateUser),
            (
                Method::GET,
                "/v1/users/client",
                Operation::RetrieveUserClient,
            ),
            (Method::PATCH, "/v1/users/client", Operation::Unknown),
            (
                Method::PUT,
                "/v1/users/client/secret",
                Operation::GenerateClientSecret,
            ),
            (Method::GET, "/v1/users/abc", Operation::RetrieveUser),
            (Method::PATCH, "/v1/users/abc", Operation::UpdateUser),
            (Method::DELETE, "/v1/users/abc", Operation::DeleteUser),
            (
                Method::POST,
                "/v1/users/abc/reset-password",
                Operation::ResetPassword,
            ),
            (
                Method::POST,
                "/v1/users/abc/resend-email-verification",
                Operation::ResendEmailVerification,
            ),
            (
                Method::GET,
                "/v1/users/abc/object-storages/credentials",
                Operation::ListObjectStorageCredentials,
            ),
            (
                Method::GET,
                "/v1/users/abc/object-storages/os1/credentials/7",
                Operation::GetObjectStorageCredentials,
            ),
            (
                Method::PATCH,
                "/v1/users/abc/object-storages/os1/credentials/7",
                Operation::RegenerateObjectStorageCredentials,
            ),
            (
                Method::GET,
                "/v1/object-storages",
                Operation::RetrieveObjectStorageList,
            ),
            (Method::GET, "/v1/users/", Operation::Unknown),
            (Method::GET, "/v2/users", Operation::Unknown),
            (Method::GET, "/", Operation::Unknown),
        ];
        for (method, path, op) in cases {
            assert_eq!(
                Route::parse(method, path).operation(),
                *op,
                "{method} {path}"
            );
        }
        assert!(Operation::RegenerateObjectStorageCredentials.is_mutating());
        assert!(!Operation::Token.is_mutating());
        assert!(!Operation::RetrieveUserClient.is_mutating());
    }
}
