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

/// One problem in an input, at a JSON pointer (`/total`; empty for the
/// whole value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorDetail {
    pub path: String,
    pub message: String,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
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
        serde_json::to_string(&Body {
            error: Detail {
                code: self.code,
                message: &self.message,
                details: &self.details,
            },
        })
        .unwrap_or_default()
    }
}

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
