//! The repository explains itself, and its docs stay true (issue 30): each test holds
//! a doc to the code it describes, so a change to one without the other fails here.
//!
//! - `links`: no link or path in the docs leaves the repository (what counts: that
//!   module's `//!`);
//! - `settings`: the README's configuration table against every binary's `--help`
//!   (needs the binaries: `cargo build --workspace --bins`);
//! - `openapi`: docs/openapi.yaml is valid (openapi-spec-validator) and describes
//!   exactly the routes in the code;
//! - `contract`: docs/contract.md's checked tables against the types and the topology.
//!
//! None needs the broker or the database. The Python tools (PyYAML,
//! openapi-spec-validator) are installed by scripts/test.sh.

#[path = "docs/contract.rs"]
mod contract;
#[path = "docs/links.rs"]
mod links;
#[path = "docs/markdown.rs"]
mod markdown;
#[path = "docs/openapi.rs"]
mod openapi;
#[path = "docs/settings.rs"]
mod settings;
