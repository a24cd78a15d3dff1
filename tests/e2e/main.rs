//! End-to-end tests: each test starts the real `orderd` binary on a temporary data directory
//! and drives it over HTTP exactly as written in the API contract (`API.md`).

mod api_basics;
mod audit;
mod backup;
mod bulk;
mod catalog;
mod changes;
mod cold;
mod concurrency;
mod crash;
mod erasure;
mod events;
mod full_disk;
mod http_bounds;
mod idempotency;
mod inspection;
mod keys;
mod locations;
mod logistics;
mod mass_assignment;
mod metrics;
mod orderctl;
mod pii;
mod profiles;
mod quarantine;
mod returns;
mod role_matrix;
mod shard_restart;
mod snapshot;
mod supervisor;
mod support;
mod systemd;
mod tcp;
mod tls;
