//! The one integration test binary: every test talks to a real PostgreSQL through the real
//! service (see `support`).

mod api;
mod audit;
mod engine;
mod events;
mod faults;
mod fixtures;
mod flows;
mod ingest;
mod log;
mod openapi;
mod replica;
mod support;
mod webhook;
