//! The TEE registry in chain state: PCR sets approved and revoked by governance, enclaves
//! registered with a Nitro attestation document that every validator verifies the same way
//! (at the document's own time, against the roots the chain trusts), heartbeats, the active
//! query, and replay to the same state hash.

use haca_chain::state::{Approval, GovAction, TeeConfig, Tx};
use haca_chain::{Block, ChainState, SignatureAndHashes};
use haca_core::settlement::{Genesis, SettlementParams, Validator, ValidatorSet};
use haca_core::{NodeId, NodeKey};
use haca_tee::registry::{sign_heartbeat, tee_id_of, PcrSet, RegistryParams};
use haca_tee::{dev_pcrs, DevCa, DocumentRequest};

const CHAIN: &str = "haca-tee-chain";
const MIN: u64 = 60_000;

const FIXTURE: &[u8] =
    include_bytes!("../../../haca-tee/tests/fixtures/nitro/nitroprover_sample.cbor");
const FIXTURE_AT: &str =
    include_str!("../../../haca-tee/tests/fixtures/nitro/nitroprover_sample.at");
const FIXTURE_PCR0: &str =
    include_str!("../../../haca-tee/tests/fixtures/nitro/nitroprover_sample.pcr0");

fn fixture_at() -> u64 {
    FIXTURE_AT.trim().parse().unwrap()
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn validators() -> Vec<NodeKey> {
    (0..4).map(|i| NodeKey::from_seed([10 + i; 32])).collect()
}

fn genesis(vals: &[NodeKey], time_ms: u64) -> Genesis {
    Genesis {
        tee: None,
        chain_id: CHAIN.into(),
        genesis_time_ms: time_ms,
        validators: ValidatorSet::new(
            vals.iter()
                .map(|k| Validator {
                    public_key: k.node_id(),
                    power: 1,
                })
                .collect(),
        )
        .unwrap(),
        gateways: vec![],
        settlement: SettlementParams::default(),
    }
}

/// The next governance transaction, approved by three of the four validators.
fn gov(state: &ChainState, vals: &[NodeKey], action: GovAction) -> Tx {
    let seq = state.governance_seq + 1;
    Tx::Governance {
        seq,
        approvals: vals[..3]
            .iter()
            .map(|k| Approval::sign(k, CHAIN, seq, &action))
            .collect(),
        action,
    }
}

/// Proposes a block at `time_ms`, checks that another validator accepts it, and returns both.
fn step(state: &ChainState, time_ms: u64, txs: Vec<Tx>) -> (Block, ChainState) {
    let (block, next) = state.propose(time_ms, vec![], txs, &SignatureAndHashes);
    let checked = state.check(&block, &SignatureAndHashes).unwrap();
    assert_eq!(checked.hash(), next.hash());
    assert_eq!(block.header.state_hash, next.hash());
    (block, next)
}

/// The fixture's PCR0..2, as the verifier reads them.
fn fixture_pcrs() -> PcrSet {
    let v = haca_tee::verify(FIXTURE, &haca_tee::Policy::audit()).unwrap();
    assert_eq!(v.pcrs[&0], FIXTURE_PCR0.trim());
    PcrSet::from_pcrs(&v.pcrs).unwrap()
}

/// The fixture's `public_key` (32 bytes): the Ed25519 key it binds.
fn fixture_key() -> NodeId {
    let v = haca_tee::verify(FIXTURE, &haca_tee::Policy::audit()).unwrap();
    NodeId(v.public_key.unwrap().try_into().unwrap())
}

#[test]
fn a_real_document_registers_after_governance_approves_its_pcrs_and_revocation_disables_it() {
    let vals = validators();
    let at = fixture_at();
    let g = genesis(&vals, at - 10_000);
    let s0 = ChainState::genesis(&g);
    let key = fixture_key();
    let register = |at_ms| Tx::RegisterEnclave {
        document_b64: b64(FIXTURE),
        signing_key: key,
        at_ms,
    };

    // Without approved PCRs: refused by check_tx, left out by the proposer.
    let err = s0.check_tx(&register(at)).unwrap_err();
    assert!(
        err.starts_with(&format!("enclave registration of {key}: PCR set "))
            && err.ends_with("is not approved"),
        "{err}"
    );
    let (b1, s1) = step(&s0, at, vec![register(at)]);
    assert!(b1.txs.is_empty());
    // A block that carries it anyway is refused.
    let mut forged = b1.clone();
    forged.txs = vec![register(at)];
    assert!(s0.check(&forged, &SignatureAndHashes).is_err());
    assert_eq!(s1.hash(), {
        // An empty registry keeps the pre-registry state hash layout: genesis with the
        // default TEE config hashes like plain genesis.
        let s = ChainState::genesis_with_tee(&g, &TeeConfig::default()).unwrap();
        assert_eq!(s.hash(), s0.hash());
        s1.hash()
    });

    // Governance approves the fixture's PCR set.
    let pcrs = fixture_pcrs();
    let (b2, s2) = step(
        &s1,
        at + 1_000,
        vec![gov(
            &s1,
            &vals,
            GovAction::ApprovePcrs { pcrs: pcrs.clone() },
        )],
    );
    assert_eq!(b2.txs.len(), 1);
    assert!(s2.tee.is_approved(&pcrs.id()));
    assert_ne!(s2.hash(), s1.hash());

    // at_ms after the block time is refused.
    assert!(s2
        .check_tx_at(&register(at + 3_000), at + 2_000)
        .unwrap_err()
        .ends_with(&format!(
            "at_ms {} is after the block time {}",
            at + 3_000,
            at + 2_000
        )));
    // Registration with the real document.
    let (b3, s3) = step(&s2, at + 2_000, vec![register(at + 2_000)]);
    assert_eq!(b3.txs.len(), 1);
    let tee_id = tee_id_of(&key);
    let e = s3.tee.enclave(&tee_id).unwrap();
    assert!(e.enabled && !e.dev);
    assert_eq!(e.last_heartbeat_ms, at);
    assert_eq!(e.registered_at_ms, at + 2_000);
    let active = s3.active_enclaves(at + 2_000);
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].tee_id, tee_id);
    // The registries carry it.
    assert_eq!(s3.registries().tee, s3.tee);
    assert_eq!(s3.registries().hash(), s3.hash());
    // Registering again is refused; inactive once its last heartbeat (the document) is old.
    assert!(s3
        .check_tx(&register(at + 3_000))
        .unwrap_err()
        .ends_with("is already registered and enabled"));
    assert!(s3.active_enclaves(at + 10 * MIN + 1).is_empty());

    // Governance revokes the set: the enclave is disabled, no longer active.
    let (_, s4) = step(
        &s3,
        at + 3_000,
        vec![gov(
            &s3,
            &vals,
            GovAction::RevokePcrs { pcr_set: pcrs.id() },
        )],
    );
    assert!(!s4.tee.enclave(&tee_id).unwrap().enabled);
    assert!(s4.active_enclaves(at + 3_000).is_empty());
    // Revoking it again is refused.
    assert!(s4
        .check_tx(&gov(
            &s4,
            &vals,
            GovAction::RevokePcrs { pcr_set: pcrs.id() }
        ))
        .unwrap_err()
        .ends_with("is not approved"));
}

