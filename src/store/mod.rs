//! The storage layer's shared pieces. [`error`]: what a failed storage call means for the
//! caller (unavailable, refused input, conflict, or our own fault).

pub mod error;

pub use error::{DeadlinePassed, StoreError};
