//! The client side, for haca's own CLI and for tests: seal a request to a gateway's key
//! configuration, then open its single-shot or chunked response.

use crate::config::{Aead, KeyConfig, KEM_X25519_SHA256};
use crate::hpke_ops::{self, Exported};
use crate::response::{self, ChunkedResponseDecoder};
use crate::server::RequestHeader;
use crate::OhttpError;

/// What a client keeps to open the response to one request. It holds both exported secrets
/// (as OpenGradient's client does), so the gateway may answer either way.
#[derive(Clone)]
pub struct ClientContext {
    aead: Aead,
    enc: Vec<u8>,
    secrets: Exported,
}

impl std::fmt::Debug for ClientContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientContext")
            .field("aead", &self.aead)
            .finish_non_exhaustive()
    }
}

/// Seals `plaintext` (a BHTTP message, or a JSON body for OpenGradient-style gateways) to
/// `config`, using its first suite that this crate implements. Returns the encapsulated
/// request (`message/ohttp-req`) and the context that opens the answer.
pub fn encapsulate(
    config: &KeyConfig,
    plaintext: &[u8],
) -> Result<(Vec<u8>, ClientContext), OhttpError> {
    let aead = config
        .preferred_aead()
        .ok_or(OhttpError::NoSupportedSuite(config.key_id))?;
    encapsulate_with(config, aead, plaintext)
}

/// [`encapsulate`] with a chosen AEAD, which `config` must offer with HKDF-SHA256.
pub fn encapsulate_with(
    config: &KeyConfig,
    aead: Aead,
    plaintext: &[u8],
) -> Result<(Vec<u8>, ClientContext), OhttpError> {
    if config.kem_id != KEM_X25519_SHA256
        || !config.suites.iter().any(|s| s.implemented() == Some(aead))
    {
        return Err(OhttpError::NoSupportedSuite(config.key_id));
    }
    let header = RequestHeader {
        key_id: config.key_id,
        kem_id: config.kem_id,
        kdf_id: crate::config::KDF_HKDF_SHA256,
        aead_id: aead.id(),
    };
    let (enc, ct, secrets) = hpke_ops::seal(aead, &config.public_key, &header.info(), plaintext)?;
    let mut request = header.encode().to_vec();
    request.extend_from_slice(&enc);
    request.extend_from_slice(&ct);
    Ok((request, ClientContext { aead, enc, secrets }))
}

impl ClientContext {
    /// Opens a single-shot response (`message/ohttp-res`).
    pub fn open(self, response: &[u8]) -> Result<Vec<u8>, OhttpError> {
        response::open_single(self.aead, &self.secrets.response, &self.enc, response)
    }

    /// A reader for a chunked response (`message/ohttp-chunked-res`).
    pub fn chunked(self) -> ChunkedResponseDecoder {
        ChunkedResponseDecoder::new(self.aead, self.secrets.chunked, self.enc)
    }

    /// Opens a whole chunked response at once: every chunk, the final one last.
    pub fn open_chunked(self, body: &[u8]) -> Result<Vec<Vec<u8>>, OhttpError> {
        self.chunked().push(body, true)
    }

    /// A context from secrets exported elsewhere (test vectors print them).
    #[cfg(test)]
    pub(crate) fn from_secrets(
        aead: Aead,
        enc: Vec<u8>,
        response: Vec<u8>,
        chunked: Vec<u8>,
    ) -> ClientContext {
        ClientContext {
            aead,
            enc,
            secrets: Exported {
                response: response.into(),
                chunked: chunked.into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hexd(s: &str) -> Vec<u8> {
        hex::decode(s.replace(char::is_whitespace, "")).unwrap()
    }

    /// RFC 9458 Appendix A, the client's half: the exported secret and `enc` the RFC prints
    /// open the encapsulated response it prints.
    #[test]
    fn rfc9458_appendix_a_response_opens_with_the_printed_secret() {
        let enc = hexd("4b28f881333e7c164ffc499ad9796f877f4e1051ee6d31bad19dec96c208b472");
        let secret = hexd("62d87a6ba569ee81014c2641f52bea36");
        let response = hexd(
            "c789e7151fcba46158ca84b04464910d86f9013e404feea014e7be4a441f234f
             857fbd",
        );
        let ctx = ClientContext::from_secrets(Aead::Aes128Gcm, enc, secret, vec![0; 16]);
        assert_eq!(ctx.open(&response).unwrap(), hexd("0140c8"));
    }
}
