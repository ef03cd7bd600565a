//! The x402 token ledger: balances, the EIP-3009 authorization nonces already used, and the
//! payments settled (or refused) on it.
//!
//! This module knows nothing of signatures or EIP-712: its caller verifies a payment (the
//! `haca-pay` rules) and then asks for the transfer. Addresses, assets and nonces are `0x`
//! hex strings (stored lowercase), amounts decimal strings of base units; arithmetic is done
//! in `u128`, so an amount above 2^128 - 1 is refused as invalid.
//!
//! [`Store::transfer_with_authorization`] is one write transaction on the store's single
//! writer: it checks that the nonce is unused and the balance sufficient, then marks the
//! nonce used, moves the amount and records the payment, all or nothing. Concurrent
//! replays of one authorization are therefore settled exactly once, and because a transfer
//! only moves value (only [`Store::mint`] creates it, raising the supply in the same
//! transaction), every asset's balances sum to its supply, across `kill -9` too.

use crate::{Store, StoreError};
use rusqlite::{params, Connection, OptionalExtension};

/// One transfer to settle: an authorization that the caller has verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// The settlement's id (haca uses the EIP-712 digest the payer signed).
    pub transaction_id: String,
    pub network: String,
    pub asset: String,
    pub from: String,
    pub to: String,
    /// Base units, decimal.
    pub amount: String,
    /// The authorization nonce, `0x` + 64 hex digits.
    pub nonce: String,
    /// What the payment paid for (a URL).
    pub resource: String,
    /// The request the payment covered, when known.
    pub request_hash: Option<String>,
    /// The run the payment paid for, when it pays for one (not a facilitator's settlement
    /// for someone else's resource).
    pub run_id: Option<String>,
    /// Unix milliseconds.
    pub verified_at: u64,
    /// Unix milliseconds.
    pub settled_at: u64,
}

/// Why the ledger refused a transfer; nothing moved (the refusal itself is recorded).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransferRefusal {
    #[error("authorization nonce {nonce} of {from} was already used")]
    NonceUsed { from: String, nonce: String },
    #[error("{from} holds {balance} base units, {required} needed")]
    InsufficientFunds {
        from: String,
        balance: String,
        required: String,
    },
}

/// A payment as stored.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PaymentRow {
    pub transaction_id: Option<String>,
    pub network: String,
    pub asset: String,
    pub payer: String,
    pub pay_to: String,
    pub amount: String,
    pub nonce: String,
    pub resource: String,
    pub request_hash: Option<String>,
    pub verified_at: u64,
    pub settled_at: Option<u64>,
    /// `settled` or `refused`.
    pub status: String,
    pub error: Option<String>,
}

fn norm(s: &str) -> String {
    s.trim().to_ascii_lowercase()
}

/// Parses a decimal amount of base units.
pub fn parse_amount(s: &str) -> Result<u128, StoreError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(StoreError::Invalid(format!(
            "amount {s:?} is not a decimal string of base units"
        )));
    }
    s.parse::<u128>().map_err(|_| {
        StoreError::Invalid(format!(
            "amount {s} is over this ledger's limit of {}",
            u128::MAX
        ))
    })
}

fn read_amount(c: &Connection, sql: &str, args: &[&str]) -> Result<u128, StoreError> {
    let text: Option<String> = c
        .prepare_cached(sql)?
        .query_row(rusqlite::params_from_iter(args.iter()), |r| r.get(0))
        .optional()?;
    match text {
        None => Ok(0),
        Some(t) => t
            .parse::<u128>()
            .map_err(|_| StoreError::Corrupt(format!("stored amount {t:?} is not a number"))),
    }
}

fn read_balance(c: &Connection, asset: &str, owner: &str) -> Result<u128, StoreError> {
    read_amount(
        c,
        "SELECT amount FROM token_balances WHERE asset = ?1 AND address = ?2",
        &[asset, owner],
    )
}

fn set_balance(c: &Connection, asset: &str, owner: &str, v: u128) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO token_balances (asset, address, amount) VALUES (?1, ?2, ?3)
         ON CONFLICT (asset, address) DO UPDATE SET amount = excluded.amount",
    )?
    .execute(params![asset, owner, v.to_string()])?;
    Ok(())
}

/// Moves `amount` of `asset` from `from` (which holds `.1`, at least `amount`) to `to`. The
/// payee's balance is read after the debit, so a payment to oneself nets to zero.
fn move_value(
    c: &Connection,
    asset: &str,
    from: (&str, u128),
    to: &str,
    amount: u128,
) -> Result<(), StoreError> {
    set_balance(c, asset, from.0, from.1 - amount)?;
    let credited = read_balance(c, asset, to)?
        .checked_add(amount)
        .ok_or_else(|| StoreError::Corrupt("a balance exceeds the supply".into()))?;
    set_balance(c, asset, to, credited)
}

