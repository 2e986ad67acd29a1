//! `sqlx::migrate!` embeds `migrations/` at compile time, and cargo learns only of
//! the files it read: an edited migration rebuilds the crate, a new one does not, and
//! the binary would ship without it. Watching the directory rebuilds on either.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
