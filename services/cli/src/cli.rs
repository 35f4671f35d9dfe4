//! The command line, as clap parses it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "hookfleet",
    version,
    about = "Manage hookfleet endpoints and events, follow deliveries, receive webhooks locally",
    after_help = "Exit codes: 0 ok, 1 API or network error, 2 usage error."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

const GLOBAL: &str = "Global options";

/// Where the API is and how to print; every subcommand takes these.
#[derive(Debug, Args)]
pub struct Global {
    /// The API's base URL: every call goes there [default: http://127.0.0.1:8080].
    #[arg(long, env = "HOOKFLEET_URL", global = true, help_heading = GLOBAL)]
    pub url: Option<String>,
    /// Send the ledger's calls (events, attempts, replay, recover, dlq)
    /// to the ledger directly, not through --url [default: --url].
    #[arg(long, env = "HOOKFLEET_LEDGER_URL", global = true, help_heading = GLOBAL)]
    pub ledger_url: Option<String>,
    /// The tenant's API token.
    #[arg(long, env = "HOOKFLEET_TOKEN", global = true, hide_env_values = true, help_heading = GLOBAL)]
    pub token: Option<String>,
    /// A TOML file with `url`, `ledger_url` and `token` [default: ~/.config/hookfleet/cli.toml if it exists].
    #[arg(long, env = "HOOKFLEET_CLI_CONFIG", global = true, help_heading = GLOBAL)]
    pub config: Option<PathBuf>,
    /// `table` for people, `json` (the API's own answer) for scripts.
    #[arg(long, short, value_enum, default_value_t = Output::Table, global = true, help_heading = GLOBAL)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Register, inspect and change endpoints.
    #[command(subcommand)]
    Endpoints(EndpointsCommand),
    /// Send events and see how they were delivered.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Inbound sources: receive GitHub, Stripe, Shopify and Standard
    /// Webhooks deliveries as your events.
    #[command(subcommand)]
    Sources(SourcesCommand),
    /// Delivery attempts, newest first.
    #[command(subcommand)]
    Attempts(AttemptsCommand),
    /// Send an event again, to one endpoint or to every endpoint it went to.
    Replay(ReplayArgs),
    /// Resend to an endpoint everything it has not received since a time,
    /// and show the progress until done.
    Recover(RecoverArgs),
    /// The tenant's messages in the dead-letter queue.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// The event-type catalogue: types, their JSON Schemas and versions.
    #[command(subcommand)]
    EventTypes(EventTypesCommand),
    /// Receive webhooks on 127.0.0.1, verify their signatures and print them.
    Listen(ListenArgs),
    /// Follow deliveries as they happen, one line each (Ctrl-C to stop).
    Tail(TailArgs),
    /// A tenant's API tokens (the admin API: needs the admin token).
    Tokens(TokensArgs),
    /// The web portal for endpoints and delivery logs.
    #[command(subcommand)]
    Portal(PortalCommand),
}

#[derive(Debug, Subcommand)]
pub enum PortalCommand {
    /// Print a link that opens the portal with a new, short-lived session.
    Open(PortalOpenArgs),
}

#[derive(Debug, Args)]
pub struct PortalOpenArgs {
    /// How long the link works (at most 24h).
    #[arg(long, default_value = "1h")]
    pub expires_in: String,
    /// Only this endpoint (repeat for more); all of the tenant's when absent.
    #[arg(long = "endpoint")]
    pub endpoints: Vec<String>,
    /// Reads only: the portal shows no button that changes anything.
    #[arg(long)]
    pub read_only: bool,
}

