//! Portal sessions: short-lived bearer tokens a tenant hands to the owner
//! of some endpoints, for the web portal (`/portal/`).
//!
//! A session token is the session itself, signed: `hfs_` + base64url of
//! its JSON + `.` + base64url of an HMAC-SHA256 over that, keyed from the
//! services' `secrets.key` (so the producer and the ledger both check it,
//! with no table and no lookup). It cannot be revoked; it lives at most
//! [`MAX_LIFETIME_SECS`], which is why it is short.
//!
//! What a session may call is [`access`]: the portal's calls and nothing
//! else, on its tenant, to reads only when `read_only`, and about its
//! endpoints only when it names some (answers listing other endpoints'
//! items are filtered down). Anything else is 403.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// How a session token starts (API tokens start `hf_`).
pub const SESSION_PREFIX: &str = "hfs_";
/// The longest a session may live: 24 hours.
pub const MAX_LIFETIME_SECS: u64 = 24 * 3600;

/// What a session token grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortalSession {
    /// `ps_` + 32 hex digits; names the session in logs.
    pub id: String,
    pub tenant: String,
    /// Only these endpoints; all of the tenant's when `None`.
    pub endpoint_ids: Option<Vec<String>>,
    pub read_only: bool,
    /// Seconds since the epoch.
    pub expires_at: u64,
}

/// Why a session token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("the portal session is not valid")]
    Invalid,
    #[error("the portal session has expired; ask for a new one")]
    Expired,
}

/// The key that signs and checks session tokens.
#[derive(Clone)]
pub struct PortalKey([u8; 32]);

impl std::fmt::Debug for PortalKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PortalKey(..)")
    }
}

impl PortalKey {
    /// Derived from the services' `secrets.key` (base64), so that the key
    /// sealing signing secrets never signs anything else itself.
    pub fn derive(secrets_key: &str) -> Self {
        let mut mac = Hmac::<Sha256>::new_from_slice(secrets_key.trim().as_bytes())
            .expect("HMAC takes a key of any length");
        mac.update(b"hookfleet portal session v1");
        Self(mac.finalize().into_bytes().into())
    }

    fn mac(&self, data: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("32-byte key");
        mac.update(data);
        mac
    }

    /// The bearer token for `session`.
    pub fn issue(&self, session: &PortalSession) -> String {
        let claims = URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(session).expect("a session always serializes"));
        let tag = URL_SAFE_NO_PAD.encode(self.mac(claims.as_bytes()).finalize().into_bytes());
        format!("{SESSION_PREFIX}{claims}.{tag}")
    }

    /// The session a token holds, if this key signed it and it has not
    /// expired at `now` (seconds since the epoch).
    pub fn open(&self, token: &str, now: u64) -> Result<PortalSession, SessionError> {
        let (claims, tag) = token
            .strip_prefix(SESSION_PREFIX)
            .and_then(|rest| rest.split_once('.'))
            .ok_or(SessionError::Invalid)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| SessionError::Invalid)?;
        self.mac(claims.as_bytes())
            .verify_slice(&tag)
            .map_err(|_| SessionError::Invalid)?;
        let json = URL_SAFE_NO_PAD
            .decode(claims)
            .map_err(|_| SessionError::Invalid)?;
        let session: PortalSession =
            serde_json::from_slice(&json).map_err(|_| SessionError::Invalid)?;
        if now >= session.expires_at {
            return Err(SessionError::Expired);
        }
        Ok(session)
    }
}

/// Seconds since the epoch, now.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What a session may do with one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Serve it as for the tenant.
    Allowed,
    /// Serve it, then keep only what is about the session's endpoints.
    Filtered(Filter),
    /// A replay: allowed when its body names one of the session's
    /// endpoints (a replay to every endpoint would reach others).
    ReplayToOwnEndpoint,
    Forbidden(&'static str),
}

