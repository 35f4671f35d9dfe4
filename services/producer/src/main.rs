//! `hookfleet-producer`: the ingest API, endpoint registry and router.

fn main() -> anyhow::Result<()> {
    hookfleet_producer::cli::main()
}
