//! Stripe's REST API as a client: what the ledger asks Stripe itself, rather than what Stripe
//! pushes to it. Today that is only listing events for reconciliation ([`events_api`]).
//!
//! This module owns the secret key: it is sent in one header, marked sensitive, and never
//! formatted into a log line, an error or a `Debug` string.

pub mod events_api;