#[test]
fn a_stale_or_untrusted_document_is_refused() {
    let vals = validators();
    let at = fixture_at();
    // Approved PCRs, but the chain's block time is more than 5 minutes after the document.
    let s0 = ChainState::genesis(&genesis(&vals, at - 10_000));
    let (_, s1) = step(
        &s0,
        at,
        vec![gov(
            &s0,
            &vals,
            GovAction::ApprovePcrs {
                pcrs: fixture_pcrs(),
            },
        )],
    );
    let tx = Tx::RegisterEnclave {
        document_b64: b64(FIXTURE),
        signing_key: fixture_key(),
        at_ms: at,
    };
    let err = s1.check_tx_at(&tx, at + 5 * MIN + 1).unwrap_err();
    assert!(
        err.ends_with(&format!(
            "is 300001 ms old at the block time {}; the maximum age is 300000 ms",
            at + 5 * MIN + 1
        )),
        "{err}"
    );
    let (b, _) = step(&s1, at + 5 * MIN + 1, vec![tx.clone()]);
    assert!(b.txs.is_empty());
    s1.check_tx_at(&tx, at + 5 * MIN).unwrap();

    // Not base64, not a document, a document bound to another key.
    let bad = Tx::RegisterEnclave {
        document_b64: "***".into(),
        signing_key: fixture_key(),
        at_ms: at,
    };
    assert!(s1
        .check_tx(&bad)
        .unwrap_err()
        .contains("document_b64: not standard base64"));
    let garbage = Tx::RegisterEnclave {
        document_b64: b64(b"not a document"),
        signing_key: fixture_key(),
        at_ms: at,
    };
    assert!(s1
        .check_tx(&garbage)
        .unwrap_err()
        .contains("attestation document: "));
    let other = NodeKey::from_seed([5; 32]).node_id();
    let unbound = Tx::RegisterEnclave {
        document_b64: b64(FIXTURE),
        signing_key: other,
        at_ms: at,
    };
    assert!(s1
        .check_tx(&unbound)
        .unwrap_err()
        .contains(&format!("does not bind signing key {other}")));

    // A dev document on a chain that names no dev root: an untrusted root.
    let ca = DevCa::from_seed(&[3; 32]);
    let doc = ca
        .document(&DocumentRequest {
            timestamp_ms: at,
            pcrs: dev_pcrs(b"image"),
            public_key: Some(other.0.to_vec()),
            ..Default::default()
        })
        .unwrap();
    let dev = Tx::RegisterEnclave {
        document_b64: b64(&doc),
        signing_key: other,
        at_ms: at,
    };
    assert!(s1.check_tx(&dev).unwrap_err().contains("untrusted root"));
}

