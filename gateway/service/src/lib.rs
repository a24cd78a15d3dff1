//! orderd's service layer: the operations both front doors (HTTP and the binary TCP protocol,
//! in `orderd-gateway`) call once a request is decoded, with protocol-neutral inputs.
//!
//! Invariants:
//! - No actix-web and no sockets: the front doors decode bytes and encode answers; everything
//!   between (the role check, validation, the engine call, sealing personal data, the audit
//!   entry) is here, so both give the same answers, roles and error codes by construction.
//! - Engine types never go on the wire: [`wire`] is the one mapping onto `orderd-proto` types.
//! - Every failure a client sees is one [`error::ApiError`], with its status code and problem
//!   document; the gateway only renders it.
//! - Personal data reaches the engine sealed and leaves it opened only here ([`vault`]).

pub mod audit;
pub mod auth;
pub mod customer_keys;
pub mod error;
pub mod idem;
pub mod input;
pub mod ops;
pub mod page;
pub mod refusals;
pub mod roles;
pub mod validate;
pub mod vault;
pub mod wire;

pub use error::ApiError;

use orderd_config::{Config, DurabilitySetting};

/// The engine's configuration, from orderd's.
pub fn engine_config(config: &Config) -> orderd_engine::EngineConfig {
    orderd_engine::EngineConfig {
        data_dir: config.storage.data_dir.clone(),
        shards: config.shard_count(),
        durability: match config.storage.durability {
            DurabilitySetting::Sync => orderd_engine::Durability::Sync,
            DurabilitySetting::Async => orderd_engine::Durability::Async,
        },
        flush_interval_ms: config.storage.flush_interval_ms,
        mailbox_capacity: config.engine.mailbox_capacity,
        batch_events_max: config.engine.batch_events_max,
        snapshot_interval_events: config.engine.snapshot_interval_events,
        idempotency_retention_s: config.engine.idempotency_retention_s,
        pending_retry_ms: config.engine.pending_retry_ms,
        request_timeout_ms: config.engine.request_timeout_ms,
        min_free_bytes: config.storage.min_free_bytes,
        wal_max_bytes: config.storage.wal_max_bytes,
        inbox_orders_max: config.engine.inbox_orders_max,
        idempotency_hot_s: config.engine.idempotency_hot_s,
        cold: orderd_engine::shard::ColdSettings {
            hot_retention_s: config.engine.hot_retention_s,
            sweep_interval_ms: config.engine.cold_sweep_interval_ms,
            sweep_orders_max: config.engine.cold_sweep_orders_max,
        },
        supervisor: orderd_engine::SupervisorConfig {
            heartbeat_interval_ms: config.supervisor.heartbeat_interval_ms,
            heartbeat_timeout_ms: config.supervisor.heartbeat_timeout_ms,
            max_restarts: config.supervisor.max_restarts,
            window_s: config.supervisor.window_s,
        },
        incident_retention_max: config.incidents.retention_max,
        events_enabled: config.events.enabled,
        stock_low_threshold: config.events.stock_low_threshold,
    }
}