/// Which items of an answer name an endpoint, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// `data[].id`: the endpoint list.
    Endpoints,
    /// `data[].endpoint_id`: attempts, parked messages.
    Items,
    /// `deliveries[].endpoint_id` and `attempts[].endpoint_id`: an event.
    Event,
}

impl PortalSession {
    fn may_see(&self, endpoint: &str) -> bool {
        self.endpoint_ids
            .as_ref()
            .is_none_or(|ids| ids.iter().any(|id| id == endpoint))
    }

    fn limited(&self) -> bool {
        self.endpoint_ids.is_some()
    }

    /// Whether this session may see `endpoint`'s items (public for the
    /// replay check).
    pub fn covers(&self, endpoint: &str) -> bool {
        self.may_see(endpoint)
    }

    /// Keeps the items of `answer` (a JSON body of a [`Filter`]ed call)
    /// that are about this session's endpoints.
    pub fn filter(&self, filter: Filter, answer: &mut serde_json::Value) {
        if !self.limited() {
            return;
        }
        let keep = |list: Option<&mut serde_json::Value>, key: &str| {
            if let Some(serde_json::Value::Array(items)) = list {
                items.retain(|item| item[key].as_str().is_some_and(|id| self.may_see(id)));
            }
        };
        match filter {
            Filter::Endpoints => keep(answer.get_mut("data"), "id"),
            Filter::Items => keep(answer.get_mut("data"), "endpoint_id"),
            Filter::Event => {
                keep(answer.get_mut("deliveries"), "endpoint_id");
                keep(answer.get_mut("attempts"), "endpoint_id");
            }
        }
    }
}

/// What `session` may do with `method` on `path`: the portal's calls, on
/// its endpoints, and only reads when it is read-only.
pub fn access(session: &PortalSession, method: &str, path: &str) -> Access {
    use Access::{Allowed, Filtered, Forbidden};
    let read = method == "GET" || method == "HEAD";
    if !read && session.read_only {
        return Forbidden("this portal session is read-only");
    }
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let endpoint = |id: &str, then: Access| {
        if session.may_see(id) {
            then
        } else {
            Forbidden("this portal session is limited to other endpoints")
        }
    };
    let limited = session.limited();
    match (method, segments.as_slice()) {
        ("GET", ["v1", "endpoints"]) => Filtered(Filter::Endpoints),
        ("POST", ["v1", "endpoints"]) if limited => {
            Forbidden("a portal session limited to endpoints cannot create one")
        }
        ("POST", ["v1", "endpoints"]) => Allowed,
        ("GET" | "PATCH" | "DELETE", ["v1", "endpoints", id]) => endpoint(id, Allowed),
        ("POST", ["v1", "endpoints", id, "disable" | "enable" | "recover"]) => {
            endpoint(id, Allowed)
        }
        ("POST", ["v1", "endpoints", id, "secret", "rotate"]) => endpoint(id, Allowed),
        ("GET", ["v1", "endpoints", id, "attempts" | "stats"]) => endpoint(id, Allowed),
        ("GET", ["v1", "attempts"]) => Filtered(Filter::Items),
        ("GET", ["v1", "events", _]) => Filtered(Filter::Event),
        ("GET", ["v1", "events", _, "attempts"]) => Filtered(Filter::Items),
        ("POST", ["v1", "events", _, "replay"]) if limited => Access::ReplayToOwnEndpoint,
        ("POST", ["v1", "events", _, "replay"]) => Allowed,
        ("POST", ["v1", "events"]) if limited => Forbidden(
            "a portal session limited to endpoints cannot send events (they reach every subscriber)",
        ),
        ("POST", ["v1", "events"]) => Allowed,
        ("GET", ["v1", "recoveries", _]) => Allowed,
        ("GET", ["v1", "dlq"]) => Filtered(Filter::Items),
        ("POST", ["v1", "dlq", "requeue"]) if limited => {
            Forbidden("a portal session limited to endpoints cannot requeue the tenant's messages")
        }
        ("POST", ["v1", "dlq", "requeue"]) => Allowed,
        ("GET", ["v1", "event-types"] | ["v1", "event-types", _]) => Allowed,
        _ => Forbidden("a portal session may call only what the portal uses"),
    }
}

