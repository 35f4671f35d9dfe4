//! The one error shape of hookfleet's HTTP API:
//! `{"error": {"code": "...", "message": "..."}}` with a matching status,
//! and `details` (`[{"path": ..., "message": ...}]`) when there are several
//! problems to name, as for a payload that does not match its schema.

use serde::Serialize;

/// An HTTP API error. `code` is stable and machine-readable; `message` is
/// for people and names the offending field or value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    /// Seconds to send as `Retry-After` (a 429).
    pub retry_after: Option<u64>,
    /// Each problem at its own place; empty for most errors.
    pub details: Vec<ErrorDetail>,
}

/// One problem in an input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// A JSON pointer into the input (`/total`); empty for the whole value.
    pub path: String,
    pub message: String,
}

/// The body of every answer that is not a success.
// The one definition of the shape: `ApiError` is sent as this, and the
// API document's `ErrorBody` schema is derived from it.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody<'a> {
    error: ErrorObject<'a>,
}

/// What went wrong.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorObject<'a> {
    /// Stable and machine-readable: `invalid_field`, `unauthorized`, ...
    code: &'a str,
    /// For people; names the field or value at fault.
    message: &'a str,
    /// Present when several problems are named one by one, as for a
    /// payload that does not match its event type's schema
    /// (`invalid_payload`).
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    #[cfg_attr(feature = "openapi", schema(required = false))]
    details: &'a [ErrorDetail],
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            details: Vec::new(),
        }
    }

    /// Over a per-tenant quota: 429, with when to try again.
    pub fn too_many(message: impl Into<String>, retry_after_secs: u64) -> Self {
        Self {
            retry_after: Some(retry_after_secs.max(1)),
            ..Self::new(429, "quota_exceeded", message)
        }
    }

    /// The same error, naming each problem in `details`.
    pub fn with_details(mut self, details: Vec<ErrorDetail>) -> Self {
        self.details = details;
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(400, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "not_found", message)
    }

    /// The broker or database is unreachable; the client may retry.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "unavailable", message)
    }

    /// An unexpected failure; details go to the log, not the client.
    pub fn internal() -> Self {
        Self::new(500, "internal", "internal error; see the service log")
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(&ErrorBody {
            error: ErrorObject {
                code: self.code,
                message: &self.message,
                details: &self.details,
            },
        })
        .unwrap_or_default()
    }
}

/// The error answers most operations share, for the API document:
/// `responses((status = 200, ...), BadRequest, Unauthorized, Unavailable)`.
/// An operation whose error needs its own words lists it as a tuple. The
/// document that uses them lists `ErrorBody` among its schemas.
#[cfg(feature = "openapi")]
pub mod responses {
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};

    fn error_answer(status: u16, description: &str) -> (String, RefOr<Response>) {
        let body = ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ErrorBody")))
            .build();
        let response = ResponseBuilder::new()
            .description(description)
            .content("application/json", body)
            .build();
        (status.to_string(), RefOr::T(response))
    }

    macro_rules! error_answers {
        ($($(#[$doc:meta])* $name:ident = $status:literal, $description:literal;)*) => {$(
            $(#[$doc])*
            #[derive(Debug)]
            pub struct $name;

            impl utoipa::IntoResponses for $name {
                fn responses() -> std::collections::BTreeMap<String, RefOr<Response>> {
                    [error_answer($status, $description)].into()
                }
            }
        )*};
    }

    error_answers! {
        /// 400, for input the document cannot fully describe.
        BadRequest = 400, "Invalid input; the message names the field";
        /// 401: no token, or one that is unknown, expired or revoked.
        Unauthorized = 401, "Missing or invalid token";
        /// 404: tenants cannot tell another tenant's resource from none.
        NotFound = 404, "No such resource (or another tenant's)";
        /// 503: the caller may retry.
        Unavailable = 503, "Broker or database unreachable; retry";
    }
}

/// The ledger's part of the API document, as the ledger generates it from
/// its handlers (a ledger test keeps this file equal to that). The
/// producer serves it within the one document and forwards its paths, so
/// it needs the ledger's document but not the ledger.
#[cfg(feature = "openapi")]
pub const LEDGER_OPENAPI: &str = include_str!("../openapi/ledger.json");

#[cfg(feature = "axum")]
impl axum::response::IntoResponse for ApiError {
    fn into_response(self) -> axum::response::Response {
        let status = axum::http::StatusCode::from_u16(self.status)
            .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (
            status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            self.to_json(),
        )
            .into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_documented_shape() {
        let error = ApiError::bad_request("invalid_field", "type: must not be empty");
        let json: serde_json::Value = serde_json::from_str(&error.to_json()).unwrap();
        assert_eq!(json["error"]["code"], "invalid_field");
        assert_eq!(json["error"]["message"], "type: must not be empty");
        assert!(json["error"].get("details").is_none());
    }

    #[test]
    fn details_name_each_problem() {
        let error =
            ApiError::bad_request("invalid_payload", "payload: 1 problem").with_details(vec![
                ErrorDetail {
                    path: "/total".into(),
                    message: "is not a number".into(),
                },
            ]);
        let json: serde_json::Value = serde_json::from_str(&error.to_json()).unwrap();
        assert_eq!(json["error"]["details"][0]["path"], "/total");
        assert_eq!(json["error"]["details"][0]["message"], "is not a number");
    }
}
