//! `hookfleet-ledger`: the record of events and attempts, and its read API.

fn main() -> anyhow::Result<()> {
    hookfleet_ledger::cli::main()
}
