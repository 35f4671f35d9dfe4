//! `hookfleet listen`: a local receiver for developers, like `stripe
//! listen`. It verifies each webhook's Standard Webhooks signature with the
//! endpoint's secret, answers 200 if it holds and 401 if not, and prints
//! what came: a header line and the payload, pretty.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::routing::any;
use hookfleet_signing::{SigningSecret, verify};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::mpsc;

use crate::api::{Api, Service, segment};
use crate::cli::ListenArgs;
use crate::error::CliError;
use crate::output::{Printer, line};
use crate::settings::Settings;
use crate::when::show_time;

/// How far a `webhook-timestamp` may be from now, as the Standard
/// Webhooks libraries allow: older ones are replays.
const TOLERANCE_SECONDS: i64 = 5 * 60;

/// The outcome of checking one webhook's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Verified,
    NotVerified(&'static str),
}

/// Checks the three Standard Webhooks headers against `body`. Any one of
/// the space-separated signatures may match (two during a rotation).
pub fn check(secret: &SigningSecret, headers: &HeaderMap, body: &[u8], now: i64) -> Verdict {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(id), Some(timestamp), Some(signature)) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    ) else {
        return Verdict::NotVerified("missing webhook-id, webhook-timestamp or webhook-signature");
    };
    let Ok(timestamp) = timestamp.parse::<i64>() else {
        return Verdict::NotVerified("webhook-timestamp is not a number");
    };
    if (now - timestamp).abs() > TOLERANCE_SECONDS {
        return Verdict::NotVerified("webhook-timestamp is more than 5 minutes off");
    }
    if verify(secret, signature, id, timestamp, body) {
        Verdict::Verified
    } else {
        Verdict::NotVerified("no signature matches the secret")
    }
}

/// One webhook as it arrived, for the printer.
#[derive(Debug)]
struct Arrival {
    at: OffsetDateTime,
    method: Method,
    path: String,
    webhook_id: Option<String>,
    status: StatusCode,
    verdict: Verdict,
    body: Bytes,
}

#[derive(Debug, Clone)]
struct Listener {
    secret: SigningSecret,
    arrivals: mpsc::UnboundedSender<Arrival>,
}

pub async fn run(args: ListenArgs, settings: &Settings, printer: Printer) -> Result<(), CliError> {
    let secret = SigningSecret::parse(&args.secret)
        .map_err(|e| CliError::usage(format!("--secret: {e}")))?;
    let socket = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
        .await
        .map_err(|e| CliError::local(format!("listen on 127.0.0.1:{}", args.port), e))?;
    let addr: SocketAddr = socket
        .local_addr()
        .map_err(|e| CliError::local("listen", e))?;
    // The ledger knows each event's type (the webhook does not carry it);
    // asked only when the CLI is configured for the API.
    let ledger = settings
        .has_token()
        .then(|| Api::new(settings))
        .transpose()?;
    let (arrivals, mut queue) = mpsc::unbounded_channel();
    let app = Router::new()
        .fallback(any(receive))
        .with_state(Listener { secret, arrivals });
    let serving = tokio::spawn(async move {
        axum::serve(socket, app)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
    });
    // On stdout for people (and tests) to read the port from; with JSON,
    // stdout holds only webhooks.
    if printer.json() {
        eprintln!("listening on http://{addr}/");
    } else {
        line(&format!("listening on http://{addr}/"));
    }
    // Printed in arrival order, after the receiver has answered.
    let printing = async {
        while let Some(arrival) = queue.recv().await {
            let event_type = match (&ledger, &arrival.webhook_id) {
                (Some(api), Some(id)) => event_type(api, id).await,
                _ => None,
            }
            .or_else(|| payload_type(&arrival.body));
            print(&arrival, event_type.as_deref(), printer);
        }
    };
    tokio::select! {
        served = serving => match served {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(CliError::local("listen", e)),
            Err(e) => Err(CliError::local("listen", e)),
        },
        () = printing => Ok(()),
    }
}

