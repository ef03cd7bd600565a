//! The HPKE (RFC 9180, base mode) half of a request: sealing to a gateway key and opening
//! with it, and the two secrets exported for the response (RFC 9458 section 4.4, and the
//! chunked draft's label). The AEAD is chosen at run time; hpke's types are chosen per AEAD.

use crate::config::Aead;
use crate::keys::{PublicKey, SecretKey};
use crate::OhttpError;
use hpke::aead::{AesGcm128, ChaCha20Poly1305};
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, OpModeR, OpModeS, Serializable};
use rand_core::{OsRng, UnwrapErr};
use zeroize::Zeroizing;

/// Exporter label for a single-shot response (RFC 9458 section 4.4).
pub(crate) const LABEL_RESPONSE: &[u8] = b"message/bhttp response";
/// Exporter label for a chunked response (draft-ietf-ohai-chunked-ohttp-08, as OpenGradient's
/// client uses it after a standard, non-chunked request).
pub(crate) const LABEL_CHUNKED_RESPONSE: &[u8] = b"message/bhttp chunked response";

type Kem = X25519HkdfSha256;
type EncappedKey = <Kem as hpke::Kem>::EncappedKey;

/// The response secrets both sides export from the request's HPKE context, each
/// max(Nn, Nk) bytes long.
#[derive(Clone)]
pub(crate) struct Exported {
    pub response: Zeroizing<Vec<u8>>,
    pub chunked: Zeroizing<Vec<u8>>,
}

fn export_both(
    aead: Aead,
    export: impl Fn(&[u8], &mut [u8]) -> Result<(), hpke::HpkeError>,
) -> Result<Exported, hpke::HpkeError> {
    let n = aead.response_nonce_len();
    let mut response = Zeroizing::new(vec![0u8; n]);
    let mut chunked = Zeroizing::new(vec![0u8; n]);
    export(LABEL_RESPONSE, &mut response)?;
    export(LABEL_CHUNKED_RESPONSE, &mut chunked)?;
    Ok(Exported { response, chunked })
}

fn open_with<A: hpke::aead::Aead>(
    aead: Aead,
    sk: &SecretKey,
    enc: &[u8],
    info: &[u8],
    ct: &[u8],
) -> Result<(Vec<u8>, Exported), OhttpError> {
    let encapped = EncappedKey::from_bytes(enc).map_err(|_| OhttpError::RequestDecrypt)?;
    let mut ctx = hpke::setup_receiver::<A, HkdfSha256, Kem>(&OpModeR::Base, sk, &encapped, info)
        .map_err(|_| OhttpError::RequestDecrypt)?;
    let plaintext = ctx.open(ct, b"").map_err(|_| OhttpError::RequestDecrypt)?;
    let exported = export_both(aead, |label, out| ctx.export(label, out))
        .map_err(|_| OhttpError::RequestDecrypt)?;
    Ok((plaintext, exported))
}

/// Opens a request's ciphertext with the gateway's key.
pub(crate) fn open(
    aead: Aead,
    sk: &SecretKey,
    enc: &[u8],
    info: &[u8],
    ct: &[u8],
) -> Result<(Vec<u8>, Exported), OhttpError> {
    match aead {
        Aead::Aes128Gcm => open_with::<AesGcm128>(aead, sk, enc, info, ct),
        Aead::ChaCha20Poly1305 => open_with::<ChaCha20Poly1305>(aead, sk, enc, info, ct),
    }
}

fn seal_with<A: hpke::aead::Aead>(
    aead: Aead,
    pk: &PublicKey,
    info: &[u8],
    plaintext: &[u8],
) -> Result<(Vec<u8>, Vec<u8>, Exported), OhttpError> {
    let mut rng = UnwrapErr(OsRng);
    let (encapped, mut ctx) =
        hpke::setup_sender::<A, HkdfSha256, Kem, _>(&OpModeS::Base, pk, info, &mut rng)
            .map_err(|_| OhttpError::InvalidKey("the gateway's public key".into()))?;
    let ct = ctx
        .seal(plaintext, b"")
        .map_err(|_| OhttpError::Seal("request"))?;
    let exported = export_both(aead, |label, out| ctx.export(label, out))
        .map_err(|_| OhttpError::Seal("exporter"))?;
    Ok((encapped.to_bytes().to_vec(), ct, exported))
}

/// Seals a request to a gateway's public key with a fresh ephemeral key; returns `enc`, the
/// ciphertext and the response secrets.
pub(crate) fn seal(
    aead: Aead,
    pk: &[u8],
    info: &[u8],
    plaintext: &[u8],
) -> Result<(Vec<u8>, Vec<u8>, Exported), OhttpError> {
    let pk = PublicKey::from_bytes(pk)
        .map_err(|e| OhttpError::InvalidKey(format!("X25519 public key: {e}")))?;
    match aead {
        Aead::Aes128Gcm => seal_with::<AesGcm128>(aead, &pk, info, plaintext),
        Aead::ChaCha20Poly1305 => seal_with::<ChaCha20Poly1305>(aead, &pk, info, plaintext),
    }
}
