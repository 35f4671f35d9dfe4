//! `hookfleet-producer`: the ingest API, endpoint registry and router.

/// mimalloc: the allocator was the largest cost inside the fleet's
/// processes under load with glibc's (see docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    hookfleet_producer::cli::main()
}
