//! The one integration test binary: every test talks to a real PostgreSQL through the real
//! service (see `support`).

mod api;
mod audit;
mod emulator;
mod engine;
mod events;
mod faults;
mod fixtures;
mod flows;
mod log;
mod openapi;
mod reconcile;
mod reconcile_hostile;
mod support;
mod webhook;
