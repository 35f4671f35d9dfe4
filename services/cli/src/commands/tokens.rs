//! `hookfleet tokens list | issue | revoke`: a tenant's API tokens, through
//! the producer's admin API.

use serde::Deserialize;
use serde_json::json;

use crate::api::{Api, Body, Service, decode, segment};
use crate::cli::TokensCommand;
use crate::error::CliError;
use crate::output::{Printer, line, or_dash, table};
use crate::when;

#[derive(Debug, Deserialize)]
struct TokenList {
    data: Vec<TokenInfo>,
}

#[derive(Debug, Deserialize)]
struct TokenInfo {
    id: String,
    prefix: String,
    created_at: String,
    expires_at: Option<String>,
    revoked_at: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Issued {
    token: String,
    #[serde(flatten)]
    info: TokenInfo,
}

fn path(tenant: &str) -> String {
    format!("/v1/tenants/{}/tokens", segment(tenant))
}

/// `--expires`: a duration from now (`30d`), in whole seconds.
fn expires_in(raw: &str) -> Result<u64, CliError> {
    humantime::parse_duration(raw)
        .ok()
        .map(|d| d.as_secs())
        .filter(|&s| s > 0)
        .ok_or_else(|| {
            CliError::usage(format!(
                "--expires: {raw:?} is not a duration such as 30d or 12h"
            ))
        })
}

pub async fn run(command: TokensCommand, api: &Api, printer: Printer) -> Result<(), CliError> {
    match command {
        TokensCommand::List { tenant } => {
            let answer = api.get(Service::Producer, &path(&tenant), &[]).await?;
            if printer.json() {
                printer.print_json(&answer);
                return Ok(());
            }
            let list: TokenList = decode(answer)?;
            line(&table(
                &["id", "prefix", "created", "expires", "revoked"],
                list.data.iter().map(|t| {
                    vec![
                        t.id.clone(),
                        t.prefix.clone(),
                        when::show(&t.created_at),
                        or_dash(t.expires_at.as_deref().map(when::show)),
                        or_dash(t.revoked_at.as_deref().map(when::show)),
                    ]
                }),
            ));
        }
        TokensCommand::Issue { tenant, expires } => {
            let body = match expires {
                Some(raw) => Body::Json(json!({ "expires_in": expires_in(&raw)? })),
                None => Body::None,
            };
            let answer = api.post(Service::Producer, &path(&tenant), body).await?;
            if printer.json() {
                printer.print_json(&answer);
                return Ok(());
            }
            let issued: Issued = decode(answer)?;
            line(&format!(
                "token {} for {tenant} (shown only now):",
                issued.info.id
            ));
            line(&issued.token);
            if let Some(at) = issued.info.expires_at {
                line(&format!("expires {}", when::show(&at)));
            }
        }
        TokensCommand::Revoke { tenant, token_id } => {
            api.delete(
                Service::Producer,
                &format!("{}/{}", path(&tenant), segment(&token_id)),
            )
            .await?;
            if printer.json() {
                printer.print_json(&json!({ "revoked": token_id }));
                return Ok(());
            }
            line(&format!("revoked {token_id}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expiry_is_a_duration_from_now() {
        assert_eq!(expires_in("1d").unwrap(), 86_400);
        assert!(expires_in("soon").is_err());
        assert!(expires_in("0s").is_err());
    }
}
