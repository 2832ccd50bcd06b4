//! The one integration test binary: every test talks to a real PostgreSQL through the real
//! service (see `support`).

mod api;
mod audit;
mod engine;
mod events;
mod faults;
mod feed;
mod fixtures;
mod flows;
mod log;
mod openapi;
mod outbox;
mod platform;
mod receiver;
mod support;
mod webhook;
