//! orderd's gateway: the HTTP API and the binary TCP protocol over the engine, API keys and roles, configuration loading and
//! process start-up (the `orderd` binary is a thin shell over [`server::run`]).
//!
//! Architecture invariants:
//! - Only this crate decodes untrusted bytes (request bodies, headers, query strings).
//! - It holds no business rules: it checks the shape of requests and who may send them, and
//!   leaves stock, transitions and idempotency to `orderd-engine`.
//! - Engine types never go on the wire: [`wire`] maps them onto `orderd-proto` types.
//! - Every error a client sees is one `application/problem+json` document ([`error`]).
//! - Personal data reaches the engine sealed and leaves it opened only here ([`vault`]).

pub mod audit;
pub mod auth;
pub mod backups;
pub mod body;
pub mod changes;
pub mod error;
pub mod idem;
pub mod inspection;
pub mod metrics;
pub mod ops;
pub mod roles;
pub mod routes;
pub mod server;
pub mod settings;
pub mod tcp;
pub mod validate;
pub mod vault;
pub mod wire;

pub use orderd_config::Config;
pub use server::run;
