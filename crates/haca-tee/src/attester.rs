//! Where an enclave gets its attestation documents: one trait, [`Attester`], with the dev
//! enclave's [`DevAttester`] (documents under a local [`DevCa`], always marked dev) and, inside
//! a real AWS Nitro enclave, `NsmAttester` (the Nitro Secure Module, cargo feature `nsm`).
//! Both return the same bytes format, verified by the same [`crate::nitro::verify`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::dev::{DevCa, DevError, DocumentRequest};
use crate::nitro::TrustedRoot;

/// Why no attestation document could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttestError {
    /// The dev CA refused the request.
    #[error("dev attestation: {0}")]
    Dev(#[from] DevError),
    /// The Nitro Secure Module could not be opened: not inside an AWS Nitro enclave.
    #[error("the Nitro Secure Module is not available: {0}")]
    NsmUnavailable(String),
    /// The Nitro Secure Module answered the attestation request with an error.
    #[error("the Nitro Secure Module refused the attestation request: {0}")]
    Nsm(String),
    /// The Nitro Secure Module answered with something other than a document.
    #[error("the Nitro Secure Module answered the attestation request with {0}")]
    UnexpectedResponse(String),
}

/// A source of attestation documents (COSE_Sign1, AWS Nitro format) binding the given
/// `public_key`, `user_data` and `nonce`, each stated in the document or null.
pub trait Attester: Send + Sync {
    fn attest(
        &self,
        public_key: Option<&[u8]>,
        user_data: Option<&[u8]>,
        nonce: Option<&[u8]>,
    ) -> Result<Vec<u8>, AttestError>;

    /// True for a development attester, whose documents chain to a dev root, never AWS's.
    fn is_dev(&self) -> bool;
}

/// The dev enclave's attester: documents from a [`DevCa`] stating fixed PCRs (see
/// [`crate::dev::dev_pcrs`]), dated by a clock the caller supplies (haca-tee reads no clock).
#[derive(Clone)]
pub struct DevAttester {
    ca: Arc<DevCa>,
    pcrs: BTreeMap<u8, Vec<u8>>,
    clock: Arc<dyn Fn() -> u64 + Send + Sync>,
}

impl fmt::Debug for DevAttester {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevAttester")
            .field("ca", &self.ca)
            .field("pcrs", &self.pcrs.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl DevAttester {
    /// `clock` returns the current time in unix milliseconds (each document's timestamp).
    pub fn new(
        ca: DevCa,
        pcrs: BTreeMap<u8, Vec<u8>>,
        clock: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> Self {
        DevAttester {
            ca: Arc::new(ca),
            pcrs,
            clock: Arc::new(clock),
        }
    }

    pub fn ca(&self) -> &DevCa {
        &self.ca
    }

    /// The PCRs every document states (the others are zero).
    pub fn pcrs(&self) -> &BTreeMap<u8, Vec<u8>> {
        &self.pcrs
    }

    /// The root a verifier must trust to accept this attester's documents (marked dev).
    pub fn trusted_root(&self) -> TrustedRoot {
        self.ca.trusted_root()
    }
}

impl Attester for DevAttester {
    fn attest(
        &self,
        public_key: Option<&[u8]>,
        user_data: Option<&[u8]>,
        nonce: Option<&[u8]>,
    ) -> Result<Vec<u8>, AttestError> {
        let req = DocumentRequest {
            timestamp_ms: (self.clock)(),
            pcrs: self.pcrs.clone(),
            public_key: public_key.map(<[u8]>::to_vec),
            user_data: user_data.map(<[u8]>::to_vec),
            nonce: nonce.map(<[u8]>::to_vec),
        };
        Ok(self.ca.document(&req)?)
    }

    fn is_dev(&self) -> bool {
        true
    }
}

#[cfg(feature = "nsm")]
pub use nsm::{NsmAttester, NSM_DEVICE};

#[cfg(feature = "nsm")]
mod nsm {
    use aws_nitro_enclaves_nsm_api::api::{Request, Response};
    use aws_nitro_enclaves_nsm_api::driver::{nsm_exit, nsm_init, nsm_process_request};
    use serde_bytes::ByteBuf;

    use super::{AttestError, Attester};

    /// The device the Nitro Secure Module driver exposes inside an enclave.
    pub const NSM_DEVICE: &str = "/dev/nsm";

    /// Attestation documents from the Nitro Secure Module of the AWS Nitro enclave this runs
    /// in, signed by AWS (`Request::Attestation` over `/dev/nsm`).
    #[derive(Debug)]
    pub struct NsmAttester {
        fd: i32,
    }

    impl NsmAttester {
        /// Opens `/dev/nsm`. Outside a Nitro enclave (or without the nsm driver) it fails with
        /// [`AttestError::NsmUnavailable`].
        pub fn open() -> Result<Self, AttestError> {
            let fd = nsm_init();
            if fd < 0 {
                return Err(AttestError::NsmUnavailable(format!(
                    "cannot open {NSM_DEVICE}: this is not an AWS Nitro enclave, or its nsm driver is not loaded"
                )));
            }
            Ok(NsmAttester { fd })
        }
    }

    impl Drop for NsmAttester {
        fn drop(&mut self) {
            nsm_exit(self.fd);
        }
    }

    impl Attester for NsmAttester {
        fn attest(
            &self,
            public_key: Option<&[u8]>,
            user_data: Option<&[u8]>,
            nonce: Option<&[u8]>,
        ) -> Result<Vec<u8>, AttestError> {
            let buf = |v: Option<&[u8]>| v.map(|b| ByteBuf::from(b.to_vec()));
            let request = Request::Attestation {
                user_data: buf(user_data),
                nonce: buf(nonce),
                public_key: buf(public_key),
            };
            match nsm_process_request(self.fd, request) {
                Response::Attestation { document } => Ok(document),
                Response::Error(code) => Err(AttestError::Nsm(format!("{code:?}"))),
                other => Err(AttestError::UnexpectedResponse(format!("{other:?}"))),
            }
        }

        fn is_dev(&self) -> bool {
            false
        }
    }
}