fn insert_payment(
    c: &Connection,
    t: &Transfer,
    settled: bool,
    error: Option<String>,
) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO payments (transaction_id, network, asset, payer, pay_to, amount, nonce, resource,
                               request_hash, verified_at, settled_at, status, error, run_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?
    .execute(params![
        settled.then(|| t.transaction_id.clone()),
        t.network,
        norm(&t.asset),
        norm(&t.from),
        norm(&t.to),
        t.amount,
        norm(&t.nonce),
        t.resource,
        t.request_hash,
        t.verified_at as i64,
        settled.then_some(t.settled_at as i64),
        if settled { "settled" } else { "refused" },
        error,
        t.run_id,
    ])?;
    Ok(())
}

/// A charge given back: its run was never stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refund {
    pub transaction_id: String,
    pub run_id: String,
    pub asset: String,
    pub payer: String,
    pub pay_to: String,
    pub amount: String,
    pub reason: String,
}

/// Refunds, inside the write transaction `tx`, every settled and not yet refunded charge for
/// a run not stored, among the payments `filter` selects (`run_id = ?1`, or all): the amount
/// moves back from the payee to the payer and the row is marked refunded. A charge whose
/// payee no longer holds the amount is left as it is (reported by the caller's log).
fn refund_where(
    tx: &Connection,
    filter: &str,
    run_id: Option<&str>,
    reason: &str,
    at_ms: u64,
) -> Result<Vec<Refund>, StoreError> {
    let sql = format!(
        "SELECT transaction_id, run_id, asset, payer, pay_to, amount FROM payments
         WHERE status = 'settled' AND refunded_at IS NULL AND run_id IS NOT NULL AND {filter}
           AND NOT EXISTS (SELECT 1 FROM runs WHERE runs.run_id = payments.run_id)"
    );
    let rows: Vec<(String, String, String, String, String, String)> = {
        let mut st = tx.prepare(&sql)?;
        let mapped = st.query_map(rusqlite::params_from_iter(run_id), |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })?;
        mapped.collect::<Result<_, _>>()?
    };
    let mut refunds = Vec::new();
    for (transaction_id, run, asset, payer, pay_to, amount) in rows {
        let value = parse_amount(&amount)?;
        let held = read_balance(tx, &asset, &pay_to)?;
        if held < value {
            tracing::error!(
                "store: the charge {transaction_id} for run {run} cannot be refunded: {pay_to} holds {held} of {amount}"
            );
            continue;
        }
        move_value(tx, &asset, (&pay_to, held), &payer, value)?;
        tx.prepare_cached(
            "UPDATE payments SET refunded_at = ?1, refund_reason = ?2 WHERE transaction_id = ?3",
        )?
        .execute(params![at_ms as i64, reason, transaction_id])?;
        refunds.push(Refund {
            transaction_id,
            run_id: run,
            asset,
            payer,
            pay_to,
            amount,
            reason: reason.to_owned(),
        });
    }
    Ok(refunds)
}

