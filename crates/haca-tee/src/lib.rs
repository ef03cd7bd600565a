//! haca's TEE evidence. Today: AWS Nitro Enclaves attestation documents ([`nitro`]), parsed
//! and verified as pure logic. No I/O and no clock: the reference time is an argument.
//!
//! Trust anchor: the AWS Nitro Enclaves Root G1, pinned by the SHA-256 of its DER,
//! `641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b`. That value was
//! computed here from `cabundle[0]` of the four real AWS-signed fixtures, and matches (read
//! 2026-11-25): the DER of the root PEM that OpenGradient's og-evm embeds
//! (`precompiles/tee/nitro_attestation.go`, `DefaultAWSNitroRootCertPEM`), and the fingerprint
//! pinned by several independent public Nitro verifiers (for example as "Official SHA-256
//! fingerprint" / "as published by AWS"). AWS distributes the certificate as
//! `AWS_NitroEnclaves_Root-G1.zip` from the Nitro Enclaves user guide, "Verifying the root of
//! trust". Callers may trust another root explicitly (a dev CA, reported as such).

pub mod attester;
pub mod dcap;
pub mod dev;
mod error;
pub mod nitro;
pub mod og_compat;
pub mod protocol;
pub mod receipt_check;
pub mod registry;

#[cfg(feature = "nsm")]
pub use attester::NsmAttester;
pub use attester::{AttestError, Attester, DevAttester};
pub use dcap::{DcapError, DcapPolicy, QuoteCollateral, TcbStatus, TeeType, VerifiedQuote};
pub use dev::{dev_pcrs, DevCa, DevError, DocumentRequest};
pub use error::NitroError;
pub use nitro::{
    parse, verify, verify_strict, AttestationDocument, Check, KeyBinding, NitridingUserData,
    Policy, ReferenceTime, TrustedRoot, VerifiedDocument,
};
