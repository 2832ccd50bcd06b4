//! What a failed storage call means for the caller, decided once from its cause chain.
//!
//! Everything below the HTTP layer returns `anyhow::Error` with the driver's error somewhere in
//! its chain; [`StoreError::classify`] reads that chain and says whose fault it is:
//!
//! - **unavailable**: the database could not be reached or could not finish in time: a
//!   connection that could not be opened or was closed, an I/O error, the pool's wait running out, PostgreSQL
//!   shutting down or out of resources, a statement or lock timeout, a serialization failure or
//!   deadlock (SQLSTATE classes 08, 53, 57P, 58 and codes 57014, 55P03, 40001, 40P01, 25006:
//!   PostgreSQL's documented error codes, Appendix A). The client should retry: HTTP 503.
//! - **refused**: PostgreSQL refused a value the client sent (a NUL in text, 22021/22P05; a time
//!   outside `timestamptz`'s range, 22008): HTTP 400.
//! - **conflict**: a uniqueness or exclusion rule refused the write (23505, 23P01): HTTP 409.
//! - **internal**: anything else (a syntax error, a missing table, a row of an unexpected
//!   type, a broken invariant of our own): our fault, HTTP 500 with a body that says nothing
//!   internal; the cause chain is logged once, where the answer is made.

use tokio_postgres::error::SqlState;

/// A storage failure, classified.
#[derive(Debug)]
pub enum StoreError {
    /// The database is down, unreachable or too slow; retry later. Carries the cause.
    Unavailable(anyhow::Error),
    /// PostgreSQL refused a value the client supplied; the message says which rule, in the
    /// client's terms.
    Refused(&'static str),
    /// A uniqueness rule refused the write. Carries the cause.
    Conflict(anyhow::Error),
    /// Our own fault. Carries the cause, for the log only.
    Internal(anyhow::Error),
}

/// A deadline passed before the work could start (the webhook's answer deadline, say): the
/// same for the client as an unavailable database.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DeadlinePassed(pub &'static str);

impl StoreError {
    /// Classifies an error by the first cause in its chain that says anything (see the module
    /// documentation for the rules).
    pub fn classify(error: anyhow::Error) -> StoreError {
        let mut verdict = None;
        for cause in error.chain() {
            verdict = verdict_of(cause);
            if verdict.is_some() {
                break;
            }
        }
        match verdict {
            Some(Verdict::Unavailable) => StoreError::Unavailable(error),
            Some(Verdict::Refused(message)) => StoreError::Refused(message),
            Some(Verdict::Conflict) => StoreError::Conflict(error),
            None => StoreError::Internal(error),
        }
    }

    /// True for [`StoreError::Unavailable`].
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

enum Verdict {
    Unavailable,
    Refused(&'static str),
    Conflict,
}

fn verdict_of(cause: &(dyn std::error::Error + 'static)) -> Option<Verdict> {
    if let Some(error) = cause.downcast_ref::<tokio_postgres::Error>() {
        return postgres_verdict(error);
    }
    if let Some(error) = cause.downcast_ref::<deadpool_postgres::PoolError>() {
        use deadpool_postgres::PoolError;
        // Opening a connection failed (refused, shut down, a database not accepting
        // connections, SQLSTATE 55000), or none came free in time: out of reach either way.
        return match error {
            PoolError::Backend(_) | PoolError::Timeout(_) | PoolError::Closed => {
                Some(Verdict::Unavailable)
            }
            _ => None,
        };
    }
    if let Some(error) = cause.downcast_ref::<crate::event_log::AppendError>() {
        // The appender already knows: only its own fault is ours; a timeout, a full queue or
        // an unreachable database is unavailability.
        return match error {
            crate::event_log::AppendError::Internal(_) => None,
            _ => Some(Verdict::Unavailable),
        };
    }
    if cause.is::<std::io::Error>()
        || cause.is::<DeadlinePassed>()
        || cause.is::<tokio::time::error::Elapsed>()
        || cause
            .downcast_ref::<crate::reads::ReadError>()
            .is_some_and(|e| matches!(e, crate::reads::ReadError::ReplicaDown))
    {
        return Some(Verdict::Unavailable);
    }
    None
}

fn postgres_verdict(error: &tokio_postgres::Error) -> Option<Verdict> {
    let Some(code) = error.code() else {
        // No SQLSTATE: the driver's own error. Connection-level ones (closed, I/O, connect,
        // timeout) mean the server is out of reach; the others (a column of an unexpected
        // type, a wrong parameter count) are our bugs.
        let connection_lost = error.is_closed()
            || std::error::Error::source(error).is_some_and(|s| s.is::<std::io::Error>())
            || error.to_string().starts_with("timeout");
        return connection_lost.then_some(Verdict::Unavailable);
    };
    let class = &code.code()[..2];
    if code == &SqlState::CHARACTER_NOT_IN_REPERTOIRE || code == &SqlState::UNTRANSLATABLE_CHARACTER
    {
        Some(Verdict::Refused(
            "parameters must not contain NUL characters",
        ))
    } else if code == &SqlState::DATETIME_FIELD_OVERFLOW {
        Some(Verdict::Refused(
            "times must lie between 4713 BC and 294276 AD (PostgreSQL's timestamp range)",
        ))
    } else if code == &SqlState::UNIQUE_VIOLATION || code == &SqlState::EXCLUSION_VIOLATION {
        Some(Verdict::Conflict)
    } else if matches!(class, "08" | "53" | "58")
        || code.code().starts_with("57P")
        || code == &SqlState::QUERY_CANCELED
        || code == &SqlState::LOCK_NOT_AVAILABLE
        || code == &SqlState::T_R_SERIALIZATION_FAILURE
        || code == &SqlState::T_R_DEADLOCK_DETECTED
        || code == &SqlState::READ_ONLY_SQL_TRANSACTION
    {
        Some(Verdict::Unavailable)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_of_our_own_are_internal() {
        let error = anyhow::anyhow!("ledger_append answered 1 rows for 2 deliveries");
        assert!(matches!(
            StoreError::classify(error),
            StoreError::Internal(_)
        ));
    }

    #[test]
    fn the_appenders_verdict_is_kept() {
        use crate::event_log::AppendError;
        let overloaded = anyhow::Error::from(AppendError::Overloaded);
        assert!(StoreError::classify(overloaded).is_unavailable());
        let down = AppendError::Unavailable(anyhow::anyhow!("connection refused"));
        assert!(StoreError::classify(down.into()).is_unavailable());
        let ours = AppendError::Internal(anyhow::anyhow!("function ledger_append does not exist"));
        assert!(matches!(
            StoreError::classify(ours.into()),
            StoreError::Internal(_)
        ));
    }

    #[test]
    fn io_errors_and_passed_deadlines_are_unavailable_wherever_they_are_in_the_chain() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let error = anyhow::Error::from(io).context("reading the log");
        assert!(StoreError::classify(error).is_unavailable());
        let error = anyhow::Error::from(DeadlinePassed("too late")).context("appending");
        assert!(StoreError::classify(error).is_unavailable());
    }
}