#[cfg(feature = "axum")]
mod guard {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::extract::{Request, State};
    use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
    use axum::middleware::Next;
    use axum::response::{IntoResponse, Response};

    use super::{Access, PortalKey, SESSION_PREFIX, SessionError, access, now_secs};
    use crate::api_error::ApiError;
    use crate::auth::bearer;
    use crate::domain::TenantId;

    /// The most of a filtered answer read into memory (a page of 500
    /// attempts is far below).
    const MAX_FILTERED_BYTES: usize = 16 * 1024 * 1024;
    /// The most of a replay's body read to check it.
    const MAX_REPLAY_BODY: usize = 64 * 1024;

    /// The tenant of a checked portal session, for the [`crate::auth::Tenant`]
    /// extractor.
    #[derive(Debug, Clone)]
    pub struct SessionTenant(pub TenantId);

    fn forbidden(message: &str) -> Response {
        ApiError::new(403, "forbidden", message).into_response()
    }

    /// Middleware in front of the API: a request carrying a session token
    /// is checked against [`access`] before it is served (403 when the
    /// session may not make it, 401 when the token is expired or forged),
    /// and a listing is filtered down to the session's endpoints after.
    /// Any other request passes untouched.
    pub async fn guard(
        State(key): State<Arc<PortalKey>>,
        request: Request,
        next: Next,
    ) -> Response {
        let token = bearer(
            request
                .headers()
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok()),
        );
        let Some(token) = token.filter(|t| t.starts_with(SESSION_PREFIX)) else {
            return next.run(request).await;
        };
        let session = match key.open(token, now_secs()) {
            Ok(session) => session,
            Err(SessionError::Expired) => {
                return ApiError::new(401, "session_expired", SessionError::Expired.to_string())
                    .into_response();
            }
            Err(SessionError::Invalid) => {
                return ApiError::new(401, "unauthorized", SessionError::Invalid.to_string())
                    .into_response();
            }
        };
        let Ok(tenant) = TenantId::parse(&session.tenant) else {
            return ApiError::new(401, "unauthorized", "the portal session is not valid")
                .into_response();
        };
        let (mut parts, body) = request.into_parts();
        let verdict = access(&session, parts.method.as_str(), parts.uri.path());
        let body = match verdict {
            Access::Forbidden(why) => return forbidden(why),
            Access::ReplayToOwnEndpoint => {
                let Ok(bytes) = axum::body::to_bytes(body, MAX_REPLAY_BODY).await else {
                    return ApiError::bad_request("invalid_body", "the body is too large")
                        .into_response();
                };
                let named = serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()
                    .and_then(|v| v["endpoint_id"].as_str().map(str::to_owned));
                match named {
                    Some(id) if session.covers(&id) => Body::from(bytes),
                    _ => {
                        return forbidden(
                            "this portal session may replay only to its own endpoints: name one as endpoint_id",
                        );
                    }
                }
            }
            Access::Allowed | Access::Filtered(_) => body,
        };
        parts.extensions.insert(SessionTenant(tenant));
        let response = next.run(Request::from_parts(parts, body)).await;
        let Access::Filtered(filter) = verdict else {
            return response;
        };
        let is_json = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !response.status().is_success() || !is_json {
            return response;
        }
        let (mut parts, body) = response.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, MAX_FILTERED_BYTES).await else {
            return ApiError::internal().into_response();
        };
        let Ok(mut answer) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            return ApiError::internal().into_response();
        };
        session.filter(filter, &mut answer);
        let filtered = answer.to_string();
        parts.headers.remove(CONTENT_LENGTH);
        Response::from_parts(parts, Body::from(filtered))
    }
}

