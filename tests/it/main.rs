//! The one integration test binary: every test talks to a real PostgreSQL through the real
//! service (see `support`).

mod api;
mod audit;
mod browser;
mod cli;
mod connections;
mod console;
mod console_money;
mod emulator;
mod engine;
mod errors;
mod events;
mod failover;
mod faults;
mod feed;
mod fixtures;
mod flows;
mod frictions;
mod history;
mod ingest;
mod links;
mod log;
mod logging;
mod metrics;
mod money;
mod openapi;
mod outbox;
mod platform;
mod preview;
mod process;
mod receiver;
mod reconcile;
mod reconcile_hostile;
mod replica;
mod support;
mod webhook;
