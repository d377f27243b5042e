//! hookline's integration tests: one binary, real SQLite files, real loopback receivers.
//!
//! Run with `cargo test --all-features`. Test modules are listed here; shared
//! fixtures (test receiver, engine start-up, polling helpers) live in `support`.

#![allow(clippy::unwrap_used)]

mod support;

// Test modules: one line each.
mod api;
mod cli;
mod cluster;
mod crash;
mod crash_points;
mod engine;
mod full_disk;
mod ingress;
mod keys;
mod keys_model;
mod model;
mod mtls;
mod notify;
mod ops;
mod ordering;
mod outbound;
mod refused_bodies;
mod status_table;
mod tenant_limits;
mod transforms;
mod ui;
mod ui_browser;
