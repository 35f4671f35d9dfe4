//! `hookfleet-worker`: the delivery fleet.

fn main() -> anyhow::Result<()> {
    hookfleet_worker::cli::main()
}
