//! Outgoing webhooks (Standard Webhooks): endpoints, signed messages driven from the change
//! feed with a cursor per endpoint, retries, and the dispatcher.

pub mod signing;
