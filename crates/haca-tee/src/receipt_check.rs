//! The TEE verifier behind `haca_core::claims`: checks a receipt's attestation box offline.

use crate::nitro::{self, Policy, TrustedRoot};
use base64::Engine as _;
use haca_core::claims::{AttestationVerifier, AttestedKey};
use haca_core::receipt::AttestationEvidence;
use haca_core::NodeId;
use sha2::{Digest as _, Sha256};

/// Verifies Nitro-format documents (AWS's, or haca's dev enclave's) in attestation boxes.
#[derive(Debug)]
pub struct TeeVerifier;

/// The one instance the claims checker takes (`TrustAnchors::attestation`).
pub static TEE_VERIFIER: TeeVerifier = TeeVerifier;

impl AttestationVerifier for TeeVerifier {
    fn verify(
        &self,
        ev: &AttestationEvidence,
        allow_dev_root: bool,
    ) -> Result<AttestedKey, String> {
        if !matches!(ev.kind.as_str(), "nitro" | "dev") {
            return Err(format!(
                "{:?} attestation documents are not verified by this build",
                ev.kind
            ));
        }
        let b64 = ev
            .document_b64
            .as_deref()
            .ok_or("the attestation box does not carry its document")?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("document_b64: not base64: {e}"))?;
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        if &digest != ev.document_digest.as_bytes() {
            return Err("the document does not hash to the box's document_digest".into());
        }
        let doc = nitro::parse(&bytes).map_err(|e| format!("attestation document: {e}"))?;
        let root_der = doc
            .cabundle
            .first()
            .ok_or("the attestation document carries no root certificate")?;
        let root_fp: [u8; 32] = Sha256::digest(root_der).into();
        let aws = root_fp == TrustedRoot::aws_nitro_g1().sha256;
        let root = if aws {
            TrustedRoot::aws_nitro_g1()
        } else if allow_dev_root {
            TrustedRoot::dev("haca dev enclave root", root_der)
        } else {
            return Err(format!(
                "dev root not trusted: the document chains to root {}, not the AWS Nitro \
                 Enclaves Root G1 (pass --allow-dev-root to accept a dev enclave)",
                hex::encode(root_fp)
            ));
        };
        // Receipts are checked long after the run: verify at the document's own time.
        let v = nitro::verify(&bytes, &Policy::audit().with_roots(vec![root]))
            .map_err(|e| format!("attestation document: {e}"))?;
        let key = v
            .public_key
            .as_deref()
            .ok_or("the document binds no public key")?;
        let key: [u8; 32] = key.try_into().map_err(|_| {
            format!(
                "the document's public_key is {} bytes, not an Ed25519 key",
                key.len()
            )
        })?;
        Ok(AttestedKey {
            key: NodeId(key),
            dev: v.root.dev,
            root: v.root.label,
        })
    }
}
