//! The storage layer: one module per group of tables, each the only code issuing SQL on its
//! tables, and the shared [`error`]: what a failed storage call means for the caller
//! (unavailable, refused input, conflict, or our own fault).
//!
//! - [`read_models`]: `tenant_pricing`, `checkout_sessions`, `customers`, `unresolved_events`
//!   and `event_tenants` (the projector's writes; [`read_models::queries`] for the read API,
//!   the platform routes and the console), `entitlements` and `plans`
//!   ([`read_models::entitlements`]).
//! - [`money`]: `invoices`, `payments`, `refunds`, `disputes`, `credit_notes` (writes, lists,
//!   CSV; [`money::receivables`] for outstanding balances and aging); [`revenue`]:
//!   `revenue_streams` and `revenue_movements`.
//! - [`event_reads`]: the read API's, history's and console's reads of the log (`events`,
//!   `deliveries`) and of the projector's checkpoint and errors; kept here until they join the
//!   log's own store module.
//! - [`projection_errors`]: recording fold failures (`projection_errors`), the projector's
//!   bookkeeping; apart from `read_models` so that it and the projector do not import each
//!   other.

pub mod error;
pub mod event_reads;
pub mod money;
pub mod projection_errors;
pub mod read_models;
pub mod revenue;

pub use error::{DeadlinePassed, StoreError};