#[cfg(feature = "axum")]
pub use guard::{SessionTenant, guard};

#[cfg(test)]
mod tests {
    use super::*;

    fn session(endpoints: Option<&[&str]>, read_only: bool) -> PortalSession {
        PortalSession {
            id: "ps_1".into(),
            tenant: "acme".into(),
            endpoint_ids: endpoints.map(|ids| ids.iter().map(|s| (*s).to_owned()).collect()),
            read_only,
            expires_at: 2_000,
        }
    }

    #[test]
    fn a_token_opens_to_its_session_until_it_expires() {
        let key = PortalKey::derive("a-secrets-key");
        let s = session(Some(&["ep_1"]), true);
        let token = key.issue(&s);
        assert!(token.starts_with("hfs_"));
        assert_eq!(key.open(&token, 1_999), Ok(s));
        assert_eq!(key.open(&token, 2_000), Err(SessionError::Expired));
    }

    #[test]
    fn a_token_signed_with_another_key_or_changed_is_refused() {
        let key = PortalKey::derive("a-secrets-key");
        let token = key.issue(&session(Some(&["ep_1"]), true));
        let other = PortalKey::derive("another-key");
        assert_eq!(other.open(&token, 0), Err(SessionError::Invalid));
        // Claims swapped for a wider session's, tag kept.
        let wider = key.issue(&session(None, false));
        let (_, tag) = token.split_once('.').unwrap();
        let (claims, _) = wider.split_once('.').unwrap();
        assert_eq!(
            key.open(&format!("{claims}.{tag}"), 0),
            Err(SessionError::Invalid)
        );
        assert_eq!(key.open("hf_abc", 0), Err(SessionError::Invalid));
        assert_eq!(key.open("hfs_abc", 0), Err(SessionError::Invalid));
    }

    #[test]
    fn a_read_only_session_may_only_read() {
        let s = session(None, true);
        assert_eq!(access(&s, "GET", "/v1/endpoints/ep_1"), Access::Allowed);
        assert!(matches!(
            access(&s, "POST", "/v1/endpoints/ep_1/secret/rotate"),
            Access::Forbidden(_)
        ));
        assert!(matches!(
            access(&s, "POST", "/v1/events/ev_1/replay"),
            Access::Forbidden(_)
        ));
    }

    #[test]
    fn a_session_calls_only_the_portals_paths() {
        let s = session(None, false);
        for (method, path) in [
            ("POST", "/v1/portal/sessions"),
            ("POST", "/v1/tenants"),
            ("GET", "/v1/sources"),
            ("PUT", "/v1/event-types/order.paid"),
            ("POST", "/v1/events/batch"),
        ] {
            assert!(
                matches!(access(&s, method, path), Access::Forbidden(_)),
                "{method} {path}"
            );
        }
        assert_eq!(access(&s, "POST", "/v1/endpoints"), Access::Allowed);
    }

    #[test]
    fn a_session_limited_to_endpoints_sees_only_theirs() {
        let s = session(Some(&["ep_1"]), false);
        assert_eq!(access(&s, "DELETE", "/v1/endpoints/ep_1"), Access::Allowed);
        assert!(matches!(
            access(&s, "GET", "/v1/endpoints/ep_2/stats"),
            Access::Forbidden(_)
        ));
        assert!(matches!(
            access(&s, "POST", "/v1/endpoints"),
            Access::Forbidden(_)
        ));
        assert_eq!(
            access(&s, "POST", "/v1/events/ev_1/replay"),
            Access::ReplayToOwnEndpoint
        );
        let mut page = serde_json::json!({"data": [
            {"id": "a1", "endpoint_id": "ep_1"}, {"id": "a2", "endpoint_id": "ep_2"}
        ], "next": null});
        s.filter(Filter::Items, &mut page);
        assert_eq!(page["data"].as_array().unwrap().len(), 1);
        assert_eq!(page["data"][0]["id"], "a1");
    }
}
