//! The claims checker's view of x402: recovers who signed a payment box's EIP-3009
//! authorization, offline, from what the box carries.

use crate::eip3009::TokenDomain;
use crate::types::Authorization;
use alloy_primitives::{Address, B256, U256};
use haca_core::claims::PaymentVerifier;
use haca_core::receipt::PaymentEvidence;

/// The verifier `haca verify` plugs into its trust anchors.
pub static PAYMENT_VERIFIER: X402Verifier = X402Verifier;

#[derive(Debug)]
pub struct X402Verifier;

fn field<T: std::str::FromStr>(value: &str, name: &str, what: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("payment box {name}: {value:?} is not {what}"))
}

/// The chain id a CAIP-2 `eip155:<id>` network names.
fn chain_of(network: &str) -> Option<u64> {
    network.strip_prefix("eip155:")?.parse().ok()
}

impl PaymentVerifier for X402Verifier {
    fn verify(&self, p: &PaymentEvidence) -> Result<String, String> {
        let auth = p
            .authorization
            .as_ref()
            .ok_or("the payment box carries no authorization")?;
        if let Some(id) = chain_of(&p.network) {
            if id != auth.chain_id {
                return Err(format!(
                    "the box's network {} is not the signed domain's chain {}",
                    p.network, auth.chain_id
                ));
            }
        }
        let payer: Address = field(&p.payer, "payer", "an address")?;
        let authorization = Authorization {
            from: payer,
            to: field(&auth.pay_to, "authorization.pay_to", "an address")?,
            value: U256::from_str_radix(&p.amount, 10).map_err(|_| {
                format!("payment box amount: {:?} is not a decimal amount", p.amount)
            })?,
            valid_after: U256::from(auth.valid_after),
            valid_before: U256::from(auth.valid_before),
            nonce: field::<B256>(&p.nonce, "nonce", "32 bytes of 0x hex")?,
        };
        let domain = TokenDomain {
            name: auth.token_name.clone(),
            version: auth.token_version.clone(),
            chain_id: auth.chain_id,
            verifying_contract: field(&p.asset, "asset", "an address")?,
        };
        let signature = auth
            .signature
            .strip_prefix("0x")
            .and_then(|h| hex::decode(h).ok())
            .ok_or("payment box authorization.signature: not 0x hex")?;
        let signer = domain
            .recover(&authorization, &signature)
            .map_err(|e| format!("the authorization's signature: {e}"))?;
        if signer != payer {
            return Err(format!(
                "the authorization was signed by {signer}, not by the payer {payer}"
            ));
        }
        Ok(format!(
            "{payer} signed {} base units of {} to {} (EIP-3009, chain {})",
            p.amount, p.asset, auth.pay_to, auth.chain_id
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_signer_local::PrivateKeySigner;
    use haca_core::Digest;

    /// A payment box as the gateway writes one, signed by a fresh payer.
    fn signed_box() -> (PaymentEvidence, Address) {
        let signer = PrivateKeySigner::random();
        let p = crate::testing::signed_payment(
            &signer,
            Digest([1; 32]),
            7,
            1_700_000_000_000,
            2_000_000_000,
        );
        (p, signer.address())
    }

    #[test]
    fn the_payers_signature_recovers_from_the_box() {
        let (p, payer) = signed_box();
        let detail = PAYMENT_VERIFIER.verify(&p).unwrap();
        assert!(detail.contains(&payer.to_checksum(None)), "{detail}");
    }

    #[test]
    fn any_change_to_what_was_signed_fails() {
        type Edit = fn(&mut PaymentEvidence);
        let edits: [(&str, Edit); 7] = [
            ("amount", |p| p.amount = "999".into()),
            ("payee", |p| {
                p.authorization.as_mut().unwrap().pay_to =
                    "0x0000000000000000000000000000000000000001".into()
            }),
            ("payer", |p| {
                p.payer = "0x0000000000000000000000000000000000000002".into()
            }),
            ("nonce", |p| {
                p.nonce = format!("0x{}", hex::encode([8u8; 32]))
            }),
            ("window", |p| {
                p.authorization.as_mut().unwrap().valid_before += 1
            }),
            ("domain", |p| {
                p.authorization.as_mut().unwrap().token_version = "1".into()
            }),
            ("network", |p| p.network = "eip155:8453".into()),
        ];
        for (what, edit) in edits {
            let (mut p, _) = signed_box();
            edit(&mut p);
            assert!(
                PAYMENT_VERIFIER.verify(&p).is_err(),
                "{what} changed but verified"
            );
        }
        let (mut p, _) = signed_box();
        p.authorization.as_mut().unwrap().signature = "0x1234".into();
        let e = PAYMENT_VERIFIER.verify(&p).unwrap_err();
        assert!(e.contains("65 bytes"), "{e}");
    }
}
