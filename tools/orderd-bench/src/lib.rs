//! orderd-bench: a load generator that drives orderd (in process through the engine's API, and
//! the real server over HTTP) and its peers (PostgreSQL 15, Redis 7, a bare HTTP handler) with
//! the same workloads in the same run, and reports throughput, latency and the ratios between
//! them. See README.md beside this crate.
//!
//! Map: [`workload`] decides what each client sends; [`schedule`] when (open loop); [`driver`]
//! runs the clients and measures; [`targets`] are the systems under test; [`report`] renders the
//! results; [`run`] ties one invocation together; [`cli`] is the command line; [`cpu`] reads
//! the servers' CPU time from `/proc`.

pub mod cli;
pub mod cpu;
pub mod driver;
pub mod http_client;
pub mod process;
pub mod report;
pub mod run;
pub mod schedule;
pub mod targets;
pub mod workload;
