//! The worker binary, built inside the test package so that end-to-end
//! tests can run, kill and signal a real worker process
//! (`CARGO_BIN_EXE_hookfleet-test-worker`).

fn main() -> anyhow::Result<()> {
    hookfleet_worker::cli::main()
}
