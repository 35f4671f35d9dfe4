//! `hookfleet-worker`: the delivery fleet.

/// mimalloc: the allocator was the largest cost inside the fleet's
/// processes under load with glibc's (see docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    hookfleet_worker::cli::main()
}
