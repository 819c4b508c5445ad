//! Strata: a Redis-protocol cache server with a PostgreSQL tier behind it.
//!
//! The source tree mirrors the architecture (see DESIGN.md): `server` (sockets, framing,
//! sessions) → `command` (the table, dispatch and one file per command family) → `guard` (the
//! admission chain) → `cache` (the tiers) and `db` (the PostgreSQL tier), with `observe` (metrics, HTTP, logs) on the side and
//! `app` holding the shared state. Data flows one way, from the connection down to the store.

pub mod app;
pub mod cache;
pub mod command;
pub mod config;
pub mod db;
pub mod guard;
pub mod observe;
pub mod server;
