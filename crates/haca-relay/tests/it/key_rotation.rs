//! Key rotation: two key ids served at once, requests in flight under the previous key still
//! open until it expires, then its id is unknown; the private ring survives a restart.

use haca_relay::{decapsulate, encapsulate, KeyConfig, KeyPair, KeyRing, OhttpError};

const T0: u64 = 1_767_225_600;
const GRACE: u64 = 3_600;

#[test]
fn after_rotation_both_ids_are_served_and_the_old_one_opens_until_it_expires() {
    let mut ring = KeyRing::generate(1).unwrap();
    let old_config = ring.current().config().clone();
    let (in_flight, client) = encapsulate(&old_config, b"{\"n\":1}").unwrap();

    let new_id = ring.rotate_generated(T0 + GRACE).unwrap();
    assert_eq!(new_id, 2);
    assert_eq!(ring.current().key_id(), 2);
    assert_eq!(ring.key_ids(), vec![2, 1], "current first");
    assert_eq!(ring.not_after(1), Some(T0 + GRACE));
    let served = KeyConfig::decode_list(&ring.encoded_configs()).unwrap();
    assert_eq!(
        served.iter().map(|c| c.key_id).collect::<Vec<_>>(),
        vec![2, 1]
    );
    assert_ne!(served[0].public_key, served[1].public_key);

    // The request sealed before the rotation still opens, and its answer reads back.
    let (plaintext, ctx) = decapsulate(&ring, &in_flight).unwrap();
    assert_eq!(plaintext, b"{\"n\":1}");
    assert_eq!(
        client.open(&ctx.encapsulate(b"ok").unwrap()).unwrap(),
        b"ok"
    );
    // New requests use the new key.
    let (fresh, _) = encapsulate(&served[0], b"{\"n\":2}").unwrap();
    assert_eq!(fresh[0], 2);
    assert!(decapsulate(&ring, &fresh).is_ok());

    assert!(ring.prune(T0 + GRACE - 1).is_empty());
    assert!(decapsulate(&ring, &in_flight).is_ok());
    assert_eq!(ring.prune(T0 + GRACE), vec![1]);
    // Replayed after expiry: the id is unknown, the RFC 9458 key problem.
    let err = decapsulate(&ring, &in_flight).unwrap_err();
    assert_eq!(err, OhttpError::UnknownKeyId(1));
    assert!(err.is_key_problem());
    assert_eq!(ring.key_ids(), vec![2]);
}

#[test]
fn the_current_key_is_never_pruned_and_ids_are_not_reused_while_held() {
    let mut ring = KeyRing::new(KeyPair::from_seed(1, &[1; 32]).unwrap());
    assert!(ring.prune(u64::MAX).is_empty());
    ring.rotate(KeyPair::from_seed(2, &[2; 32]).unwrap(), T0)
        .unwrap();
    let err = ring
        .rotate(KeyPair::from_seed(1, &[3; 32]).unwrap(), T0)
        .unwrap_err();
    assert_eq!(err.code(), "key_ring");
    assert_eq!(
        ring.current().key_id(),
        2,
        "a refused rotation changes nothing"
    );
}

#[test]
fn a_persisted_ring_reloads_with_every_key_and_expiry() {
    let mut ring = KeyRing::generate(7).unwrap();
    let (in_flight, _) = encapsulate(ring.current().config(), b"{}").unwrap();
    ring.rotate_generated(T0).unwrap();
    let json = ring.to_private_json();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ohttp-keys.json");
    std::fs::write(&path, json.as_bytes()).unwrap();

    let reloaded = KeyRing::from_private_json(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(reloaded.configs(), ring.configs());
    assert_eq!(reloaded.current().key_id(), 8);
    assert_eq!(reloaded.not_after(7), Some(T0));
    assert!(decapsulate(&reloaded, &in_flight).is_ok());
}

#[test]
fn a_damaged_private_ring_is_refused_with_the_reason() {
    let ring = KeyRing::new(KeyPair::from_seed(1, &[1; 32]).unwrap());
    let json: serde_json::Value = serde_json::from_str(&ring.to_private_json()).unwrap();
    let cases = [
        ("/current", serde_json::json!(9), "current key id 9"),
        (
            "/keys/0/secret_key",
            serde_json::json!("abcd"),
            "secret key",
        ),
        ("/keys/0/kem_id", serde_json::json!(16), "KEM"),
        ("/format", serde_json::json!("other/1"), "format"),
    ];
    for (pointer, value, says) in cases {
        let mut bad = json.clone();
        *bad.pointer_mut(pointer).unwrap() = value;
        let err = KeyRing::from_private_json(&bad.to_string()).unwrap_err();
        assert!(err.to_string().contains(says), "{pointer}: {err}");
    }
    let mut twice = json.clone();
    let key = twice["keys"][0].clone();
    twice["keys"].as_array_mut().unwrap().push(key);
    let err = KeyRing::from_private_json(&twice.to_string()).unwrap_err();
    assert!(err.to_string().contains("twice"), "{err}");
}
