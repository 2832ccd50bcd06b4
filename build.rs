//! Rebuilds the crate when a migration in `schema/` is added or changed: `refinery`'s
//! `embed_migrations!` reads that folder at compile time, and Cargo does not know it does.
fn main() {
    println!("cargo:rerun-if-changed=schema");
}
