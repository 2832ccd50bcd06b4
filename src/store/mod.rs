//! The storage layer: one module per group of tables, each the only code issuing SQL on its
//! tables; the HTTP routes, the CLI, the metrics, the console and the projector's control
//! flow call them.
//!
//! - [`log`]: the log's readers (`events`, `deliveries`, `log_head`, `verifications`): the
//!   projector's, the chain verification's and the admin links' in [`log`] itself, the read
//!   API's, history's and console's in [`log::reads`] (with the projection's view of each
//!   event: `event_tenants`, `projection_errors`, the checkpoint). Its writer is
//!   [`crate::event_log`].
//! - [`projector`]: the projector's bookkeeping (checkpoint, owner, failures, the rebuild
//!   queue, read-model versions, snapshots, elections, standbys) and the advisory lock keys.
//! - [`read_models`]: `tenant_pricing`, `checkout_sessions`, `customers`, `unresolved_events`
//!   and `event_tenants` (the projector's writes; [`read_models::queries`] for the read API,
//!   the platform routes and the console), `entitlements` and `plans`
//!   ([`read_models::entitlements`]).
//! - [`money`]: `invoices`, `payments`, `refunds`, `disputes`, `credit_notes` (writes, lists,
//!   their table descriptions; [`money::receivables`] for outstanding balances and aging); [`revenue`]:
//!   `revenue_streams` and `revenue_movements`.
//! - [`projection_errors`]: recording fold failures (`projection_errors`).
//! - [`error`]: what a failed storage call means for the caller (unavailable, refused input,
//!   conflict, or our own fault).
//!
//! Elsewhere, by the same rule: [`crate::outbox::store`] (outgoing webhooks) and
//! [`crate::reconcile::store`] (`reconcile_runs`).

pub mod error;
pub mod log;
pub mod money;
pub mod projection_errors;
pub mod projector;
pub mod read_models;
pub mod revenue;

pub use error::{DeadlinePassed, StoreError};
