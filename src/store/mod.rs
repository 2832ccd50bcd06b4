//! The storage layer: one module per group of tables, each the only code issuing SQL on its
//! tables; the HTTP routes, the CLI, the metrics and the projector's control flow call them.
//!
//! - [`log`]: the log's readers (`events`, `log_head`, `verifications`); its writer is
//!   [`crate::event_log`].
//! - [`projector`]: the projector's bookkeeping (checkpoint, owner, failures, the rebuild
//!   queue, read-model versions, snapshots, elections) and the advisory lock keys.
//! - [`error`]: what a failed storage call means for the caller (unavailable, refused input,
//!   conflict, or our own fault).
//!
//! Elsewhere, by the same rule: [`crate::outbox::store`] (outgoing webhooks) and
//! [`crate::reconcile::store`] (`reconcile_runs`).

pub mod error;
pub mod log;
pub mod projector;

pub use error::{DeadlinePassed, StoreError};
