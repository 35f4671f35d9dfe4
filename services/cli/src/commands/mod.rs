//! One module per subcommand; [`run`] picks it.

mod attempts;
mod dlq;
mod endpoints;
mod event_types;
mod events;
mod listen;
mod portal;
mod recover;
mod replay;
mod sources;
mod tail;
mod tokens;

use crate::api::Api;
use crate::cli::{Cli, Command};
use crate::error::CliError;
use crate::output::Printer;
use crate::settings::{Given, Settings, load_file};

pub async fn run(cli: Cli) -> Result<(), CliError> {
    let global = cli.global;
    let (file, file_path) = load_file(global.config.as_deref())?;
    let settings = Settings::resolve(
        Given {
            url: global.url,
            ledger_url: global.ledger_url,
            token: global.token,
        },
        file,
        file_path,
    )?;
    let printer = Printer {
        output: global.output,
    };
    // Built per command: `listen` receives webhooks and needs no token.
    let api = || Api::new(&settings);
    match cli.command {
        Command::Endpoints(command) => endpoints::run(command, &api()?, printer).await,
        Command::Events(command) => events::run(command, &api()?, printer).await,
        Command::Sources(command) => sources::run(command, &api()?, printer).await,
        Command::Attempts(command) => attempts::run(command, &api()?, printer).await,
        Command::Replay(args) => replay::run(args, &api()?, printer).await,
        Command::Recover(args) => recover::run(args, &api()?, printer).await,
        Command::Dlq(command) => dlq::run(command, &api()?, printer).await,
        Command::EventTypes(command) => event_types::run(command, &api()?, printer).await,
        Command::Tail(args) => tail::run(args, &api()?, printer).await,
        Command::Listen(args) => listen::run(args, &settings, printer).await,
        Command::Portal(command) => portal::run(command, &api()?, printer).await,
        Command::Tokens(args) => {
            let admin = settings.as_admin(args.admin_url.as_deref(), &args.admin_token)?;
            tokens::run(args.command, &Api::new(&admin)?, printer).await
        }
    }
}
