//! Trust anchors: the AWS Nitro Enclaves Root G1 certificate, and roots a caller names itself
//! (a dev CA), each pinned by the SHA-256 of its DER.

use serde::Serialize;
use sha2::{Digest as _, Sha256};

/// The AWS Nitro Enclaves Root G1 certificate (DER, 533 bytes): subject and issuer
/// `CN=aws.nitro-enclaves, OU=AWS, O=Amazon, C=US`, P-384, valid 2019-10-28 to 2049-10-28.
///
/// Taken from `cabundle[0]` of the real AWS-signed fixtures (tests/fixtures/nitro, all four
/// hold the same bytes). It is byte-identical to the PEM that OpenGradient's og-evm embeds as
/// `DefaultAWSNitroRootCertPEM` (`precompiles/tee/nitro_attestation.go`), which AWS publishes
/// as `AWS_NitroEnclaves_Root-G1.zip` (docs.aws.amazon.com/enclaves/latest/user/verify-root.html).
pub const AWS_NITRO_ROOT_G1_DER: &[u8] = include_bytes!("aws_nitro_enclaves_root_g1.der");

/// SHA-256 of [`AWS_NITRO_ROOT_G1_DER`]: the published fingerprint of the AWS Nitro Enclaves
/// Root G1 (`64:1A:03:21:...:79:BB:5B`). Sources are listed in the crate documentation
/// (lib.rs). A test recomputes it from the embedded DER.
pub const AWS_NITRO_ROOT_G1_SHA256: [u8; 32] = [
    0x64, 0x1a, 0x03, 0x21, 0xa3, 0xe2, 0x44, 0xef, 0xe4, 0x56, 0x46, 0x31, 0x95, 0xd6, 0x06, 0x31,
    0x7e, 0xd7, 0xcd, 0xcc, 0x3c, 0x17, 0x56, 0xe0, 0x98, 0x93, 0xf3, 0xc6, 0x8f, 0x79, 0xbb, 0x5b,
];

/// A root certificate the caller trusts, pinned by the SHA-256 of its DER.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TrustedRoot {
    /// A name for reports, e.g. `aws-nitro-enclaves-root-g1`.
    pub label: String,
    #[serde(with = "hex_fingerprint")]
    pub sha256: [u8; 32],
    /// A development CA (haca's dev enclave), never AWS: reports must say so.
    pub dev: bool,
}

impl TrustedRoot {
    /// The AWS Nitro Enclaves Root G1.
    pub fn aws_nitro_g1() -> Self {
        TrustedRoot {
            label: "aws-nitro-enclaves-root-g1".into(),
            sha256: AWS_NITRO_ROOT_G1_SHA256,
            dev: false,
        }
    }

    /// A development root given by its certificate (DER).
    pub fn dev(label: impl Into<String>, root_der: &[u8]) -> Self {
        TrustedRoot {
            label: label.into(),
            sha256: Sha256::digest(root_der).into(),
            dev: true,
        }
    }

    /// Any other root, given by its certificate (DER).
    pub fn from_der(label: impl Into<String>, root_der: &[u8]) -> Self {
        TrustedRoot {
            label: label.into(),
            sha256: Sha256::digest(root_der).into(),
            dev: false,
        }
    }

    pub fn fingerprint_hex(&self) -> String {
        hex::encode(self.sha256)
    }
}

mod hex_fingerprint {
    pub fn serialize<S: serde::Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_root_matches_its_pinned_fingerprint() {
        assert_eq!(AWS_NITRO_ROOT_G1_DER.len(), 533);
        let digest: [u8; 32] = Sha256::digest(AWS_NITRO_ROOT_G1_DER).into();
        assert_eq!(digest, AWS_NITRO_ROOT_G1_SHA256);
        assert_eq!(
            TrustedRoot::aws_nitro_g1().fingerprint_hex(),
            "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b"
        );
    }
}
