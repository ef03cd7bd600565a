//! Validators re-verify a TEE run's attestation box before it settles (`TeeEvidence`): the
//! document chains to a root the chain trusts and binds the enclave key, that key signed the
//! run, and the enclave is registered and enabled; revoking its PCR set stops its runs.

use haca_chain::state::{Approval, GovAction, TeeConfig, Tx};
use haca_chain::{
    standard_evidence, ChainState, EvidenceVerifier, RejectCode, RunRecord, TeeEvidence,
};
use haca_core::receipt::{tee_run_message, AttestationEvidence, BoxStatus, EvidenceBox, ExecMode};
use haca_core::settlement::{
    Genesis, RegistryParams, SettlementMode, SettlementParams, Validator, ValidatorSet,
};
use haca_core::{sha256, BlobId, NodeKey};
use haca_tee::registry::PcrSet;
use haca_tee::{dev_pcrs, DevCa, DocumentRequest};

const CHAIN: &str = "haca-tee-evidence";
const T0: u64 = 1_764_000_000_000;

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

struct World {
    vals: Vec<NodeKey>,
    gateway: NodeKey,
    enclave: NodeKey,
    ca: DevCa,
    doc: Vec<u8>,
}

impl World {
    fn new() -> Self {
        let ca = DevCa::from_seed(&[5; 32]);
        let enclave = NodeKey::from_seed([77; 32]);
        let doc = document(&ca, &enclave);
        World {
            vals: (0..4).map(|i| NodeKey::from_seed([30 + i; 32])).collect(),
            gateway: NodeKey::from_seed([1; 32]),
            enclave,
            ca,
            doc,
        }
    }

    fn genesis_state(&self) -> ChainState {
        let g = Genesis {
            chain_id: CHAIN.into(),
            genesis_time_ms: T0 - 1_000,
            validators: ValidatorSet::new(
                self.vals
                    .iter()
                    .map(|k| Validator {
                        public_key: k.node_id(),
                        power: 1,
                    })
                    .collect(),
            )
            .unwrap(),
            gateways: vec![self.gateway.node_id()],
            settlement: SettlementParams::default(),
            tee: Some(TeeConfig {
                registry: RegistryParams::devnet(),
                dev_root_der_hex: Some(hex::encode(self.ca.root_der())),
            }),
        };
        ChainState::from_genesis(&g).unwrap()
    }

    fn gov(&self, state: &ChainState, action: GovAction) -> Tx {
        let seq = state.governance_seq + 1;
        Tx::Governance {
            seq,
            approvals: self.vals[..3]
                .iter()
                .map(|k| Approval::sign(k, CHAIN, seq, &action))
                .collect(),
            action,
        }
    }

    /// A batch record of a tee run: the enclave signed the run, the gateway the receipt.
    fn tee_record(&self, doc: &[u8], signer: &NodeKey, seed: u64) -> RunRecord {
        let mut r = haca_core::testing::vanilla_receipt(&self.gateway, BlobId::of(b"m"), T0, seed);
        let exec = r.boxes.execution.evidence.as_mut().unwrap();
        exec.mode = ExecMode::Tee;
        let blob = r.boxes.artifact.evidence.as_ref().unwrap().blob_id;
        let exec = r.boxes.execution.evidence.as_ref().unwrap();
        let msg = tee_run_message(
            &blob,
            &exec.request_hash,
            &exec.input_hash,
            &exec.output_hash,
            exec.finished_at,
        );
        r.boxes.attestation = EvidenceBox::with(
            AttestationEvidence {
                kind: "dev".into(),
                document_digest: sha256(doc),
                pcrs: Default::default(),
                key_binding: "public_key".into(),
                timestamp: T0,
                root: "haca dev enclave root".into(),
                dev: true,
                document_b64: Some(b64(doc)),
                enclave_key: Some(self.enclave.node_id()),
                run_signature: Some(hex::encode(signer.sign(&msg))),
            },
            BoxStatus::Claimed,
            T0,
        );
        r.settlement_mode = Some(SettlementMode::Batch);
        r.sign(&self.gateway).unwrap();
        RunRecord::new(&r, SettlementMode::Batch, None).unwrap()
    }
}

fn document(ca: &DevCa, key: &NodeKey) -> Vec<u8> {
    ca.document(&DocumentRequest {
        timestamp_ms: T0,
        pcrs: dev_pcrs(b"image"),
        public_key: Some(key.node_id().0.to_vec()),
        ..Default::default()
    })
    .unwrap()
}

fn pcr_set() -> PcrSet {
    let p = dev_pcrs(b"image");
    PcrSet::new(
        &hex::encode(&p[&0]),
        &hex::encode(&p[&1]),
        &hex::encode(&p[&2]),
    )
    .unwrap()
}