impl Store {
    /// Settles a verified EIP-3009 authorization (see the module doc): `Ok(Ok(()))` once the
    /// transfer committed, `Ok(Err(refusal))` when the nonce was used or the balance short.
    pub async fn transfer_with_authorization(
        &self,
        t: Transfer,
    ) -> Result<Result<(), TransferRefusal>, StoreError> {
        let amount = parse_amount(&t.amount)?;
        self.write(move |tx| {
            let (asset, from, to, nonce) =
                (norm(&t.asset), norm(&t.from), norm(&t.to), norm(&t.nonce));
            let used = tx
                .prepare_cached(
                    "SELECT 1 FROM used_nonces WHERE asset = ?1 AND address = ?2 AND nonce = ?3",
                )?
                .exists(params![asset, from, nonce])?;
            let balance = read_balance(tx, &asset, &from)?;
            let refusal = if used {
                Some(TransferRefusal::NonceUsed {
                    from: from.clone(),
                    nonce: nonce.clone(),
                })
            } else if balance < amount {
                Some(TransferRefusal::InsufficientFunds {
                    from: from.clone(),
                    balance: balance.to_string(),
                    required: amount.to_string(),
                })
            } else {
                None
            };
            if let Some(r) = refusal {
                insert_payment(tx, &t, false, Some(r.to_string()))?;
                return Ok(Err(r));
            }
            tx.prepare_cached(
                "INSERT INTO used_nonces (asset, address, nonce, used_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![asset, from, nonce, t.settled_at as i64])?;
            move_value(tx, &asset, (&from, balance), &to, amount)?;
            insert_payment(tx, &t, true, None)?;
            Ok(Ok(()))
        })
        .await
    }

    /// Refunds the charge made for `run_id` when no run with that id is stored (the run
    /// failed after its payment settled): `None` when there is nothing to refund (no charge
    /// on this ledger, already refunded, or the run exists). The authorization's nonce stays
    /// used; the value goes back.
    pub async fn refund_unrun(
        &self,
        run_id: &str,
        reason: &str,
        at_ms: u64,
    ) -> Result<Option<Refund>, StoreError> {
        let (run_id, reason) = (run_id.to_owned(), reason.to_owned());
        self.write(move |tx| {
            Ok(
                refund_where(tx, "run_id = ?1", Some(&run_id), &reason, at_ms)?
                    .into_iter()
                    .next(),
            )
        })
        .await
    }

    /// Refunds every charge whose run was never stored. Call it at start, when no run is in
    /// flight: such a charge was taken by a node that stopped before it stored the run.
    pub async fn refund_orphan_charges(
        &self,
        reason: &str,
        at_ms: u64,
    ) -> Result<Vec<Refund>, StoreError> {
        let reason = reason.to_owned();
        self.write(move |tx| refund_where(tx, "1 = 1", None, &reason, at_ms))
            .await
    }

    /// Faucet: creates `amount` base units of `asset` in `to`'s balance and raises the supply
    /// by as much, in one transaction. Returns the new balance.
    pub async fn mint(&self, asset: &str, to: &str, amount: &str) -> Result<String, StoreError> {
        let amount = parse_amount(amount)?;
        let (asset, to) = (norm(asset), norm(to));
        self.write(move |tx| {
            let supply = read_amount(
                tx,
                "SELECT amount FROM token_supply WHERE asset = ?1",
                &[&asset],
            )?;
            let supply = supply.checked_add(amount).ok_or_else(|| {
                StoreError::Invalid(format!(
                    "minting {amount} would take the supply of {asset} over {}",
                    u128::MAX
                ))
            })?;
            tx.prepare_cached(
                "INSERT INTO token_supply (asset, amount) VALUES (?1, ?2)
                 ON CONFLICT (asset) DO UPDATE SET amount = excluded.amount",
            )?
            .execute(params![asset, supply.to_string()])?;
            // No balance exceeds the supply, so this cannot overflow.
            let balance = read_balance(tx, &asset, &to)? + amount;
            set_balance(tx, &asset, &to, balance)?;
            Ok(balance.to_string())
        })
        .await
    }

    /// `owner`'s balance of `asset`, decimal base units ("0" when it never held any).
    pub fn balance(&self, asset: &str, owner: &str) -> Result<String, StoreError> {
        self.read(|c| Ok(read_balance(c, &norm(asset), &norm(owner))?.to_string()))
    }

    /// Whether `from` already used authorization `nonce` on `asset`.
    pub fn nonce_used(&self, asset: &str, from: &str, nonce: &str) -> Result<bool, StoreError> {
        self.read(|c| {
            Ok(c.prepare_cached(
                "SELECT 1 FROM used_nonces WHERE asset = ?1 AND address = ?2 AND nonce = ?3",
            )?
            .exists(params![norm(asset), norm(from), norm(nonce)])?)
        })
    }

    /// Everything minted of `asset`.
    pub fn total_supply(&self, asset: &str) -> Result<String, StoreError> {
        self.read(|c| {
            Ok(read_amount(
                c,
                "SELECT amount FROM token_supply WHERE asset = ?1",
                &[&norm(asset)],
            )?
            .to_string())
        })
    }

    /// The sum of all balances of `asset` (equals [`Store::total_supply`]).
    pub fn sum_of_balances(&self, asset: &str) -> Result<String, StoreError> {
        self.read(|c| {
            let mut st = c.prepare_cached("SELECT amount FROM token_balances WHERE asset = ?1")?;
            let rows = st.query_map([norm(asset)], |r| r.get::<_, String>(0))?;
            let mut sum: u128 = 0;
            for t in rows {
                let t = t?;
                let v = t.parse::<u128>().map_err(|_| {
                    StoreError::Corrupt(format!("stored amount {t:?} is not a number"))
                })?;
                sum = sum
                    .checked_add(v)
                    .ok_or_else(|| StoreError::Corrupt("balances overflow".into()))?;
            }
            Ok(sum.to_string())
        })
    }

    /// The payment settled as `transaction_id`.
    pub fn payment(&self, transaction_id: &str) -> Result<Option<PaymentRow>, StoreError> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT transaction_id, network, asset, payer, pay_to, amount, nonce, resource, request_hash,
                        verified_at, settled_at, status, error
                 FROM payments WHERE transaction_id = ?1",
                [transaction_id],
                |r| {
                    Ok(PaymentRow {
                        transaction_id: r.get(0)?,
                        network: r.get(1)?,
                        asset: r.get(2)?,
                        payer: r.get(3)?,
                        pay_to: r.get(4)?,
                        amount: r.get(5)?,
                        nonce: r.get(6)?,
                        resource: r.get(7)?,
                        request_hash: r.get(8)?,
                        verified_at: r.get::<_, i64>(9)? as u64,
                        settled_at: r.get::<_, Option<i64>>(10)?.map(|v| v as u64),
                        status: r.get(11)?,
                        error: r.get(12)?,
                    })
                },
            )
            .optional()?)
        })
    }

    /// How many payments have each status: `(settled, refused)`.
    pub fn count_payments(&self) -> Result<(u64, u64), StoreError> {
        self.read(|c| {
            let n = |status: &str| -> Result<u64, StoreError> {
                Ok(c.query_row(
                    "SELECT COUNT(*) FROM payments WHERE status = ?1",
                    [status],
                    |r| r.get::<_, i64>(0),
                )? as u64)
            };
            Ok((n("settled")?, n("refused")?))
        })
    }
}

