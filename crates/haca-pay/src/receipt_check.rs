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
        let amount = U256::from_str_radix(&p.amount, 10)
            .map_err(|_| format!("payment box amount: {:?} is not a decimal amount", p.amount))?;
        // `upto`: the signature covers the maximum; what settled is priced from the tokens
        // served and never above it.
        let signed_value = match &p.upto {
            None => amount,
            Some(u) => {
                let authorized = check_upto(&p.scheme, amount, u)?;
                if let Some(p2) = &u.permit2 {
                    return verify_permit2(p, auth, u, p2, payer, authorized);
                }
                authorized
            }
        };
        let authorization = Authorization {
            from: payer,
            to: field(&auth.pay_to, "authorization.pay_to", "an address")?,
            value: signed_value,
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
        let signer = domain
            .recover(&authorization, &signature_bytes(auth)?)
            .map_err(|e| format!("the authorization's signature: {e}"))?;
        if signer != payer {
            return Err(format!(
                "the authorization was signed by {signer}, not by the payer {payer}"
            ));
        }
        Ok(match &p.upto {
            None => format!(
                "{payer} signed {} base units of {} to {} (EIP-3009, chain {})",
                p.amount, p.asset, auth.pay_to, auth.chain_id
            ),
            Some(u) => format!(
                "{payer} signed up to {} base units of {} to {} (EIP-3009, chain {}); {} settled for {} prompt and {} completion tokens",
                u.authorized, p.asset, auth.pay_to, auth.chain_id, p.amount, u.prompt_tokens, u.completion_tokens
            ),
        })
    }
}

/// An `upto` box whose maximum was authorized over Permit2: the payer's
/// `PermitWitnessTransferFrom` rebuilt from the box (token = asset, amount = authorized,
/// deadline = valid_before, witness {to: pay_to, facilitator, validAfter: valid_after}) must
/// recover to the payer.
fn verify_permit2(
    p: &PaymentEvidence,
    auth: &haca_core::receipt::PaymentAuthorization,
    u: &haca_core::receipt::UptoTerms,
    p2: &haca_core::receipt::Permit2Fields,
    payer: Address,
    authorized: U256,
) -> Result<String, String> {
    let nonce: B256 = field(&p.nonce, "nonce", "32 bytes of 0x hex")?;
    let terms = crate::permit2::Permit2Terms {
        from: payer,
        token: field(&p.asset, "asset", "an address")?,
        amount: authorized,
        spender: field(&p2.spender, "upto.permit2.spender", "an address")?,
        nonce: U256::from_be_bytes(nonce.0),
        deadline: U256::from(auth.valid_before),
        to: field(&auth.pay_to, "authorization.pay_to", "an address")?,
        facilitator: field(&p2.facilitator, "upto.permit2.facilitator", "an address")?,
        valid_after: U256::from(auth.valid_after),
    };
    let signer = terms
        .recover(auth.chain_id, &signature_bytes(auth)?)
        .map_err(|e| format!("the Permit2 authorization's signature: {e}"))?;
    if signer != payer {
        return Err(format!(
            "the Permit2 authorization was signed by {signer}, not by the payer {payer}"
        ));
    }
    Ok(format!(
        "{payer} signed up to {} base units of {} to {} (Permit2, chain {}); {} settled for {} prompt and {} completion tokens",
        u.authorized, p.asset, auth.pay_to, auth.chain_id, p.amount, u.prompt_tokens, u.completion_tokens
    ))
}

/// The authorization's signature bytes.
fn signature_bytes(auth: &haca_core::receipt::PaymentAuthorization) -> Result<Vec<u8>, String> {
    auth.signature
        .strip_prefix("0x")
        .and_then(|h| hex::decode(h).ok())
        .ok_or_else(|| "payment box authorization.signature: not 0x hex".to_owned())
}

/// An `upto` box's own rules: its scheme says so, the amount is what its prices give for its
/// tokens (capped at the authorization), and never above the authorization. Returns the
/// authorized maximum.
fn check_upto(
    scheme: &str,
    amount: U256,
    u: &haca_core::receipt::UptoTerms,
) -> Result<U256, String> {
    if scheme != crate::types::SCHEME_UPTO {
        return Err(format!(
            "a payment box with upto terms has scheme {scheme:?}, not \"upto\""
        ));
    }
    let n = |v: &str, name: &str| {
        U256::from_str_radix(v, 10)
            .map_err(|_| format!("payment box upto.{name}: {v:?} is not a decimal amount"))
    };
    let authorized = n(&u.authorized, "authorized")?;
    if amount > authorized {
        return Err(format!(
            "{amount} base units settled, above the {authorized} authorized"
        ));
    }
    let price = crate::price::TokenPrice {
        input: n(&u.input_per_1k, "input_per_1k")?,
        output: n(&u.output_per_1k, "output_per_1k")?,
    };
    let priced = price.cost(u.prompt_tokens, u.completion_tokens);
    if amount != priced.min(authorized) {
        return Err(format!(
            "{amount} base units settled; {} prompt and {} completion tokens at {}/{} per 1,000 cost {priced} (at most the {authorized} authorized)",
            u.prompt_tokens, u.completion_tokens, u.input_per_1k, u.output_per_1k
        ));
    }
    Ok(authorized)
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
    fn an_upto_box_settles_its_priced_tokens_and_never_above_the_authorization() {
        // The box's payer signed 1000 base units: as upto, that is the maximum authorized.
        let (signed, _) = signed_box();
        let upto = |amount: &str, prompt: u64| {
            let mut p = signed.clone();
            p.scheme = "upto".into();
            p.amount = amount.into();
            p.upto = Some(haca_core::receipt::UptoTerms {
                authorized: "1000".into(),
                input_per_1k: "1000".into(),
                output_per_1k: "0".into(),
                prompt_tokens: prompt,
                completion_tokens: 9,
                permit2: None,
            });
            p
        };
        let detail = PAYMENT_VERIFIER.verify(&upto("5", 5)).unwrap();
        assert!(detail.contains("signed up to 1000"), "{detail}");
        // Tokens priced above the authorization settle the authorization, no more.
        PAYMENT_VERIFIER.verify(&upto("1000", 5000)).unwrap();
        let e = PAYMENT_VERIFIER.verify(&upto("1001", 5000)).unwrap_err();
        assert!(e.contains("above the 1000 authorized"), "{e}");
        // An amount the tokens do not give is refused too.
        let e = PAYMENT_VERIFIER.verify(&upto("6", 5)).unwrap_err();
        assert!(e.contains("cost 5"), "{e}");
        // upto terms under another scheme, or a changed maximum, fail.
        let mut p = upto("5", 5);
        p.scheme = "exact".into();
        assert!(PAYMENT_VERIFIER.verify(&p).is_err());
        let mut p = upto("5", 5);
        p.upto.as_mut().unwrap().authorized = "1001".into();
        assert!(PAYMENT_VERIFIER.verify(&p).is_err());
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