#[derive(Debug, Args)]
pub struct TokensArgs {
    /// The admin token (`auth.admin_token` of the producer).
    #[arg(long, env = "HOOKFLEET_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: String,
    /// The admin API's base URL, where `auth.admin_listen` serves it
    /// [default: --url].
    #[arg(long, env = "HOOKFLEET_ADMIN_URL")]
    pub admin_url: Option<String>,
    #[command(subcommand)]
    pub command: TokensCommand,
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Every token of the tenant, revoked and expired ones too (never the
    /// tokens themselves).
    List { tenant: String },
    /// A new token for the tenant, shown only now.
    Issue {
        tenant: String,
        /// How long until it stops working (`30d`, `12h`).
        #[arg(long)]
        expires: Option<String>,
    },
    /// Revoke a token by its id (`tok_...` of `tokens list`). Other
    /// instances refuse it within `auth.token_cache_ttl_ms`.
    Revoke { tenant: String, token_id: String },
}

#[derive(Debug, Subcommand)]
pub enum EndpointsCommand {
    /// Every endpoint, in creation order.
    List,
    /// Register an endpoint; its signing secret is shown only now.
    Create(CreateEndpoint),
    /// One endpoint.
    Show { id: String },
    /// Change an endpoint; what is not given stays as it is.
    Update(UpdateEndpoint),
    /// Stop delivering to an endpoint.
    Disable {
        id: String,
        /// Why; kept with the endpoint.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Deliver to a disabled endpoint again.
    Enable { id: String },
    /// Delete an endpoint.
    Delete { id: String },
    /// A new signing secret, shown only now; the previous one keeps signing
    /// for the rotation grace period.
    RotateSecret { id: String },
}

#[derive(Debug, Args)]
pub struct CreateEndpoint {
    /// Where to POST webhooks. (`--url` is the API's own address.)
    #[arg(
        value_name = "ENDPOINT_URL",
        required_unless_present = "amqp_exchange",
        conflicts_with = "amqp_exchange"
    )]
    pub endpoint_url: Option<String>,
    /// Instead of a URL: publish webhooks to this exchange on hookfleet's
    /// broker (an AMQP destination).
    #[arg(long)]
    pub amqp_exchange: Option<String>,
    /// The AMQP destination's routing key; `{type}` is the event type.
    #[arg(long, requires = "amqp_exchange", default_value = "{type}")]
    pub routing_key: String,
    /// The AMQP destination's broker, when it is not hookfleet's
    /// (`amqp(s)://user:password@host:port/vhost`; stored sealed).
    #[arg(long, requires = "amqp_exchange")]
    pub amqp_broker_url: Option<String>,
    /// Event types to subscribe to: exact, `prefix.*` or `*` (repeat or
    /// separate with commas).
    #[arg(
        long = "event-type",
        short = 't',
        value_delimiter = ',',
        required = true
    )]
    pub event_types: Vec<String>,
    #[arg(long)]
    pub description: Option<String>,
    /// A header sent with every webhook, `NAME=VALUE` (repeatable).
    #[arg(long = "header", short = 'H', value_name = "NAME=VALUE")]
    pub headers: Vec<String>,
    /// A signing secret of your choosing (`whsec_...`); generated if absent.
    #[arg(long)]
    pub secret: Option<String>,
    /// Also sign with ed25519 (`v1a`).
    #[arg(long)]
    pub ed25519: bool,
    /// Deliver events with the same ordering key in the order they were
    /// accepted.
    #[arg(long)]
    pub ordered: bool,
    /// At most this many attempts per second (1 to 10000), fleet-wide.
    #[arg(long, value_name = "PER_SECOND")]
    pub rate_limit: Option<u32>,
}

#[derive(Debug, Args)]
pub struct UpdateEndpoint {
    pub id: String,
    /// Where to POST webhooks from now on. (`--url` is the API's own
    /// address.)
    #[arg(long)]
    pub endpoint_url: Option<String>,
    /// Replaces the subscribed event types (repeat or separate with commas).
    #[arg(long = "event-type", short = 't', value_delimiter = ',')]
    pub event_types: Option<Vec<String>>,
    #[arg(long)]
    pub description: Option<String>,
    /// Replaces the custom headers, `NAME=VALUE` (repeatable).
    #[arg(long = "header", short = 'H', value_name = "NAME=VALUE")]
    pub headers: Option<Vec<String>>,
    /// Deliver in order per ordering key (`true`) or not (`false`).
    #[arg(long, value_name = "BOOL")]
    pub ordered: Option<bool>,
    /// A new rate limit, attempts per second (1 to 10000).
    #[arg(long, value_name = "PER_SECOND", conflicts_with = "no_rate_limit")]
    pub rate_limit: Option<u32>,
    /// Removes the rate limit.
    #[arg(long)]
    pub no_rate_limit: bool,
}

#[derive(Debug, Subcommand)]
pub enum SourcesCommand {
    /// Every source, in creation order.
    List,
    /// Create a source; point the provider at the ingest URL it shows. Its
    /// secret is shown only now.
    Create(CreateSource),
    /// One source.
    Show { id: String },
    /// Change a source's name or type prefix.
    Update(UpdateSource),
    /// Replace the secret (give Stripe's or Shopify's new one; generated
    /// for the others when absent); the previous one still verifies for
    /// the rotation grace period.
    RotateSecret {
        id: String,
        #[arg(long)]
        secret: Option<String>,
    },
    /// Delete a source: its ingest URL answers 404 from then on.
    Delete { id: String },
}

/// The providers a source can stand for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SourceKind {
    Github,
    Stripe,
    Shopify,
    StandardWebhooks,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Github => "github",
            Self::Stripe => "stripe",
            Self::Shopify => "shopify",
            Self::StandardWebhooks => "standard_webhooks",
        }
    }
}

