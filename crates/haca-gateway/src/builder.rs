//! The one receipt builder every run goes through. The pipeline fills the boxes it owns
//! (artifact, route, execution with its attestation, payment); every other box comes from an
//! [`EvidenceSource`], so a new kind of evidence (a proof, admitted data, memory rows, a
//! private route) is a new source plus its tests, not an edit of each pipeline.

use crate::enclave::EnclaveEvidence;
use crate::error::GatewayError;
use haca_core::receipt::*;
use haca_core::settlement::SettlementMode;
use haca_core::{Digest, NodeId, RunId};

/// What is known of a run once it executed: what evidence sources see.
#[derive(Clone, Debug)]
pub struct RunFacts {
    pub run_id: RunId,
    pub request_hash: Digest,
    pub input_hash: Digest,
    pub output_hash: Digest,
    /// The artifact that ran, when one is known (not for an upstream provider).
    pub artifact: Option<haca_core::BlobId>,
    pub mode: ExecMode,
    pub started_at: u64,
    pub finished_at: u64,
}

/// A producer of one box's evidence for a run.
pub trait EvidenceSource: Send + Sync {
    /// The box this source fills, by its name in [`BOX_NAMES`].
    fn box_name(&self) -> &'static str;
    /// Fills this source's box of `boxes` for the run `facts` describes; leaves it empty when
    /// it has nothing to say about the run. An error stops the run before it is signed.
    fn contribute(&self, facts: &RunFacts, boxes: &mut Boxes) -> Result<(), GatewayError>;
}

/// How a run executed, for the execution box.
pub struct Execution {
    pub mode: ExecMode,
    pub runtime: String,
    pub request_hash: Digest,
    pub input_hash: Digest,
    pub output_hash: Digest,
    pub signer: NodeId,
    pub started_at: u64,
    pub finished_at: u64,
    /// The evidence of an answer made in an enclave: its output hash must be `output_hash`.
    pub enclave: Option<EnclaveEvidence>,
}

/// Builds one run's receipt, unsigned (the gateway signs it at commit).
pub struct ReceiptBuilder {
    run_id: RunId,
    settlement: SettlementMode,
    started_at: u64,
    boxes: Boxes,
    facts: Option<RunFacts>,
}

impl ReceiptBuilder {
    pub fn new(run_id: RunId, settlement: SettlementMode, started_at: u64) -> Self {
        ReceiptBuilder {
            run_id,
            settlement,
            started_at,
            boxes: Receipt::new(run_id, started_at).boxes,
            facts: None,
        }
    }

    pub fn artifact(&mut self, artifact: ArtifactEvidence) -> &mut Self {
        self.boxes.artifact = EvidenceBox::with(artifact, BoxStatus::Claimed, self.started_at);
        self
    }

    pub fn route(&mut self, route: RouteEvidence) -> &mut Self {
        self.boxes.route = EvidenceBox::with(route, BoxStatus::Claimed, self.started_at);
        self
    }

    /// The execution box, and the attestation box of an enclave's answer, whose signed output
    /// hash must be the output's (one check for every pipeline).
    pub fn executed(&mut self, e: Execution) -> Result<&mut Self, GatewayError> {
        let mut finished_at = e.finished_at;
        if let Some(ev) = e.enclave {
            if ev.output_hash != e.output_hash {
                return Err(GatewayError::internal(
                    "the enclave's output does not hash to the output hash it signed",
                ));
            }
            if ev.input_hash != e.input_hash {
                return Err(GatewayError::internal(
                    "the enclave hashed a different input than the gateway sent",
                ));
            }
            // The enclave signed its own finishing time; the execution box says the same.
            finished_at = ev.finished_at;
            let at = ev.attestation.timestamp;
            self.boxes.attestation = EvidenceBox::with(ev.attestation, BoxStatus::Claimed, at);
        }
        self.facts = Some(RunFacts {
            run_id: self.run_id,
            request_hash: e.request_hash,
            input_hash: e.input_hash,
            output_hash: e.output_hash,
            artifact: self.boxes.artifact.evidence.as_ref().map(|a| a.blob_id),
            mode: e.mode,
            started_at: e.started_at,
            finished_at,
        });
        self.boxes.execution = EvidenceBox::with(
            ExecutionEvidence {
                mode: e.mode,
                runtime: e.runtime,
                request_hash: e.request_hash,
                input_hash: e.input_hash,
                output_hash: e.output_hash,
                signer: e.signer,
                started_at: e.started_at,
                finished_at,
                signature: None,
            },
            BoxStatus::Claimed,
            finished_at,
        );
        Ok(self)
    }

    /// The proof box of a zkml run at its answer: `claimed`, the proof on its way.
    pub fn proof(&mut self, claimed: Option<ProofEvidence>) -> &mut Self {
        if let Some(p) = claimed {
            self.boxes.proof = EvidenceBox::with(p, BoxStatus::Claimed, self.started_at);
        }
        self
    }

    /// The data box: each admitted item with its age when the run started; absent when the
    /// run admitted none.
    pub fn data(&mut self, items: Vec<DataItem>) -> &mut Self {
        if items.is_empty() {
            return self;
        }
        let at = self.started_at;
        let items = items
            .into_iter()
            .map(|mut i| {
                i.age_ms = Some(at.saturating_sub(i.fetched_at));
                i
            })
            .collect();
        self.boxes.data = EvidenceBox::with(DataEvidence { items }, BoxStatus::Claimed, at);
        self
    }