/// An API key as stored: its public id, the SHA-256 of the key, and the ledger account
/// its balance lives at.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ApiKeyRow {
    pub id: String,
    pub key_hash: String,
    pub account: String,
    pub label: Option<String>,
    pub created_at: u64,
    pub created_by: String,
    pub revoked_at: Option<u64>,
}

impl Store {
    /// Records a new API key.
    pub async fn create_api_key(&self, row: ApiKeyRow) -> Result<(), StoreError> {
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO api_keys (id, key_hash, account, label, created_at, created_by, revoked_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    row.id,
                    row.key_hash,
                    row.account,
                    row.label,
                    row.created_at as i64,
                    row.created_by,
                    row.revoked_at.map(|t| t as i64)
                ],
            )?;
            Ok(())
        })
        .await
    }

    /// Revokes the API key `id` at `at_ms`; `Ok(false)` when there is no such key. Revoking
    /// twice keeps the first time. The key's balance stays in its account.
    pub async fn revoke_api_key(&self, id: &str, at_ms: u64) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.write(move |tx| {
            let exists = tx
                .prepare_cached("SELECT 1 FROM api_keys WHERE id = ?1")?
                .exists([&id])?;
            tx.execute(
                "UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                params![id, at_ms as i64],
            )?;
            Ok(exists)
        })
        .await
    }

    /// The API key whose SHA-256 is `key_hash`, revoked or not.
    pub fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKeyRow>, StoreError> {
        self.read(|c| {
            Ok(c.prepare_cached(
                "SELECT id, key_hash, account, label, created_at, created_by, revoked_at
                 FROM api_keys WHERE key_hash = ?1",
            )?
            .query_row([key_hash], |r| {
                Ok(ApiKeyRow {
                    id: r.get(0)?,
                    key_hash: r.get(1)?,
                    account: r.get(2)?,
                    label: r.get(3)?,
                    created_at: r.get::<_, i64>(4)? as u64,
                    created_by: r.get(5)?,
                    revoked_at: r.get::<_, Option<i64>>(6)?.map(|t| t as u64),
                })
            })
            .optional()?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const ASSET: &str = "0x5FbDB2315678afecb367f032d93F642f64180aa3";

    fn transfer(from: &str, to: &str, amount: &str, nonce: u8) -> Transfer {
        Transfer {
            transaction_id: format!("0x{}", hex::encode([nonce; 32])),
            network: "eip155:31337".into(),
            asset: ASSET.into(),
            from: from.into(),
            to: to.into(),
            amount: amount.into(),
            nonce: format!("0x{}", hex::encode([nonce; 32])),
            resource: "http://x/v1/infer".into(),
            request_hash: None,
            run_id: None,
            verified_at: 1,
            settled_at: 2,
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_charge_whose_run_was_never_stored_is_refunded_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("haca.db")).unwrap();
        let (payer, payee) = (
            "0xAAaa000000000000000000000000000000000001",
            "0xbb00000000000000000000000000000000000002",
        );
        store.mint(ASSET, payer, "1000").await.unwrap();
        let charge = |nonce: u8, run: &str| Transfer {
            run_id: Some(run.into()),
            ..transfer(payer, payee, "100", nonce)
        };
        for (nonce, run) in [(1, "run-stored"), (2, "run-lost"), (3, "run-failed")] {
            store
                .transfer_with_authorization(charge(nonce, run))
                .await
                .unwrap()
                .unwrap();
        }
        store
            .insert_run(crate::RunRecord {
                run_id: "run-stored".into(),
                created_at: 3,
                model: "m".into(),
                blob_id: String::new(),
                mode: "vanilla".into(),
                node_id: "n".into(),
                receipt_digest: "d".into(),
                output: "null".into(),
                receipt: "{}".into(),
                outbox: None,
            })
            .await
            .unwrap();
        assert_eq!(store.balance(ASSET, payer).unwrap(), "700");
        // A run that failed after its charge: refunded now, and only once.
        let r = store
            .refund_unrun("run-failed", "every route failed", 5)
            .await
            .unwrap()
            .expect("a refund");
        assert_eq!(
            (r.amount.as_str(), r.run_id.as_str()),
            ("100", "run-failed")
        );
        assert!(store
            .refund_unrun("run-failed", "again", 6)
            .await
            .unwrap()
            .is_none());
        // A stored run is never refunded.
        assert!(store
            .refund_unrun("run-stored", "no", 6)
            .await
            .unwrap()
            .is_none());
        // At start: the charge whose run was lost.
        let lost = store
            .refund_orphan_charges("the node stopped before storing the run", 7)
            .await
            .unwrap();
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0].run_id, "run-lost");
        assert!(store
            .refund_orphan_charges("again", 8)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(store.balance(ASSET, payer).unwrap(), "900");
        assert_eq!(store.balance(ASSET, payee).unwrap(), "100");
        assert_eq!(
            store.sum_of_balances(ASSET).unwrap(),
            store.total_supply(ASSET).unwrap()
        );
        // The authorization stays spent: a refund is not a replay ticket.
        assert!(store
            .nonce_used(ASSET, payer, &format!("0x{}", hex::encode([2u8; 32])))
            .unwrap());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn concurrent_replays_settle_once_and_totals_are_conserved() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path().join("haca.db")).unwrap());
        let (a, b) = (
            "0xAAaa000000000000000000000000000000000001",
            "0xbb00000000000000000000000000000000000002",
        );
        assert_eq!(store.mint(ASSET, a, "1000").await.unwrap(), "1000");
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                s.transfer_with_authorization(transfer(a, b, "300", 7))
                    .await
            }));
        }
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap().unwrap() {
                Ok(()) => ok += 1,
                Err(TransferRefusal::NonceUsed { .. }) => {}
                Err(other) => panic!("unexpected refusal {other}"),
            }
        }
        assert_eq!(ok, 1);
        assert_eq!(store.balance(ASSET, a).unwrap(), "700");
        assert_eq!(store.balance(&ASSET.to_lowercase(), b).unwrap(), "300");
        assert!(store
            .nonce_used(ASSET, a, &format!("0x{}", hex::encode([7u8; 32])))
            .unwrap());
        assert_eq!(store.count_payments().unwrap(), (1, 99));
        // Short balance: refused, nothing moves.
        let r = store
            .transfer_with_authorization(transfer(a, b, "701", 8))
            .await
            .unwrap();
        assert!(
            matches!(r, Err(TransferRefusal::InsufficientFunds { .. })),
            "{r:?}"
        );
        // Paying oneself nets to zero.
        store
            .transfer_with_authorization(transfer(a, a, "700", 9))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(store.balance(ASSET, a).unwrap(), "700");
        assert_eq!(
            store.sum_of_balances(ASSET).unwrap(),
            store.total_supply(ASSET).unwrap()
        );
        let row = store
            .payment(&format!("0x{}", hex::encode([7u8; 32])))
            .unwrap()
            .unwrap();
        assert_eq!(
            (row.status.as_str(), row.amount.as_str()),
            ("settled", "300")
        );
        // Used nonces are append-only.
        let err = store
            .write_blocking(|tx| Ok(tx.execute("DELETE FROM used_nonces", [])?))
            .unwrap_err();
        assert!(err.to_string().contains("stays used"), "{err}");
        drop(store);
        let reopened = Store::open(dir.path().join("haca.db")).unwrap();
        assert_eq!(reopened.total_supply(ASSET).unwrap(), "1000");
        assert!(reopened.mint(ASSET, a, "abc").await.is_err());
    }
}
