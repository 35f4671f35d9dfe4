//! The HTTP client of the producer's and the ledger's APIs. Every answer is
//! JSON; every error answer is `{"error": {"code", "message"}}` and becomes
//! a [`CliError::Api`].

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{CliError, chain};
use crate::settings::Settings;

/// Which service a call goes to: they listen on different base URLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Producer,
    Ledger,
}

/// An authenticated client of both services.
#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    producer: reqwest::Url,
    ledger: reqwest::Url,
    token: String,
}

/// A request body: JSON to serialize, or bytes already serialized (an
/// event's payload must reach the API byte for byte).
#[derive(Debug)]
pub enum Body {
    None,
    Json(Value),
    Raw(String),
}

impl Api {
    pub fn new(settings: &Settings) -> Result<Self, CliError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("hookfleet-cli/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| CliError::local("http client", chain(&e)))?;
        Ok(Self {
            http,
            producer: settings.producer.clone(),
            ledger: settings.ledger.clone(),
            token: settings.token()?.to_owned(),
        })
    }

    /// The full URL of `path` on `service`.
    pub fn url(&self, service: Service, path: &str) -> String {
        let base = match service {
            Service::Producer => &self.producer,
            Service::Ledger => &self.ledger,
        };
        format!("{}{path}", base.as_str().trim_end_matches('/'))
    }

    pub async fn get(
        &self,
        service: Service,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Value, CliError> {
        self.call(Method::GET, service, path, query, Body::None)
            .await
    }

    /// Every item of a paged list: `query` (with its `limit`), then again
    /// with `after` = the previous page's `next` until there is none.
    pub async fn all_pages<T: DeserializeOwned>(
        &self,
        service: Service,
        path: &str,
        mut query: Vec<(&'static str, String)>,
    ) -> Result<Vec<T>, CliError> {
        let mut all = Vec::new();
        loop {
            let page: Page<T> = decode(self.get(service, path, &query).await?)?;
            all.extend(page.data);
            let Some(next) = page.next else {
                return Ok(all);
            };
            query.retain(|(key, _)| *key != "after");
            query.push(("after", next));
        }
    }

    pub async fn post(&self, service: Service, path: &str, body: Body) -> Result<Value, CliError> {
        self.call(Method::POST, service, path, &[], body).await
    }

    pub async fn patch(
        &self,
        service: Service,
        path: &str,
        body: Value,
    ) -> Result<Value, CliError> {
        self.call(Method::PATCH, service, path, &[], Body::Json(body))
            .await
    }

    pub async fn put(&self, service: Service, path: &str, body: Body) -> Result<Value, CliError> {
        self.call(Method::PUT, service, path, &[], body).await
    }

    pub async fn delete(&self, service: Service, path: &str) -> Result<Value, CliError> {
        self.call(Method::DELETE, service, path, &[], Body::None)
            .await
    }

    /// One call; the answer's JSON (`null` for an empty body, as 204 has).
    pub async fn call(
        &self,
        method: Method,
        service: Service,
        path: &str,
        query: &[(&str, String)],
        body: Body,
    ) -> Result<Value, CliError> {
        let url = self.url(service, path);
        let mut request = self
            .http
            .request(method, &url)
            .bearer_auth(&self.token)
            .query(query);
        request = match body {
            Body::None => request,
            Body::Json(body) => request.json(&body),
            Body::Raw(text) => request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(text),
        };
        let response = request.send().await.map_err(|e| CliError::Unreachable {
            url: url.clone(),
            reason: chain(&e)
                .trim_start_matches(&format!("error sending request for url ({url}): "))
                .to_owned(),
        })?;
        let status = response.status();
        let text = response.text().await.map_err(|e| CliError::Unreachable {
            url: url.clone(),
            reason: chain(&e),
        })?;
        if status.is_success() {
            if text.trim().is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_str(&text).map_err(|e| {
                CliError::api(
                    "unexpected_answer",
                    format!("{url} answered {status} with something other than JSON: {e}"),
                )
            });
        }
        Err(api_error(service, &url, status, &text))
    }
}

/// The API's error, or a description of an answer that is not one (a
/// proxy's page, or a route the server does not have).
fn api_error(service: Service, url: &str, status: StatusCode, text: &str) -> CliError {
    #[derive(serde::Deserialize)]
    struct Envelope {
        error: Detail,
    }
    #[derive(serde::Deserialize)]
    struct Detail {
        code: String,
        message: String,
        /// Each problem at its place, as for a payload its schema refuses.
        #[serde(default)]
        details: Vec<ProblemAt>,
    }
    #[derive(serde::Deserialize)]
    struct ProblemAt {
        path: String,
        message: String,
    }
    if let Ok(envelope) = serde_json::from_str::<Envelope>(text) {
        let mut message = envelope.error.message;
        for problem in &envelope.error.details {
            let path = if problem.path.is_empty() {
                "(root)"
            } else {
                &problem.path
            };
            message.push_str(&format!("; {path}: {}", problem.message));
        }
        return CliError::api(envelope.error.code, message);
    }
    let hint = match (service, status) {
        (Service::Ledger, StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED) => {
            " (is this the ledger? set --ledger-url or HOOKFLEET_LEDGER_URL)"
        }
        _ => "",
    };
    CliError::api(
        format!("http_{}", status.as_u16()),
        format!("{url} answered {status}{hint}"),
    )
}

/// Decodes an answer into the shape a table is made from.
/// A page of a list answer (`next` goes in `after` for the next one).
#[derive(Debug, serde::Deserialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub next: Option<String>,
}

pub fn decode<T: DeserializeOwned>(value: Value) -> Result<T, CliError> {
    serde_json::from_value(value).map_err(|e| {
        CliError::api(
            "unexpected_answer",
            format!("the answer has an unexpected shape: {e}"),
        )
    })
}

/// A path segment from user input (an id), percent-encoded so it stays one
/// segment.
pub fn segment(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b':' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_answer_keeps_the_api_code_and_message() {
        let error = api_error(
            Service::Producer,
            "http://x/v1/endpoints/ep_1",
            StatusCode::NOT_FOUND,
            r#"{"error": {"code": "not_found", "message": "endpoint \"ep_1\" does not exist"}}"#,
        );
        assert_eq!(
            error.one_line(),
            r#"error: not_found: endpoint "ep_1" does not exist"#
        );
    }

    #[test]
    fn a_bare_404_from_the_wrong_server_says_so() {
        let error = api_error(
            Service::Ledger,
            "http://x/v1/dlq",
            StatusCode::NOT_FOUND,
            "",
        );
        let line = error.one_line();
        assert!(line.starts_with("error: http_404: http://x/v1/dlq answered 404"));
        assert!(line.contains("--ledger-url"));
    }

    #[test]
    fn an_id_stays_one_path_segment() {
        assert_eq!(segment("evt_1.a:b"), "evt_1.a:b");
        assert_eq!(segment("../x y"), "..%2Fx%20y");
    }
}
