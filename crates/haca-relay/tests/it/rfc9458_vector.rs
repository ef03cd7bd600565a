//! RFC 9458 Appendix A, "Complete Example of a Request and Response", the gateway's half:
//! its key configuration from the printed secret key, the printed request opened to the
//! printed BHTTP GET, and the printed response sealed byte for byte with the printed nonce.
//! (The client's half, opening the printed response with the printed exported secret, is a
//! unit test in `client.rs`: the ephemeral key the RFC prints cannot be fed to the `hpke`
//! crate's sender.) Bytes as in the RFC's source text.

use haca_relay::bhttp::{InnerFormat, InnerRequest, InnerResponse};
use haca_relay::{decapsulate, KeyConfig, KeyPair, KeyRing, SymmetricSuite};

fn hexd(s: &str) -> Vec<u8> {
    hex::decode(s.replace(char::is_whitespace, "")).unwrap()
}

const SECRET_KEY: &str = "3c168975674b2fa8e465970b79c8dcf09f1c741626480bd4c6162fc5b6a98e1a";
const KEY_CONFIG: &str = "01002031e1f05a740102115220e9af918f738674aec95f54db6e04eb705aae8e
                          79815500080001000100010003";
const BHTTP_GET: &str = "00034745540568747470730b6578616d706c652e636f6d012f";
const REQUEST: &str = "010020000100014b28f881333e7c164ffc499ad9796f877f4e1051ee6d31bad1
                       9dec96c208b4726374e469135906992e1268c594d2a10c695d858c40a026e796
                       5e7d86b83dd440b2c0185204b4d63525";
const BHTTP_200: &str = "0140c8";
const RESPONSE_NONCE: &str = "c789e7151fcba46158ca84b04464910d";
const RESPONSE: &str = "c789e7151fcba46158ca84b04464910d86f9013e404feea014e7be4a441f234f
                        857fbd";

fn rfc_key() -> KeyPair {
    KeyPair::from_secret(
        1,
        &hexd(SECRET_KEY),
        vec![
            SymmetricSuite::AES_128_GCM,
            SymmetricSuite::CHACHA20_POLY1305,
        ],
    )
    .unwrap()
}

#[test]
fn the_key_configuration_is_the_rfcs_byte_for_byte() {
    let key = rfc_key();
    assert_eq!(key.config().encode(), hexd(KEY_CONFIG));
    assert_eq!(KeyConfig::decode(&hexd(KEY_CONFIG)).unwrap(), *key.config());
    // As an application/ohttp-keys list: a 2-byte length, then the configuration.
    let list = KeyRing::new(key).encoded_configs();
    assert_eq!(list[..2], [0, 45]);
    assert_eq!(list[2..], hexd(KEY_CONFIG)[..]);
}

#[test]
fn the_rfcs_request_opens_and_its_response_is_sealed_byte_for_byte() {
    let ring = KeyRing::new(rfc_key());
    let (plaintext, ctx) = decapsulate(&ring, &hexd(REQUEST)).unwrap();
    assert_eq!(plaintext, hexd(BHTTP_GET));
    assert_eq!(InnerFormat::sniff(&plaintext), InnerFormat::Bhttp);
    let get = InnerRequest::decode(&plaintext).unwrap();
    assert_eq!((get.method.as_str(), get.path.as_str()), ("GET", "/"));
    assert_eq!(ctx.header().key_id, 1);
    assert_eq!(
        (ctx.header().kdf_id, ctx.header().aead_id),
        (0x0001, 0x0001)
    );
    assert_eq!(InnerResponse::decode(&hexd(BHTTP_200)).unwrap().status, 200);
    let response = ctx
        .encapsulate_with_nonce(&hexd(BHTTP_200), &hexd(RESPONSE_NONCE))
        .unwrap();
    assert_eq!(response, hexd(RESPONSE));
}
