//! `hookfleet-ledger`: the record of events and attempts, and its read API.

/// mimalloc: the allocator was the largest cost inside the fleet's
/// processes under load with glibc's (see docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    hookfleet_ledger::cli::main()
}
