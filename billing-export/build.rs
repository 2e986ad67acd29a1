//! `sqlx::migrate!` embeds `migrations/` at compile time; without this, editing a
//! migration would not rebuild the crate and the binary would carry the old one.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
