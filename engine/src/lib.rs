//! orderd's order engine: sharded actors that own stock, customers and orders, the cross-shard
//! reservation protocol, a group-committed event log with snapshots, and recovery.
//!
//! Architecture invariant: this crate knows no HTTP, JSON or sockets, and no RocksDB: it stores
//! through `orderd-storage`'s [`Storage`] (re-exported as [`storage`] for its own modules).

pub mod audit;
pub mod backup;
pub mod clock;
pub mod cold;
pub mod diskguard;
pub mod domain;
pub mod engine;
pub mod event;
pub mod events;
pub mod failpoint;
pub mod idem_tier;
pub mod inbox;
pub mod incident;
pub mod locations;
pub mod log;
pub mod pmap;
pub mod shard;
pub mod sim;
pub mod state;
pub mod supervisor;
pub mod tunables;

pub use domain::*;
pub use engine::{recover_shard, Engine, EngineConfig, EngineError, LogCounters, Recovered};
pub use incident::{Incident, IncidentLog};
pub use log::Durability;
pub use orderd_storage as storage;
pub use shard::ResealFn;
pub use storage::memory::MemoryStorage;
pub use storage::rocks::RocksStorage;
pub use storage::Storage;
pub use supervisor::SupervisorConfig;