async fn receive(
    State(listener): State<Listener>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let (status, verdict, reply) = if method != Method::POST {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            Verdict::NotVerified("webhooks are POSTed"),
            "webhooks are POSTed\n",
        )
    } else {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        match check(&listener.secret, &headers, &body, now) {
            Verdict::Verified => (StatusCode::OK, Verdict::Verified, "ok\n"),
            not => (StatusCode::UNAUTHORIZED, not, "signature not verified\n"),
        }
    };
    let _ = listener.arrivals.send(Arrival {
        at: OffsetDateTime::now_utc(),
        method,
        path: uri.path().to_owned(),
        webhook_id: headers
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        status,
        verdict,
        body,
    });
    (status, reply)
}

/// The event's type from the ledger. The ledger may record the event a
/// moment after the worker delivers it, so a miss is retried briefly.
async fn event_type(api: &Api, id: &str) -> Option<String> {
    for _ in 0..10 {
        match api
            .get(Service::Ledger, &format!("/v1/events/{}", segment(id)), &[])
            .await
        {
            Ok(event) => return event["type"].as_str().map(str::to_owned),
            Err(CliError::Api { code, .. }) if code == "not_found" => {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(_) => return None,
        }
    }
    None
}

/// A payload's own `type` field, which many webhook payloads have.
fn payload_type(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<Value>(body)
        .ok()?
        .get("type")?
        .as_str()
        .map(str::to_owned)
}

fn print(arrival: &Arrival, event_type: Option<&str>, printer: Printer) {
    let payload = serde_json::from_slice::<Value>(&arrival.body).ok();
    let (verified, reason) = match &arrival.verdict {
        Verdict::Verified => (true, None),
        Verdict::NotVerified(reason) => (false, Some(*reason)),
    };
    if printer.json() {
        line(
            &json!({
                "received_at": arrival.at.format(&Rfc3339).ok(),
                "method": arrival.method.as_str(),
                "path": arrival.path,
                "status": arrival.status.as_u16(),
                "webhook_id": arrival.webhook_id,
                "event_type": event_type,
                "verified": verified,
                "reason": reason,
                "payload": payload
                    .clone()
                    .unwrap_or_else(|| Value::String(String::from_utf8_lossy(&arrival.body).into_owned())),
            })
            .to_string(),
        );
        return;
    }
    let verdict = match reason {
        None => "verified".to_owned(),
        Some(reason) => format!("not verified ({reason})"),
    };
    line(&format!(
        "{}  {} {}  {}  {}  {}  {}",
        show_time(arrival.at),
        arrival.method,
        arrival.path,
        arrival.status.as_u16(),
        event_type.unwrap_or("-"),
        arrival.webhook_id.as_deref().unwrap_or("-"),
        verdict,
    ));
    let body = payload
        .and_then(|p| serde_json::to_string_pretty(&p).ok())
        .unwrap_or_else(|| String::from_utf8_lossy(&arrival.body).into_owned());
    line(&body);
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookfleet_signing::signature_header;

    const NOW: i64 = 1_800_000_000;

    fn signed(secret: &SigningSecret, timestamp: i64, body: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("webhook-id", "evt_1".parse().unwrap());
        headers.insert("webhook-timestamp", timestamp.to_string().parse().unwrap());
        let other = SigningSecret::generate();
        let signature = signature_header(&[other, secret.clone()], "evt_1", timestamp, body);
        headers.insert("webhook-signature", signature.parse().unwrap());
        headers
    }

    #[test]
    fn any_matching_signature_verifies() {
        let secret = SigningSecret::generate();
        let headers = signed(&secret, NOW, b"{}");
        assert_eq!(check(&secret, &headers, b"{}", NOW), Verdict::Verified);
    }

    #[test]
    fn a_wrong_secret_a_changed_body_or_an_old_timestamp_does_not() {
        let secret = SigningSecret::generate();
        let headers = signed(&secret, NOW, b"{}");
        assert!(matches!(
            check(&SigningSecret::generate(), &headers, b"{}", NOW),
            Verdict::NotVerified(_)
        ));
        assert!(matches!(
            check(&secret, &headers, b"{\"x\":1}", NOW),
            Verdict::NotVerified(_)
        ));
        assert!(matches!(
            check(&secret, &headers, b"{}", NOW + 3600),
            Verdict::NotVerified(m) if m.contains("5 minutes")
        ));
        assert!(matches!(
            check(&secret, &HeaderMap::new(), b"{}", NOW),
            Verdict::NotVerified(m) if m.contains("missing")
        ));
    }
}
