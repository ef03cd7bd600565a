//! Signed webhooks, in the Standard Webhooks layout with its asymmetric scheme: headers
//! `webhook-id`, `webhook-timestamp` (unix seconds) and `webhook-signature: v1a,<base64
//! Ed25519 signature>` over `{id}.{timestamp}.{body}`, by the node's key. A receiver needs only
//! the node id (`GET /v1/node`) to check one.

use base64::Engine;
use haca_core::keys::NodeKey;
use haca_core::NodeId;

/// How far a webhook's timestamp may be from the receiver's clock (replays beyond are refused).
pub const DEFAULT_TOLERANCE_S: u64 = 300;

fn signed_content(id: &str, timestamp_s: u64, body: &[u8]) -> Vec<u8> {
    let mut m = format!("{id}.{timestamp_s}.").into_bytes();
    m.extend_from_slice(body);
    m
}

/// The `webhook-signature` header value for one delivery.
pub fn sign(key: &NodeKey, id: &str, timestamp_s: u64, body: &[u8]) -> String {
    let sig = key.sign(&signed_content(id, timestamp_s, body));
    format!(
        "v1a,{}",
        base64::engine::general_purpose::STANDARD.encode(sig)
    )
}

/// Why a receiver refuses a webhook.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("header {0}: missing")]
    Missing(&'static str),
    #[error("header webhook-timestamp: {0:?} is not unix seconds")]
    BadTimestamp(String),
    #[error("header webhook-timestamp: {at} is {skew} s away from now; allowed {tolerance} s (a replay, or a clock off)")]
    OutOfTolerance { at: u64, skew: u64, tolerance: u64 },
    #[error("header webhook-signature: no v1a signature by node {0} over this id, timestamp and body (forged or altered)")]
    BadSignature(NodeId),
}

/// Checks a delivery: `signature_header` may hold several space-separated signatures (key
/// rotation); one valid `v1a` signature by `signer` suffices.
pub fn verify(
    signer: &NodeId,
    id: Option<&str>,
    timestamp: Option<&str>,
    signature_header: Option<&str>,
    body: &[u8],
    now_s: u64,
    tolerance_s: u64,
) -> Result<(), WebhookError> {
    let id = id.ok_or(WebhookError::Missing("webhook-id"))?;
    let ts_text = timestamp.ok_or(WebhookError::Missing("webhook-timestamp"))?;
    let sigs = signature_header.ok_or(WebhookError::Missing("webhook-signature"))?;
    let at: u64 = ts_text
        .trim()
        .parse()
        .map_err(|_| WebhookError::BadTimestamp(ts_text.chars().take(32).collect()))?;
    let skew = at.abs_diff(now_s);
    if skew > tolerance_s {
        return Err(WebhookError::OutOfTolerance {
            at,
            skew,
            tolerance: tolerance_s,
        });
    }
    let content = signed_content(id, at, body);
    let ok = sigs.split_whitespace().any(|s| {
        s.strip_prefix("v1a,")
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .filter(|raw| raw.len() == 64)
            .is_some_and(|raw| haca_core::keys::verify(signer, &content, &hex::encode(raw)).is_ok())
    });
    if ok {
        Ok(())
    } else {
        Err(WebhookError::BadSignature(*signer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_delivery_verifies_and_any_change_is_refused() {
        let key = NodeKey::from_seed([9; 32]);
        let body = br#"{"type":"case.cleared"}"#;
        let sig = sign(&key, "msg_1", 1_000, body);
        let id = key.node_id();
        let check = |i: &str, t: &str, s: &str, b: &[u8]| {
            verify(&id, Some(i), Some(t), Some(s), b, 1_010, 300)
        };
        assert_eq!(check("msg_1", "1000", &sig, body), Ok(()));
        assert_eq!(
            check("msg_1", "1000", &format!("v1a,AAAA {sig}"), body),
            Ok(())
        );
        assert!(matches!(
            check("msg_2", "1000", &sig, body),
            Err(WebhookError::BadSignature(_))
        ));
        assert!(matches!(
            check("msg_1", "1001", &sig, body),
            Err(WebhookError::BadSignature(_))
        ));
        assert!(matches!(
            check("msg_1", "1000", &sig, b"{}"),
            Err(WebhookError::BadSignature(_))
        ));
        let other = sign(&NodeKey::from_seed([8; 32]), "msg_1", 1_000, body);
        assert!(matches!(
            check("msg_1", "1000", &other, body),
            Err(WebhookError::BadSignature(_))
        ));
        assert!(matches!(
            check("msg_1", "1000", "v1,abc", body),
            Err(WebhookError::BadSignature(_))
        ));
        assert!(matches!(
            check("msg_1", "soon", &sig, body),
            Err(WebhookError::BadTimestamp(_))
        ));
        assert!(matches!(
            verify(
                &id,
                Some("msg_1"),
                Some("1000"),
                Some(&sig),
                body,
                5_000,
                300
            ),
            Err(WebhookError::OutOfTolerance { .. })
        ));
        assert_eq!(
            verify(&id, None, Some("1000"), Some(&sig), body, 1_000, 300),
            Err(WebhookError::Missing("webhook-id"))
        );
    }

    proptest::proptest! {
        /// Whatever a sender puts in the headers and body: refused or accepted, never a
        /// panic; and only a signature by the node's key over exactly these bytes is accepted.
        #[test]
        fn any_delivery_is_checked_without_panic(
            id in ".{0,40}",
            ts in ".{0,24}",
            sig in ".{0,200}",
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..256),
        ) {
            let key = NodeKey::from_seed([4; 32]);
            let r = verify(&key.node_id(), Some(&id), Some(&ts), Some(&sig), &body, 1_000, 300);
            proptest::prop_assert!(r.is_err(), "a random signature was accepted");
            if let Ok(t) = ts.trim().parse::<u64>() {
                let good = sign(&key, &id, t, &body);
                let r = verify(&key.node_id(), Some(&id), Some(&t.to_string()), Some(&good), &body, t, 300);
                proptest::prop_assert!(r.is_ok(), "{r:?}");
            }
        }
    }
}
