//! The token ledger that `exact` payments move money on: the [`Ledger`] view the verification
//! rules read, and [`MemLedger`], an in-memory EIP-3009 token (balances, used authorization
//! nonces, a faucet) for tests and for a persistent store to mirror.

use crate::facilitator::VerifiedPayment;
use alloy_primitives::{Address, B256, U256};
use std::collections::{BTreeMap, BTreeSet};

/// What the verification rules read from a token ledger. The caller implements it over its
/// store (or a chain).
pub trait Ledger {
    /// `owner`'s balance of `asset`, in base units.
    fn balance(&self, asset: Address, owner: Address) -> U256;
    /// Whether `from` already used authorization `nonce` on `asset` (EIP-3009
    /// `authorizationState`).
    fn nonce_used(&self, asset: Address, from: Address, nonce: B256) -> bool;
}

/// Why the ledger refused a transfer or a mint. Nothing changed when it did.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("authorization nonce {nonce} of {from} was already used")]
    NonceUsed { from: Address, nonce: B256 },
    #[error("{owner} holds {balance} base units, {required} needed")]
    InsufficientFunds {
        owner: Address,
        balance: U256,
        required: U256,
    },
    #[error("authorization is not valid yet: validAfter {valid_after}, now {now}")]
    NotYetValid { valid_after: U256, now: u64 },
    #[error("authorization expired: validBefore {valid_before}, now {now}")]
    Expired { valid_before: U256, now: u64 },
    #[error("minting {amount} would overflow the total supply of {asset}")]
    SupplyOverflow { asset: Address, amount: U256 },
}

/// An in-memory token ledger: per-asset balances, per-asset used `(from, nonce)` pairs and the
/// total supply. Money enters only by [`mint`](Self::mint) and moves only by
/// [`transfer_with_authorization`](Self::transfer_with_authorization), so every asset's
/// balances always sum to its total supply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemLedger {
    balances: BTreeMap<(Address, Address), U256>,
    used: BTreeSet<(Address, Address, B256)>,
    supply: BTreeMap<Address, U256>,
}

impl MemLedger {
    pub fn new() -> Self {
        Self::default()
    }

    /// Faucet: create `amount` of `asset` in `to`'s balance.
    pub fn mint(&mut self, asset: Address, to: Address, amount: U256) -> Result<(), LedgerError> {
        let supply = self.supply.get(&asset).copied().unwrap_or_default();
        let new_supply = supply
            .checked_add(amount)
            .ok_or(LedgerError::SupplyOverflow { asset, amount })?;
        // No balance can exceed the supply, so this add cannot overflow either.
        *self.balances.entry((asset, to)).or_default() += amount;
        self.supply.insert(asset, new_supply);
        Ok(())
    }

    /// Settle a verified `exact` payment as the token's `transferWithAuthorization` does: check
    /// the validity window against `now` (validAfter < now < validBefore), that the nonce is
    /// unused and the balance sufficient; then mark the nonce used and move the value, all or
    /// nothing.
    pub fn transfer_with_authorization(
        &mut self,
        payment: &VerifiedPayment,
        now: u64,
    ) -> Result<(), LedgerError> {
        let auth = payment.authorization();
        let t = U256::from(now);
        if t <= auth.valid_after {
            return Err(LedgerError::NotYetValid {
                valid_after: auth.valid_after,
                now,
            });
        }
        if t >= auth.valid_before {
            return Err(LedgerError::Expired {
                valid_before: auth.valid_before,
                now,
            });
        }
        self.transfer(payment.asset(), auth.from, auth.to, auth.value, auth.nonce)
    }

    fn transfer(
        &mut self,
        asset: Address,
        from: Address,
        to: Address,
        value: U256,
        nonce: B256,
    ) -> Result<(), LedgerError> {
        if self.used.contains(&(asset, from, nonce)) {
            return Err(LedgerError::NonceUsed { from, nonce });
        }
        let balance = self.balance(asset, from);
        if balance < value {
            return Err(LedgerError::InsufficientFunds {
                owner: from,
                balance,
                required: value,
            });
        }
        // Checked above; nothing below can fail.
        self.used.insert((asset, from, nonce));
        *self.balances.entry((asset, from)).or_default() -= value;
        *self.balances.entry((asset, to)).or_default() += value;
        Ok(())
    }

    /// Everything minted of `asset` so far.
    pub fn total_supply(&self, asset: Address) -> U256 {
        self.supply.get(&asset).copied().unwrap_or_default()
    }

    /// Sum of all balances of `asset` (equals [`total_supply`](Self::total_supply)).
    pub fn sum_of_balances(&self, asset: Address) -> U256 {
        self.balances
            .iter()
            .filter(|((a, _), _)| *a == asset)
            .fold(U256::ZERO, |acc, (_, b)| acc + *b)
    }
}

impl Ledger for MemLedger {
    fn balance(&self, asset: Address, owner: Address) -> U256 {
        self.balances
            .get(&(asset, owner))
            .copied()
            .unwrap_or_default()
    }

    fn nonce_used(&self, asset: Address, from: Address, nonce: B256) -> bool {
        self.used.contains(&(asset, from, nonce))
    }
}
