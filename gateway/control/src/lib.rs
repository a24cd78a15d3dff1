//! orderd's control plane, everything that runs the server the way an operations team would,
//! with no sockets of its own and no actix-web: backups with drills and their off-site copies
//! ([`backups`], [`offsite`], [`revocations`] — also used by `orderctl backup restore`), health inspection
//! ([`inspection`]), live settings ([`settings`]), change management with four-eyes approval,
//! a watch window and automatic rollback ([`changes`], reading the request window
//! [`window`]), telemetry: Prometheus metrics and the `/proc` reader ([`telemetry`]), the
//! public events' retention sweep ([`events`]) and signed webhook deliveries ([`webhooks`]).
//!
//! These are business rules (who may approve, when to roll back, how long to keep a backup),
//! so they live here, beside the operations of `orderd-service`, and not in the gateway, which
//! only serves them over HTTP.

pub mod backups;
pub mod changes;
pub mod events;
pub mod inspection;
pub mod offsite;
pub mod revocations;
pub mod settings;
pub mod telemetry;
pub mod webhooks;
pub mod window;

/// The customer key store's records, which backups copy and `orderctl backup restore`
/// installs ([`orderd_service::customer_keys`]).
pub use orderd_service::customer_keys;