#[derive(Debug, Args)]
pub struct CreateSource {
    /// A name for people.
    pub name: String,
    #[arg(long, value_enum)]
    pub kind: SourceKind,
    /// The provider's signing secret: required for Stripe and Shopify,
    /// generated for GitHub and Standard Webhooks when absent.
    #[arg(long)]
    pub secret: Option<String>,
    /// The first segments of the event types [default: the kind].
    #[arg(long)]
    pub type_prefix: Option<String>,
}

#[derive(Debug, Args)]
pub struct UpdateSource {
    pub id: String,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub type_prefix: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Send one event. The payload (a JSON object) is the argument, a file
    /// (--file), or standard input (`-`); its bytes are delivered as given.
    Send(SendEvent),
    /// An event's delivery state per endpoint, and its attempts.
    Show { id: String },
}

#[derive(Debug, Args)]
pub struct SendEvent {
    /// The event type, such as `order.created`.
    #[arg(value_name = "TYPE")]
    pub event_type: String,
    /// The payload as JSON text, or `-` to read it from standard input.
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    pub payload: Option<String>,
    /// Read the payload from this file.
    #[arg(long, short)]
    pub file: Option<PathBuf>,
    /// Your id for the event (idempotency: a repeat is not delivered again).
    #[arg(long)]
    pub id: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AttemptsCommand {
    /// Attempts, newest first, of one endpoint or of all of them.
    List(ListAttempts),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AttemptState {
    Succeeded,
    Retrying,
    Exhausted,
    Cancelled,
}

impl AttemptState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Retrying => "retrying",
            Self::Exhausted => "exhausted",
            Self::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Args)]
pub struct ListAttempts {
    /// Only this endpoint's attempts (all endpoints' when absent).
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Only attempts with this result.
    #[arg(long, value_enum)]
    pub state: Option<AttemptState>,
    /// Only attempts started since: RFC 3339 or a duration ago (`15m`, `2h`).
    #[arg(long)]
    pub since: Option<String>,
    /// Only attempts started before: RFC 3339 or a duration ago.
    #[arg(long)]
    pub until: Option<String>,
    /// At most this many (1 to 500).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=500))]
    pub limit: i64,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The event to send again.
    pub event_id: String,
    /// Only to this endpoint (to every endpoint the event went to when absent).
    #[arg(long)]
    pub endpoint: Option<String>,
}

#[derive(Debug, Args)]
pub struct RecoverArgs {
    #[arg(long)]
    pub endpoint: String,
    /// RFC 3339 or a duration ago (`6h`).
    #[arg(long)]
    pub since: String,
    /// Start the recovery and return without waiting for it.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// The tenant's parked messages, oldest first (listing does not
    /// consume them).
    List {
        /// How many to show (1 to 1000).
        #[arg(long, visible_alias = "scan", default_value_t = 100)]
        limit: u16,
        /// Start after this cursor (`next` of the previous page).
        #[arg(long)]
        after: Option<String>,
    },
    /// Put parked messages back where they came from.
    Requeue {
        /// The messages' ids (`MESSAGE` of `dlq list`).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        message_ids: Vec<String>,
        /// Every one of the tenant's parked messages (`limit` per call,
        /// calling again until none is left).
        #[arg(long)]
        all: bool,
        /// The most messages one call requeues (1 to 1000).
        #[arg(long, visible_alias = "scan", default_value_t = 100)]
        limit: u16,
    },
}

#[derive(Debug, Subcommand)]
pub enum EventTypesCommand {
    /// Every type at its current version, by name.
    List,
    /// One type, with every version.
    Show { event_type: String },
    /// Create a type, or make a new version of it.
    Put(PutEventType),
    /// Delete a type and every version; its events are no longer checked.
    Delete { event_type: String },
    /// The catalogue as an OpenAPI 3.1 document, for receivers to generate
    /// code from.
    Openapi,
}

#[derive(Debug, Args)]
pub struct PutEventType {
    pub event_type: String,
    /// A file with the JSON Schema payloads of the type must match; without
    /// it, they are not checked.
    #[arg(long, value_name = "FILE")]
    pub schema: Option<std::path::PathBuf>,
    #[arg(long)]
    pub description: Option<String>,
    #[arg(long)]
    pub deprecated: bool,
    /// A file with an example payload (repeatable); each must match the
    /// schema.
    #[arg(long = "example", value_name = "FILE")]
    pub examples: Vec<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct ListenArgs {
    /// The port on 127.0.0.1 (0: any free port; the first line says which).
    #[arg(long, short, default_value_t = 9000)]
    pub port: u16,
    /// The endpoint's signing secret (`whsec_...`).
    #[arg(long, short, env = "HOOKFLEET_WEBHOOK_SECRET", hide_env_values = true)]
    pub secret: String,
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// Only this endpoint's deliveries.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Also print what happened since then (RFC 3339 or a duration ago)
    /// before following.
    #[arg(long)]
    pub since: Option<String>,
    /// How often to ask the ledger.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: std::time::Duration,
}