/// Applies `txs` in a block at `time_ms`.
fn step(state: &ChainState, time_ms: u64, txs: Vec<Tx>) -> ChainState {
    let v = standard_evidence();
    let (block, next) = state.propose(time_ms, vec![], txs.clone(), v.as_ref());
    assert_eq!(block.txs.len(), txs.len(), "a transaction was left out");
    next
}

#[test]
fn a_tee_run_settles_only_from_a_registered_enabled_enclave() {
    let w = World::new();
    let v = TeeEvidence::default();
    let s0 = w.genesis_state();
    let record = w.tee_record(&w.doc, &w.enclave, 1);

    // Not registered yet: refused, naming the enclave.
    let err = v.verify(&record, &s0.evidence_view()).unwrap_err();
    assert_eq!(err.code, RejectCode::EnclaveUnregistered, "{err}");
    assert!(
        err.detail.contains("is not registered on this chain"),
        "{err}"
    );

    let s1 = step(
        &s0,
        T0,
        vec![w.gov(&s0, GovAction::ApprovePcrs { pcrs: pcr_set() })],
    );
    let s2 = step(
        &s1,
        T0 + 1_000,
        vec![Tx::RegisterEnclave {
            document_b64: b64(&w.doc),
            signing_key: w.enclave.node_id(),
            at_ms: T0 + 1_000,
        }],
    );
    let view2 = s2.evidence_view();
    v.verify(&record, &view2).unwrap();
    standard_evidence().verify(&record, &view2).unwrap();

    // A run signature by another key, a tee-mode run without its box, a document from a root
    // the chain does not trust: each refused with its reason.
    let forged = w.tee_record(&w.doc, &NodeKey::from_seed([9; 32]), 2);
    let err = v.verify(&forged, &view2).unwrap_err();
    assert_eq!(err.code, RejectCode::AttestationInvalid, "{err}");
    assert!(err.detail.contains("run signature"), "{err}");

    let mut bare = haca_core::testing::vanilla_receipt(&w.gateway, BlobId::of(b"m"), T0, 3);
    bare.boxes.execution.evidence.as_mut().unwrap().mode = ExecMode::Tee;
    bare.settlement_mode = Some(SettlementMode::Batch);
    bare.sign(&w.gateway).unwrap();
    let bare = RunRecord::new(&bare, SettlementMode::Batch, None).unwrap();
    let err = v.verify(&bare, &view2).unwrap_err();
    assert_eq!(err.code, RejectCode::AttestationMissing, "{err}");
    assert!(err.detail.contains("without an attestation box"), "{err}");

    let other_doc = document(&DevCa::from_seed(&[6; 32]), &w.enclave);
    let err = v
        .verify(&w.tee_record(&other_doc, &w.enclave, 4), &view2)
        .unwrap_err();
    assert_eq!(err.code, RejectCode::AttestationInvalid, "{err}");
    assert!(
        err.detail.starts_with("attestation: attestation document:"),
        "{err}"
    );

    // A vanilla run needs no attestation.
    let mut plain = haca_core::testing::vanilla_receipt(&w.gateway, BlobId::of(b"m"), T0, 5);
    plain.settlement_mode = Some(SettlementMode::Batch);
    plain.sign(&w.gateway).unwrap();
    v.verify(
        &RunRecord::new(&plain, SettlementMode::Batch, None).unwrap(),
        &view2,
    )
    .unwrap();

    // Revoking the PCR set disables the enclave: its runs stop settling.
    let s3 = step(
        &s2,
        T0 + 2_000,
        vec![w.gov(
            &s2,
            GovAction::RevokePcrs {
                pcr_set: pcr_set().id(),
            },
        )],
    );
    let err = v.verify(&record, &s3.evidence_view()).unwrap_err();
    assert_eq!(err.code, RejectCode::EnclaveDisabled, "{err}");
    assert!(err.detail.contains("is disabled"), "{err}");

    // In a block: the proposer leaves the refused record out; the good one settles.
    let next = w.tee_record(&w.doc, &w.enclave, 6);
    let (block, _) = s2.propose(
        T0 + 3_000,
        vec![next.clone(), forged.clone()],
        vec![],
        standard_evidence().as_ref(),
    );
    assert_eq!(block.records.len(), 1);
    assert_eq!(block.records[0].run_id, next.run_id);
    assert_eq!(block.rejected.len(), 1);
    assert_eq!(block.rejected[0].code, RejectCode::AttestationInvalid);
    assert!(
        block.rejected[0].reason.contains("run signature"),
        "{:?}",
        block.rejected
    );
}
