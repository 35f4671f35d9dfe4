//! Rebuild when a migration is added: `embed_migrations!` reads the folder
//! at compile time, and Cargo does not otherwise notice a new file.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
