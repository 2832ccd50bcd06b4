//! A money object's kept snapshot, held encoded and decoded when read.
//!
//! A decoded snapshot is mostly inline `Option<i64>`s and `String`s, each string a heap
//! allocation of its own: about 1.2 KB an object at the benchmark's 1,000,000-event log, where
//! the same fields encode to about 100 bytes. A rebuild keeps every money object of the log,
//! so the snapshots are kept as their [bincode] encoding (variable-width integers, one byte for
//! an absent field) and decoded only where a row is rendered or a link followed. The encoding
//! is deterministic, so two packed values are equal exactly when the values are.

use bincode::Options;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::marker::PhantomData;

/// A value of type `S` kept as its bincode encoding (see the module doc).
pub(crate) struct Packed<S> {
    bytes: Box<[u8]>,
    kind: PhantomData<fn() -> S>,
}

fn options() -> impl Options {
    bincode::DefaultOptions::new()
}

impl<S: Serialize + DeserializeOwned> Packed<S> {
    /// Encodes `value`.
    pub(crate) fn pack(value: &S) -> Packed<S> {
        let bytes = options()
            .serialize(value)
            .expect("money snapshots have no type bincode cannot encode");
        Packed {
            bytes: bytes.into_boxed_slice(),
            kind: PhantomData,
        }
    }

    /// Decodes the value. The bytes were made by [`Packed::pack`] or checked when read back
    /// from a fold-state snapshot, so they always decode.
    pub(crate) fn unpack(&self) -> S {
        options()
            .deserialize(&self.bytes)
            .expect("packed bytes decode: made by `pack` or checked when read")
    }
}

impl<S> Clone for Packed<S> {
    fn clone(&self) -> Self {
        Packed {
            bytes: self.bytes.clone(),
            kind: PhantomData,
        }
    }
}

impl<S> PartialEq for Packed<S> {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl<S> Eq for Packed<S> {}

impl<S> std::fmt::Debug for Packed<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Packed({} bytes)", self.bytes.len())
    }
}

/// In a fold-state snapshot: the encoded bytes as they are.
impl<S> Serialize for Packed<S> {
    fn serialize<Z: serde::Serializer>(&self, serializer: Z) -> Result<Z::Ok, Z::Error> {
        self.bytes.serialize(serializer)
    }
}

/// Read back from a fold-state snapshot: bytes that do not decode as an `S` are refused here,
/// so [`Packed::unpack`] never meets them.
impl<'de, S: Serialize + DeserializeOwned> Deserialize<'de> for Packed<S> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes = Box::<[u8]>::deserialize(deserializer)?;
        options()
            .deserialize::<S>(&bytes)
            .map_err(|e| serde::de::Error::custom(format!("packed money snapshot: {e}")))?;
        Ok(Packed {
            bytes,
            kind: PhantomData,
        })
    }
}
