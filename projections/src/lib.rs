//! Pure folds from Stripe events to the billing read models.
//!
//! This crate owns the meaning of events: which Stripe fields say what, across API versions
//! ([`facts`]), and how a set of events becomes `tenant_pricing`, `checkout_sessions` and
//! `customers` ([`ledger`]), and invoices, payments, refunds, disputes and credit notes ([`money`]). It must never do I/O, read a clock or depend on arrival order: time
//! comes from each event's `created`, order from [`ledger::Version`]. `src/` stores the log and
//! writes the rows this crate renders.

pub mod domain;
pub mod envelope;
pub mod facts;
pub mod ledger;
pub mod model;
pub mod money;

pub use domain::{Currency, EventId, LogPosition, Money, TenantId};
pub use envelope::{EnvelopeError, Event};
pub use facts::{BillingReason, FoldError};
pub use ledger::snapshot::{SnapshotError, SNAPSHOT_FORMAT};
pub use ledger::{Changes, Head, Ledger, Outcome, ReadEvent, ReadModels, Version};
pub use model::{
    CheckoutSession, Customer, ResolvedBy, SessionStatus, Status, TenantPricing, Unresolved,
};

#[cfg(test)]
mod tests;