/// A devnet-style chain: a dev root that the genesis names, dev roots allowed.
fn dev_chain(vals: &[NodeKey], ca: &DevCa, t0: u64, allow: bool) -> ChainState {
    let config = TeeConfig {
        registry: RegistryParams {
            allow_dev_roots: allow,
            ..RegistryParams::default()
        },
        dev_root_der_hex: Some(hex::encode(ca.root_der())),
    };
    ChainState::genesis_with_tee(&genesis(vals, t0), &config).unwrap()
}

fn dev_pcr_set() -> PcrSet {
    let p = dev_pcrs(b"image");
    PcrSet::new(
        &hex::encode(&p[&0]),
        &hex::encode(&p[&1]),
        &hex::encode(&p[&2]),
    )
    .unwrap()
}

#[test]
fn heartbeats_keep_a_dev_enclave_active_and_replay_reaches_the_same_hash() {
    let vals = validators();
    let ca = DevCa::from_seed(&[3; 32]);
    let t0 = 1_764_000_000_000;
    let enclave = NodeKey::from_seed([42; 32]);
    let doc = ca
        .document(&DocumentRequest {
            timestamp_ms: t0,
            pcrs: dev_pcrs(b"image"),
            public_key: Some(enclave.node_id().0.to_vec()),
            ..Default::default()
        })
        .unwrap();
    let register = Tx::RegisterEnclave {
        document_b64: b64(&doc),
        signing_key: enclave.node_id(),
        at_ms: t0 + 1_000,
    };

    // The dev root is trusted but dev enclaves are not allowed: refused as such.
    let strict = dev_chain(&vals, &ca, t0, false);
    let (_, strict1) = step(
        &strict,
        t0,
        vec![gov(
            &strict,
            &vals,
            GovAction::ApprovePcrs {
                pcrs: dev_pcr_set(),
            },
        )],
    );
    assert!(strict1
        .check_tx(&register)
        .unwrap_err()
        .contains("chains to a dev root, and this registry does not allow dev roots"));
    // A genesis with a bad dev root is refused.
    let bad = TeeConfig {
        dev_root_der_hex: Some("zz".into()),
        ..TeeConfig::default()
    };
    assert!(ChainState::genesis_with_tee(&genesis(&vals, t0), &bad)
        .unwrap_err()
        .starts_with("tee.dev_root_der_hex: not hex"));

    let s0 = dev_chain(&vals, &ca, t0, true);
    assert_ne!(s0.hash(), ChainState::genesis(&genesis(&vals, t0)).hash());
    let mut blocks = Vec::new();
    let (b, s1) = step(
        &s0,
        t0,
        vec![gov(
            &s0,
            &vals,
            GovAction::ApprovePcrs {
                pcrs: dev_pcr_set(),
            },
        )],
    );
    blocks.push(b);
    let (b, s2) = step(&s1, t0 + 1_000, vec![register]);
    blocks.push(b);
    let tee_id = tee_id_of(&enclave.node_id());
    assert!(s2.tee.enclave(&tee_id).unwrap().dev);

    let hb = |at_ms| Tx::EnclaveHeartbeat {
        tee_id,
        at_ms,
        signature: sign_heartbeat(&enclave, at_ms),
    };
    // After the block time: refused in that block, admitted to the mempool.
    let t = t0 + 8 * MIN;
    assert!(s2
        .check_tx_at(&hb(t + 1), t)
        .unwrap_err()
        .ends_with(&format!("is dated {}, after the current time {t}", t + 1)));
    s2.check_tx(&hb(t + 1)).unwrap();
    // Twice in one block: the proposer keeps one; a block with both is refused.
    let (b, s3) = step(&s2, t, vec![hb(t - 1), hb(t - 1)]);
    assert_eq!(b.txs.len(), 1);
    let mut forged = b.clone();
    forged.txs = vec![hb(t - 1), hb(t - 1)];
    let err = s2.check(&forged, &SignatureAndHashes).unwrap_err();
    assert!(err.contains("is not after its last heartbeat"), "{err}");
    blocks.push(b);
    assert_eq!(s3.tee.enclave(&tee_id).unwrap().last_heartbeat_ms, t - 1);

    // Active thanks to the heartbeat, where the registration alone would have aged out.
    let later = t0 + 12 * MIN;
    assert_eq!(s3.active_enclaves(later).len(), 1);
    assert!(s2.active_enclaves(later).is_empty());
    // A replayed (older or equal) heartbeat, and a stale one, are refused.
    assert!(s3.check_tx(&hb(t - 1)).is_err());
    let err = s3.check_tx_at(&hb(t), t + 10 * MIN + 1).unwrap_err();
    assert!(err.contains("ms old at"), "{err}");
    // A heartbeat signed by another key is refused.
    let forged_hb = Tx::EnclaveHeartbeat {
        tee_id,
        at_ms: t + 1,
        signature: sign_heartbeat(&NodeKey::from_seed([43; 32]), t + 1),
    };
    assert!(s3
        .check_tx(&forged_hb)
        .unwrap_err()
        .contains("does not verify"));

    // Revocation: inactive, later heartbeats refused.
    let (b, s4) = step(
        &s3,
        t + 1_000,
        vec![gov(
            &s3,
            &vals,
            GovAction::RevokePcrs {
                pcr_set: dev_pcr_set().id(),
            },
        )],
    );
    blocks.push(b);
    assert!(s4.active_enclaves(t + 1_000).is_empty());
    assert!(s4
        .check_tx(&hb(t + 500))
        .unwrap_err()
        .contains("is disabled"));

    // Replay from genesis reaches the same state hash at every height.
    let mut replayed = dev_chain(&vals, &ca, t0, true);
    for b in &blocks {
        replayed = replayed.replay(b).unwrap();
        assert_eq!(replayed.hash(), b.header.state_hash);
    }
    assert_eq!(replayed.hash(), s4.hash());
    assert_eq!(replayed.tee, s4.tee);
    // A chain that does not trust the dev root cannot replay the registration.
    let mut other = ChainState::genesis(&genesis(&vals, t0));
    other = other.replay(&blocks[0]).unwrap_or(other);
    assert!(other.replay(&blocks[1]).is_err());
}

#[test]
fn tee_config_and_transactions_parse() {
    // Every TeeConfig field has a default: an old config (no tee section) parses.
    assert_eq!(
        serde_json::from_str::<TeeConfig>("{}").unwrap(),
        TeeConfig::default()
    );
    let tx = Tx::EnclaveHeartbeat {
        tee_id: tee_id_of(&NodeKey::from_seed([1; 32]).node_id()),
        at_ms: 5,
        signature: "00".repeat(64),
    };
    let json = serde_json::to_string(&tx).unwrap();
    assert!(
        json.starts_with(r#"{"type":"enclave_heartbeat","#),
        "{json}"
    );
    assert_eq!(serde_json::from_str::<Tx>(&json).unwrap(), tx);
    let action = GovAction::ApprovePcrs {
        pcrs: dev_pcr_set(),
    };
    let json = serde_json::to_string(&action).unwrap();
    assert!(
        json.starts_with(r#"{"action":"approve_pcrs","pcrs":{"pcr0":"#),
        "{json}"
    );
    assert_eq!(serde_json::from_str::<GovAction>(&json).unwrap(), action);
}
