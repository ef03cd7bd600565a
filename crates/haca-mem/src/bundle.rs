//! Export bundles: a user's rows, still sealed under the user's key, signed by the exporting node.

use crate::seal::{SealedRow, UserKey};
use crate::set::MemorySet;
use crate::MemError;
use haca_core::{NodeId, NodeKey};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// The bundle's `format`.
pub const BUNDLE_FORMAT: &str = "haca-mem-bundle/1";
/// Prefix of the signed message: the domain, then the hex SHA-256 of the canonical JSON of the
/// bundle without `signature`.
pub const BUNDLE_DOMAIN: &str = "haca.mem.bundle.v1:";

/// A user's rows for another node to import. Encrypted: each row stays sealed under the user's
/// key (the exporting node cannot read it without that key either). Signed: by `signer`.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct Bundle {
    pub format: String,
    pub owner: String,
    pub created_at: u64,
    pub rows: Vec<SealedRow>,
    pub signer: NodeId,
    /// Ed25519, 128 hex characters.
    pub signature: String,
    /// The signed message sealed under the rows' key (hex): the signature says which node
    /// signed, this says the holder of the key made this row list. Without it, anyone holding
    /// the bundle could drop rows and sign the rest with a key of their own.
    #[serde(default)]
    pub seal: String,
}

/// The label the bundle's seal is made under.
const SEAL_LABEL: &str = "haca.mem.bundle.seal.v1";

#[derive(Serialize)]
struct Unsigned<'a> {
    format: &'a str,
    owner: &'a str,
    created_at: u64,
    rows: &'a [SealedRow],
    signer: &'a NodeId,
}

impl Bundle {
    /// Seals `set` under `key` and signs the bundle with `node`.
    pub fn export(
        set: &MemorySet,
        key: &UserKey,
        node: &NodeKey,
        created_at: u64,
    ) -> Result<Bundle, MemError> {
        let mut b = Self::sign(set.owner(), set.seal_all(key)?, node, created_at)?;
        b.seal = hex::encode(key.seal_blob(SEAL_LABEL, &b.signed_message()?));
        Ok(b)
    }

    /// A signed bundle of already sealed rows (checked as [`Bundle::verify`] checks them).
    pub fn sign(
        owner: &str,
        rows: Vec<SealedRow>,
        node: &NodeKey,
        created_at: u64,
    ) -> Result<Bundle, MemError> {
        let mut b = Bundle {
            format: BUNDLE_FORMAT.into(),
            owner: owner.into(),
            created_at,
            rows,
            signer: node.node_id(),
            signature: String::new(),
            seal: String::new(),
        };
        b.check_rows()?;
        b.signature = hex::encode(node.sign(&b.signed_message()?));
        Ok(b)
    }

    /// The signed message: `haca.mem.bundle.v1:` + hex SHA-256 of the canonical unsigned bundle.
    pub fn signed_message(&self) -> Result<Vec<u8>, MemError> {
        let unsigned = Unsigned {
            format: &self.format,
            owner: &self.owner,
            created_at: self.created_at,
            rows: &self.rows,
            signer: &self.signer,
        };
        let bytes = haca_core::canonical::to_vec(&unsigned).map_err(|e| MemError::Bundle {
            field: "rows".into(),
            reason: e.to_string(),
        })?;
        Ok(format!("{BUNDLE_DOMAIN}{}", haca_core::sha256(&bytes)).into_bytes())
    }

    /// Checks the format, the signature, that every row is the owner's, ids are unique and
    /// each row's shape (tombstones without ciphertext). Returns the signer, whose trust is the
    /// importer's decision.
    pub fn verify(&self) -> Result<NodeId, MemError> {
        if self.format != BUNDLE_FORMAT {
            return Err(bad("format", format!("must be {BUNDLE_FORMAT}")));
        }
        haca_core::keys::verify(&self.signer, &self.signed_message()?, &self.signature)
            .map_err(|e| bad("signature", e))?;
        self.check_rows()?;
        Ok(self.signer)
    }

    /// Verifies the bundle and opens every row under `key` into a fresh set (its invariants
    /// checked). A row whose ciphertext does not open is named by its index.
    pub fn import(&self, key: &UserKey) -> Result<MemorySet, MemError> {
        self.verify()?;
        let sealed = hex::decode(&self.seal)
            .map_err(|e| bad("seal", format!("not hex: {e}")))
            .and_then(|b| {
                key.open_blob(SEAL_LABEL, &b).map_err(|_| {
                    bad(
                        "seal",
                        "does not open under this key (wrong key, or not the exporter's seal)",
                    )
                })
            })?;
        if sealed != self.signed_message()? {
            return Err(bad(
                "seal",
                "does not match the rows: rows were added, dropped or changed and signed again without the key",
            ));
        }
        for (i, r) in self.rows.iter().enumerate() {
            if !matches!(r.state, crate::RowState::Deleted { .. }) {
                r.open(key)
                    .map_err(|e| bad(&format!("rows[{i}].ciphertext"), e))?;
            }
        }
        MemorySet::open_all(&self.owner, key, &self.rows).map_err(|e| bad("rows", e))
    }

    fn check_rows(&self) -> Result<(), MemError> {
        let mut ids = HashSet::new();
        for (i, r) in self.rows.iter().enumerate() {
            if r.owner != self.owner {
                return Err(bad(
                    &format!("rows[{i}].owner"),
                    format!("is {}, the bundle's owner is {}", r.owner, self.owner),
                ));
            }
            if !ids.insert(r.id.as_str()) {
                return Err(bad(&format!("rows[{i}].id"), format!("{} repeats", r.id)));
            }
            r.check_shape().map_err(|e| bad(&format!("rows[{i}]"), e))?;
        }
        Ok(())
    }
}

fn bad(field: &str, reason: impl std::fmt::Display) -> MemError {
    MemError::Bundle {
        field: field.into(),
        reason: reason.to_string(),
    }
}
