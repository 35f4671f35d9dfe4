//! A small webhook receiver for trying hookfleet out: it prints every
//! webhook it gets, checks its Standard Webhooks signature when given the
//! endpoint's secret, and answers 200.

use std::time::Duration;

use clap::Parser;
use hookfleet_signing::{SigningSecret, verify};
use hookfleet_tests::Receiver;

#[derive(Debug, Parser)]
#[command(about = "Prints the webhooks it receives and verifies their signatures")]
struct Cli {
    /// Port to listen on.
    #[arg(long, default_value_t = 9000)]
    port: u16,
    /// Address to listen on: a loopback address of its own, so that the
    /// SSRF allow-list of `scripts/up` can open it and nothing else.
    #[arg(long, default_value = "127.0.0.9")]
    host: std::net::IpAddr,
    /// The endpoint's signing secret (whsec_...), to verify signatures.
    #[arg(long, env = "HOOKFLEET_DEMO_SECRET")]
    secret: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let secret = cli
        .secret
        .as_deref()
        .map(SigningSecret::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--secret: {e}"))?;
    let receiver = Receiver::start_at(cli.host, cli.port).await?;
    println!("demo receiver listening on {}", receiver.url("/"));
    let mut seen = 0;
    loop {
        let received = receiver.wait_for(seen + 1, Duration::from_secs(3600)).await;
        for webhook in &received[seen..] {
            let id = webhook.header("webhook-id").unwrap_or("-");
            let verdict = match (&secret, webhook.header("webhook-signature")) {
                (_, None) => "unsigned".to_owned(),
                (None, Some(_)) => "signed (pass --secret to verify)".to_owned(),
                (Some(secret), Some(signature)) => {
                    let timestamp = webhook
                        .header("webhook-timestamp")
                        .and_then(|t| t.parse().ok())
                        .unwrap_or_default();
                    if verify(secret, signature, id, timestamp, &webhook.body) {
                        "signature verified".to_owned()
                    } else {
                        "SIGNATURE INVALID".to_owned()
                    }
                }
            };
            let body = serde_json::from_slice::<serde_json::Value>(&webhook.body)
                .ok()
                .and_then(|v| serde_json::to_string_pretty(&v).ok())
                .unwrap_or_else(|| String::from_utf8_lossy(&webhook.body).into_owned());
            println!("POST {} webhook-id={id} {verdict}\n{body}", webhook.path);
        }
        seen = received.len();
    }
}
