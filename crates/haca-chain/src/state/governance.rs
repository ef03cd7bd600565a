//! Governance: changes to the validator set, the gateway registry and the approved PCR sets,
//! approved by more than 2/3 of the validators' voting power.

use super::tee::apply_pcr_action;
use super::ChainState;
use haca_core::canonical;
use haca_core::settlement::{GatewayEntry, Validator, ValidatorSet};
use haca_core::{Digest, NodeId, NodeKey};
use haca_tee::registry::{PcrSet, TeeRegistry};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;

/// What a governance transaction changes.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum GovAction {
    /// Adds a validator with `power` (> 0); it signs from the height after the block.
    AddValidator { public_key: NodeId, power: u64 },
    /// Removes a validator; it signs no block after the one that removes it.
    RemoveValidator { public_key: NodeId },
    /// Registers a gateway key: its records settle from the next block.
    RegisterGateway { node: NodeId },
    /// Removes a gateway key: its records settled so far stay settled, later ones are refused.
    RemoveGateway { node: NodeId },
    /// Approves a PCR set (PCR0..2) for enclave registration.
    ApprovePcrs { pcrs: PcrSet },
    /// Revokes an approved PCR set by its id ([`PcrSet::id`]): every enclave registered with
    /// it is disabled, and stays disabled (even if the set is approved again) until it
    /// registers again.
    RevokePcrs { pcr_set: Digest },
}

/// One validator's approval of a governance transaction: a hex Ed25519 signature over
/// [`governance_message`].
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    pub validator: NodeId,
    pub signature: String,
}

impl Approval {
    /// `key`'s approval of governance change `seq` doing `action` on chain `chain_id`.
    pub fn sign(key: &NodeKey, chain_id: &str, seq: u64, action: &GovAction) -> Approval {
        Approval {
            validator: key.node_id(),
            signature: hex::encode(key.sign(&governance_message(chain_id, seq, action))),
        }
    }
}

/// Bytes a validator signs to approve a governance change:
/// `"haca.gov.v1:" || JCS({chain_id, seq, action})`.
pub fn governance_message(chain_id: &str, seq: u64, action: &GovAction) -> Vec<u8> {
    let mut m = b"haca.gov.v1:".to_vec();
    m.extend(
        canonical::to_vec(&json!({"chain_id": chain_id, "seq": seq, "action": action}))
            .expect("governance actions canonicalize"),
    );
    m
}

/// What a governance action changes: the new validator set, or the new gateway map with
/// the entry of a removed gateway.
pub(super) struct Registries {
    pub(super) validators: Option<ValidatorSet>,
    pub(super) gateways: Option<(BTreeMap<NodeId, u64>, Option<GatewayEntry>)>,
    pub(super) tee: Option<TeeRegistry>,
}

impl ChainState {
    /// Checks a governance transaction: the next seq, a valid action, and approvals signed
    /// by validators of the current set holding more than 2/3 of its power. Approvals by keys
    /// outside the set do not count; a signature that does not verify refuses the whole
    /// transaction; a validator approving twice counts once.
    pub(super) fn check_governance(
        &self,
        seq: u64,
        action: &GovAction,
        approvals: &[Approval],
    ) -> Result<(), String> {
        let expected = self.governance_seq + 1;
        if seq <= self.governance_seq {
            return Err(format!(
                "governance seq {seq} was already applied; the next governance change is seq {expected}"
            ));
        }
        if seq != expected {
            return Err(format!(
                "governance seq {seq} is out of order: expected seq {expected}"
            ));
        }
        self.apply_action(action, self.height + 1)
            .map(drop)
            .map_err(|e| format!("governance seq {seq}: {e}"))?;
        let message = governance_message(&self.chain_id, seq, action);
        let mut counted = std::collections::BTreeSet::new();
        let (mut power, mut outsiders) = (0u64, 0usize);
        for a in approvals {
            haca_core::keys::verify(&a.validator, &message, &a.signature).map_err(|e| {
                format!(
                    "governance seq {seq}: the approval of {} does not verify: {e}",
                    a.validator
                )
            })?;
            match self.validators.power_of(&a.validator) {
                Some(p) if counted.insert(a.validator) => power += p,
                Some(_) => {}
                None => outsiders += 1,
            }
        }
        if !self.validators.is_quorum(power) {
            let mut e = format!(
                "governance seq {seq}: approvals hold {power} of {} voting power; more than 2/3 is needed",
                self.validators.total_power()
            );
            if outsiders > 0 {
                e.push_str(&format!(
                    " ({outsiders} approval(s) by keys outside the validator set do not count)"
                ));
            }
            return Err(e);
        }
        Ok(())
    }

    /// Applies a governance action to a copy of the registries; `height` is the block that
    /// carries it. Errors say why the action does not apply to this state.
    pub(super) fn apply_action(
        &self,
        action: &GovAction,
        height: u64,
    ) -> Result<Registries, String> {
        let mut r = Registries {
            validators: None,
            gateways: None,
            tee: None,
        };
        match action {
            GovAction::AddValidator { public_key, power } => {
                if *power == 0 {
                    return Err(format!(
                        "validator {public_key} cannot be added with zero voting power"
                    ));
                }
                if self.validators.power_of(public_key).is_some() {
                    return Err(format!("{public_key} is already a validator"));
                }
                let mut list = self.validators.validators().to_vec();
                list.push(Validator {
                    public_key: *public_key,
                    power: *power,
                });
                r.validators = Some(ValidatorSet::new(list)?);
            }
            GovAction::RemoveValidator { public_key } => {
                if self.validators.power_of(public_key).is_none() {
                    return Err(format!("{public_key} is not a validator"));
                }
                let list: Vec<Validator> = self
                    .validators
                    .validators()
                    .iter()
                    .filter(|v| v.public_key != *public_key)
                    .copied()
                    .collect();
                if list.is_empty() {
                    return Err(format!(
                        "removing {public_key} would leave the validator set empty"
                    ));
                }
                r.validators = Some(ValidatorSet::new(list)?);
            }
            GovAction::RegisterGateway { node } => {
                if self.gateways.contains_key(node) {
                    return Err(format!("gateway {node} is already registered"));
                }
                let mut g = self.gateways.clone();
                g.insert(*node, height);
                r.gateways = Some((g, None));
            }
            GovAction::RemoveGateway { node } => {
                let Some(from) = self.gateways.get(node) else {
                    return Err(format!("gateway {node} is not registered"));
                };
                let entry = GatewayEntry {
                    node: *node,
                    from_height: *from,
                    until_height: Some(height),
                };
                let mut g = self.gateways.clone();
                g.remove(node);
                r.gateways = Some((g, Some(entry)));
            }
            GovAction::ApprovePcrs { .. } | GovAction::RevokePcrs { .. } => {
                let mut tee = self.tee.clone();
                apply_pcr_action(&mut tee, action)?;
                r.tee = Some(tee);
            }
        }
        Ok(r)
    }
}