    /// The memory box: the rows retrieval let into the run, with their age, score and state;
    /// absent when the run used no memory.
    pub fn memory(&mut self, used: Option<MemoryEvidence>) -> &mut Self {
        if let Some(m) = used {
            self.boxes.memory = EvidenceBox::with(m, BoxStatus::Claimed, self.started_at);
        }
        self
    }

    /// The payment box: what was paid, what it covered and the payer's authorization.
    pub fn payment(&mut self, paid: Option<PaymentEvidence>) -> &mut Self {
        if let Some(p) = paid {
            let at = p.verified_at;
            self.boxes.payment = EvidenceBox::with(p, BoxStatus::Claimed, at);
        }
        self
    }

    /// The receipt, with each source's box filled. Fails when the run has not executed yet
    /// or a source fails.
    pub fn build(
        self,
        sources: &[std::sync::Arc<dyn EvidenceSource>],
    ) -> Result<Receipt, GatewayError> {
        let facts = self
            .facts
            .ok_or_else(|| GatewayError::internal("a receipt was built before its run executed"))?;
        let mut receipt = Receipt::new(self.run_id, facts.finished_at);
        receipt.settlement_mode = Some(self.settlement);
        receipt.boxes = self.boxes;
        for s in sources {
            s.contribute(&facts, &mut receipt.boxes).map_err(|e| {
                GatewayError::internal(format!("the {} box: {}", s.box_name(), e.message()))
            })?;
        }
        Ok(receipt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use haca_core::{sha256, BlobId, NodeKey};

    fn execution(node: NodeId, output_hash: Digest) -> Execution {
        Execution {
            mode: ExecMode::Vanilla,
            runtime: "test".into(),
            request_hash: sha256(b"request"),
            input_hash: sha256(b"input"),
            output_hash,
            signer: node,
            started_at: 10,
            finished_at: 20,
            enclave: None,
        }
    }

    /// A source that admits one data item about every run, as a data node would.
    struct OneDataItem;

    impl EvidenceSource for OneDataItem {
        fn box_name(&self) -> &'static str {
            "data"
        }
        fn contribute(&self, facts: &RunFacts, boxes: &mut Boxes) -> Result<(), GatewayError> {
            let item = DataItem {
                id: None,
                source: "test".into(),
                fetched_at: facts.started_at,
                valid_until: None,
                http_status: None,
                sha256: facts.input_hash,
                tls_cert_sha256: None,
                content_type: None,
                size: None,
                signer: NodeKey::from_seed([2; 32]).node_id(),
                signature: "00".into(),
                age_ms: None,
            };
            boxes.data = EvidenceBox::with(
                DataEvidence { items: vec![item] },
                BoxStatus::Claimed,
                facts.finished_at,
            );
            Ok(())
        }
    }

    struct Broken;

    impl EvidenceSource for Broken {
        fn box_name(&self) -> &'static str {
            "proof"
        }
        fn contribute(&self, _: &RunFacts, _: &mut Boxes) -> Result<(), GatewayError> {
            Err(GatewayError::internal("the prover stopped"))
        }
    }

    #[test]
    fn boxes_from_sources_land_in_the_receipt_beside_the_pipeline_boxes() {
        let node = NodeKey::from_seed([1; 32]).node_id();
        let run = RunId::derive(&sha256(b"request"), &node, &[0; 16]);
        let mut b = ReceiptBuilder::new(run, SettlementMode::Batch, 10);
        b.artifact(ArtifactEvidence {
            label: Some("example/m".into()),
            revision: Some(1),
            blob_id: BlobId::of(b"model"),
            format: "onnx".into(),
            walrus_blob_id: None,
        })
        .route(RouteEvidence::direct("local/tract", node));
        b.executed(execution(node, sha256(b"out"))).unwrap();
        let sources: Vec<std::sync::Arc<dyn EvidenceSource>> =
            vec![std::sync::Arc::new(OneDataItem)];
        let r = b.build(&sources).unwrap();
        assert_eq!(r.issued_at, 20);
        assert_eq!(r.settlement_mode, Some(SettlementMode::Batch));
        assert!(r.boxes.artifact.evidence.is_some() && r.boxes.execution.evidence.is_some());
        let data = r
            .boxes
            .data
            .evidence
            .expect("the data box is filled by its source");
        assert_eq!(data.items.len(), 1);
        assert!(r.boxes.proof.evidence.is_none() && r.boxes.payment.evidence.is_none());
    }

    #[test]
    fn a_failing_source_stops_the_run_naming_its_box() {
        let node = NodeKey::from_seed([1; 32]).node_id();
        let run = RunId::derive(&sha256(b"request"), &node, &[0; 16]);
        let mut b = ReceiptBuilder::new(run, SettlementMode::Batch, 10);
        b.executed(execution(node, sha256(b"out"))).unwrap();
        let sources: Vec<std::sync::Arc<dyn EvidenceSource>> = vec![std::sync::Arc::new(Broken)];
        let e = b.build(&sources).unwrap_err();
        assert!(e.message().contains("proof box"), "{e}");
    }

    #[test]
    fn a_receipt_is_not_built_before_its_run_executed() {
        let node = NodeKey::from_seed([1; 32]).node_id();
        let run = RunId::derive(&sha256(b"request"), &node, &[0; 16]);
        assert!(ReceiptBuilder::new(run, SettlementMode::Batch, 10)
            .build(&[])
            .is_err());
    }
}
