//! `POST /v1/portal/sessions`: a short-lived link into the web portal, for
//! a tenant to hand to the owner of some endpoints (see
//! [`hookfleet_contract::portal`] for what the session may do).

use hookfleet_contract::api_error::responses::{BadRequest, Unauthorized, Unavailable};
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use hookfleet_contract::ApiError;
use hookfleet_contract::auth::Tenant;
use hookfleet_contract::portal::{MAX_LIFETIME_SECS, PortalSession, now_secs};
use serde::{Deserialize, Serialize};

use super::{ApiState, parse_optional_json};

/// The most endpoints one session may name.
const MAX_ENDPOINTS: usize = 100;

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateSession {
    /// How long the link works: `30m`, `1h`, ... at most `24h`; `1h` when
    /// absent.
    #[schema(max_length = 32, example = "1h")]
    expires_in: Option<String>,
    /// Only these endpoints (the tenant's); all of them when absent.
    #[schema(max_items = 100, min_items = 1)]
    endpoint_ids: Option<Vec<String>>,
    /// Reads only: no button that changes anything, and 403 from the API.
    #[serde(default)]
    read_only: bool,
}

/// A portal session.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionView {
    /// Open this (on the API's base URL) in a browser: the portal reads
    /// the session from the fragment, which browsers never send.
    #[schema(example = "/portal/#session=hfs_...")]
    url: String,
    /// The session's bearer token: the portal's calls, nothing else.
    token: String,
    id: String,
    /// RFC 3339.
    expires_at: String,
    /// `null`: all of the tenant's endpoints.
    endpoint_ids: Option<Vec<String>>,
    read_only: bool,
}

#[utoipa::path(post, path = "/v1/portal/sessions", tag = "portal", request_body(content = Option<CreateSession>, description = "Optional: a session of an hour for all endpoints, not read-only"),
    responses((status = 201, description = "Created; the link works until expires_at", body = SessionView), BadRequest, (status = 404, description = "An endpoint of `endpoint_ids` does not exist (or is another tenant's)", body = hookfleet_contract::ErrorBody), Unauthorized, (status = 403, description = "A portal session cannot open another", body = hookfleet_contract::ErrorBody), Unavailable))]
pub async fn create(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    body: Bytes,
) -> Result<(StatusCode, Json<SessionView>), ApiError> {
    let request: CreateSession = parse_optional_json(&body)?;
    let lifetime = lifetime(request.expires_in.as_deref())?;
    if let Some(ids) = &request.endpoint_ids {
        if ids.is_empty() || ids.len() > MAX_ENDPOINTS {
            return Err(invalid(
                "endpoint_ids",
                format!("name 1 to {MAX_ENDPOINTS} endpoints, or leave it out for all"),
            ));
        }
        for id in ids {
            // No endpoint id is longer or holds a NUL (which Postgres
            // could not even be asked about): such an id names none.
            let found = match hookfleet_contract::limits::check_text(id, 64) {
                Ok(()) => state.registry.get(&tenant, id).await.map_err(|error| {
                    tracing::error!(%error, "endpoint registry failed");
                    ApiError::unavailable("the endpoint registry is unreachable; retry")
                })?,
                Err(_) => None,
            };
            if found.is_none() {
                return Err(ApiError::not_found(format!(
                    "endpoint_ids: endpoint {id:?} does not exist"
                )));
            }
        }
    }
    let expires_at = now_secs() + lifetime.as_secs();
    let session = PortalSession {
        id: format!("ps_{}", uuid::Uuid::new_v4().simple()),
        tenant: tenant.as_str().to_owned(),
        endpoint_ids: request.endpoint_ids,
        read_only: request.read_only,
        expires_at,
    };
    let token = state.portal_key.issue(&session);
    tracing::info!(session = %session.id, tenant = %tenant, read_only = session.read_only, "portal session opened");
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(expires_at);
    Ok((
        StatusCode::CREATED,
        Json(SessionView {
            url: format!("/portal/#session={token}"),
            token,
            id: session.id,
            expires_at: humantime::format_rfc3339_seconds(at).to_string(),
            endpoint_ids: session.endpoint_ids,
            read_only: session.read_only,
        }),
    ))
}

/// `expires_in`: a duration from a minute to 24 hours; an hour if absent.
fn lifetime(raw: Option<&str>) -> Result<Duration, ApiError> {
    let Some(raw) = raw else {
        return Ok(Duration::from_secs(3600));
    };
    let lifetime = humantime::parse_duration(raw.trim())
        .map_err(|_| invalid("expires_in", "expected a duration such as 30m or 1h"))?;
    if lifetime < Duration::from_secs(60) || lifetime.as_secs() > MAX_LIFETIME_SECS {
        return Err(invalid("expires_in", "must be between 1m and 24h"));
    }
    Ok(lifetime)
}

fn invalid(field: &str, message: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request("invalid_field", format!("{field}: {message}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_lives_from_a_minute_to_a_day() {
        assert_eq!(lifetime(None).unwrap(), Duration::from_secs(3600));
        assert_eq!(lifetime(Some("24h")).unwrap(), Duration::from_secs(86_400));
        assert!(lifetime(Some("25h")).is_err());
        assert!(lifetime(Some("10s")).is_err());
        assert!(lifetime(Some("soon")).is_err());
    }
}
