//! Who is calling: API tokens name a tenant; the admin token (from config)
//! manages tenants. Tokens are `hf_` + 43 characters of base64url, stored
//! only as their SHA-256.

use crate::TenantId;
use crate::api_error::ApiError;

/// The tenant-scoped token store, as the HTTP layer sees it.
pub trait Authenticate {
    /// The tenant a (valid, unrevoked) token belongs to.
    fn tenant_for(
        &self,
        token: &str,
    ) -> impl std::future::Future<Output = Result<Option<TenantId>, ApiError>> + Send;
    /// The configured admin token, if the admin API is enabled.
    fn admin_token(&self) -> Option<&str>;
}

/// The token in an `Authorization: Bearer ...` header value.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let value = header?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

pub fn unauthorized(message: &str) -> ApiError {
    ApiError::new(401, "unauthorized", message)
}

#[cfg(feature = "axum")]
mod extract {
    use axum::extract::FromRequestParts;
    use axum::http::header::AUTHORIZATION;
    use axum::http::request::Parts;
    use subtle::ConstantTimeEq;

    use super::{Authenticate, bearer, unauthorized};
    use crate::TenantId;
    use crate::api_error::ApiError;

    fn token(parts: &Parts) -> Result<&str, ApiError> {
        bearer(
            parts
                .headers
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok()),
        )
        .ok_or_else(|| unauthorized("send the API token as: Authorization: Bearer <token>"))
    }

    /// The calling tenant, from its API token. Rejects with 401.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Tenant(pub TenantId);

    impl<S: Authenticate + Send + Sync> FromRequestParts<S> for Tenant {
        type Rejection = ApiError;

        async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
            // A portal session the guard in front has checked.
            if let Some(session) = parts.extensions.get::<crate::portal::SessionTenant>() {
                return Ok(Tenant(session.0.clone()));
            }
            let token = token(parts)?;
            state
                .tenant_for(token)
                .await?
                .map(Tenant)
                .ok_or_else(|| unauthorized("the API token is not valid"))
        }
    }

    /// A caller holding the admin token. Rejects with 401.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Admin;

    impl<S: Authenticate + Send + Sync> FromRequestParts<S> for Admin {
        type Rejection = ApiError;

        async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
            let token = token(parts)?;
            match state.admin_token() {
                Some(admin) if bool::from(admin.as_bytes().ct_eq(token.as_bytes())) => Ok(Admin),
                Some(_) => Err(unauthorized("the admin token is not valid")),
                None => Err(unauthorized(
                    "the admin API is off: set auth.admin_token to enable it",
                )),
            }
        }
    }
}

#[cfg(feature = "axum")]
pub use extract::{Admin, Tenant};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_from_the_header() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(None), None);
    }
}
