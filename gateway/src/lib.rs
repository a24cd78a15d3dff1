//! orderd's gateway: the two front doors over the service layer — HTTP ([`http`]: routes,
//! extractors, middleware, the OpenAPI document) and the binary TCP protocol ([`tcp`]) — and
//! [`server`], the one place that starts and stops every service (the `orderd` binary is a thin
//! shell over [`server::run`]), which tells systemd how it goes through [`systemd`].
//!
//! Architecture invariants:
//! - The only crate with sockets or actix-web. Only it decodes untrusted bytes (request bodies,
//!   headers, query strings, frames) into the protocol-neutral inputs of `orderd-service`.
//! - It holds no business rules: roles, validation, idempotency and the audit are
//!   `orderd-service`'s; backups, inspection, settings and change management are
//!   `orderd-control`'s; stock and transitions are `orderd-engine`'s.
//! - Every error a client sees is one `application/problem+json` document
//!   ([`http::error::HttpError`]) or, over TCP, one ERROR frame carrying the same document.

pub mod http;
pub mod peers;
pub mod server;
pub mod systemd;
pub mod tcp;
pub mod tls;

pub use orderd_config::Config;
pub use server::run;
