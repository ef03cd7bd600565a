//! TEE registry rules, pure: PCR sets approved and revoked, enclaves registered from the facts
//! a verifier produced, heartbeats, and the active query. Every refusal with its reason.

use std::collections::BTreeMap;

use haca_core::{sha256, Digest, NodeId, NodeKey};
use haca_tee::nitro::{verify, Policy};
use haca_tee::registry::{
    check_binding, ed25519_spki_der, heartbeat_message, sign_heartbeat, tee_id_of, EnclaveFacts,
    PcrSet, RegistryError, RegistryParams, TeeRegistry,
};
use haca_tee::NitridingUserData;

const T0: u64 = 1_764_000_000_000;
const MIN: u64 = 60_000;

fn key(i: u8) -> NodeKey {
    NodeKey::from_seed([i; 32])
}

fn pcrs(tag: u8) -> PcrSet {
    PcrSet::new(
        &hex::encode([tag; 48]),
        &hex::encode([tag + 1; 48]),
        &hex::encode([tag + 2; 48]),
    )
    .unwrap()
}

fn pcr_map(set: &PcrSet) -> BTreeMap<u8, String> {
    let mut m: BTreeMap<u8, String> = (3..16u8).map(|i| (i, hex::encode([0u8; 48]))).collect();
    m.insert(0, set.pcr0.clone());
    m.insert(1, set.pcr1.clone());
    m.insert(2, set.pcr2.clone());
    m
}

/// Facts of a document with `set`'s PCRs, binding `k` through `public_key`, dated `ts`.
fn facts(set: &PcrSet, k: &NodeKey, ts: u64) -> EnclaveFacts {
    EnclaveFacts {
        pcrs: pcr_map(set),
        public_key: Some(k.node_id().0.to_vec()),
        user_data: None,
        timestamp_ms: ts,
        dev: false,
        document_digest: sha256(&ts.to_be_bytes()),
    }
}

/// A registry with `pcrs(0)` approved and key 1 registered at T0.
fn registered() -> (TeeRegistry, Digest) {
    let mut reg = TeeRegistry::default();
    reg.approve_pcrs(pcrs(0)).unwrap();
    let id = reg
        .register(&facts(&pcrs(0), &key(1), T0), key(1).node_id(), T0 + 1_000)
        .unwrap();
    (reg, id)
}

#[test]
fn pcr_set_id_test_vector_and_validation() {
    // SHA-256("haca.tee.pcrs.v1:" || 0x30 || 00*48 || 0x30 || 01*48 || 0x30 || 02*48),
    // computed independently (Python hashlib).
    let set = PcrSet::new(
        &hex::encode([0u8; 48]),
        &hex::encode([1u8; 48]),
        &hex::encode([2u8; 48]),
    )
    .unwrap();
    assert_eq!(
        set.id().to_hex(),
        "ffa92a3401364095b3da7a8a7959602c6f8a43b67bf8a810136c09968438c155"
    );
    // Upper case is stored lower case: the same set, the same id.
    let upper = PcrSet::new(
        &hex::encode_upper([0xabu8; 48]),
        &hex::encode([1u8; 48]),
        &hex::encode([2u8; 48]),
    )
    .unwrap();
    assert_eq!(upper.pcr0, hex::encode([0xabu8; 48]));
    assert_ne!(pcrs(0).id(), pcrs(3).id());

    let err = PcrSet::new("zz", &set.pcr1, &set.pcr2).unwrap_err();
    assert!(err.to_string().starts_with("pcr0: not hex"), "{err}");
    let err = PcrSet::new(&set.pcr0, &hex::encode([1u8; 20]), &set.pcr2).unwrap_err();
    assert_eq!(
        err.to_string(),
        "pcr1: is 20 bytes; a PCR is 32, 48 or 64 bytes (Nitro: 48)"
    );
    // A set deserialized with upper-case hex is refused, not silently renamed.
    let raw = PcrSet {
        pcr0: hex::encode_upper([0xabu8; 48]),
        ..set.clone()
    };
    let err = TeeRegistry::default().approve_pcrs(raw).unwrap_err();
    assert_eq!(err.to_string(), "pcr0: must be lowercase hex");

    let mut m = pcr_map(&set);
    m.remove(&2);
    assert_eq!(
        PcrSet::from_pcrs(&m).unwrap_err(),
        RegistryError::MissingPcr { index: 2 }
    );
}

#[test]
fn heartbeat_message_test_vector() {
    // Computed independently with Python's `cryptography` (Ed25519 seed 07*32).
    let k = key(7);
    assert_eq!(
        k.node_id().to_string(),
        "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c"
    );
    let tee_id = tee_id_of(&k.node_id());
    assert_eq!(
        tee_id.to_hex(),
        "fe812c12f3ab4ce6ac5db69ac352f906cb1b11ef43fb33e252ef7ff552263889"
    );
    let m = heartbeat_message(&tee_id, T0);
    assert_eq!(m.len(), 62);
    assert_eq!(
        hex::encode(&m),
        "686163612e7465652e6865617274626561742e76313a\
         fe812c12f3ab4ce6ac5db69ac352f906cb1b11ef43fb33e252ef7ff552263889\
         0000019ab697e800"
    );
    assert_eq!(
        sign_heartbeat(&k, T0),
        "9f357f97199a2c6643564084efd00336f2873d3e2dd9bfeb4ce3fc4a19de4e0f\
         afe5f47c71247cc522eb98693536faf8fadeab01c1d28bed08c452ba0cdc5408"
    );
    assert_eq!(
        hex::encode(ed25519_spki_der(&k.node_id())),
        "302a300506032b6570032100ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c"
    );
}

#[test]
fn approving_and_revoking_pcr_sets() {
    let mut reg = TeeRegistry::default();
    let id = reg.approve_pcrs(pcrs(0)).unwrap();
    assert_eq!(id, pcrs(0).id());
    assert!(reg.is_approved(&id));
    assert_eq!(
        reg.approve_pcrs(pcrs(0)).unwrap_err().to_string(),
        format!("PCR set {id} is already approved")
    );
    assert_eq!(reg.revoke_pcrs(&id).unwrap(), Vec::<Digest>::new());
    assert!(!reg.is_approved(&id));
    assert_eq!(
        reg.revoke_pcrs(&id).unwrap_err().to_string(),
        format!("PCR set {id} is not approved")
    );
}

#[test]
fn registration_refusals_each_with_its_reason() {
    let mut reg = TeeRegistry::default();
    let k = key(1);
    let f = facts(&pcrs(0), &k, T0);

    // PCRs not approved.
    let err = reg.register(&f, k.node_id(), T0).unwrap_err();
    assert_eq!(err, RegistryError::PcrsNotApproved { id: pcrs(0).id() });
    assert!(err.to_string().ends_with("is not approved"));
    reg.approve_pcrs(pcrs(0)).unwrap();

    // PCR0..2 absent.
    let mut no_pcr1 = f.clone();
    no_pcr1.pcrs.remove(&1);
    assert_eq!(
        reg.register(&no_pcr1, k.node_id(), T0)
            .unwrap_err()
            .to_string(),
        "the attestation document carries no PCR1"
    );

    // A dev root, not allowed by default.
    let mut dev = f.clone();
    dev.dev = true;
    assert_eq!(
        reg.register(&dev, k.node_id(), T0).unwrap_err(),
        RegistryError::DevRootNotAllowed
    );

    // Not bound: another key, and a document without public_key or user_data.
    let err = reg.register(&f, key(2).node_id(), T0).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the attestation document does not bind signing key {}: the document carries a 32-byte public_key that differs and no user_data",
            key(2).node_id()
        )
    );
    let mut bare = f.clone();
    bare.public_key = None;
    bare.user_data = Some(vec![0; 42]);
    let err = reg.register(&bare, k.node_id(), T0).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("no public_key and 42-byte user_data that is not nitriding's"),
        "{err}"
    );

    // Not an Ed25519 point.
    let bad = (0u8..=255)
        .map(|i| NodeId([i; 32]))
        .find(|n| {
            matches!(
                haca_core::keys::verify(n, b"", &"00".repeat(64)),
                Err(haca_core::keys::KeyError::BadPublicKey(_))
            )
        })
        .expect("some repeated byte is not a point");
    let mut f_bad = f.clone();
    f_bad.public_key = Some(bad.0.to_vec());
    assert_eq!(
        reg.register(&f_bad, bad, T0).unwrap_err(),
        RegistryError::BadSigningKey { key: bad }
    );

    // Stale: older than the maximum age (5 minutes by default) at the registration time.
    let err = reg.register(&f, k.node_id(), T0 + 5 * MIN + 1).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the attestation document is 300001 ms old at {}; the maximum age is 300000 ms",
            T0 + 5 * MIN + 1
        )
    );
    // From the future, beyond the 60 s skew.
    let err = reg.register(&f, k.node_id(), T0 - MIN - 1).unwrap_err();
    assert!(
        matches!(
            err,
            RegistryError::DocumentFromTheFuture {
                ahead_ms: 60_001,
                ..
            }
        ),
        "{err}"
    );

    // Exactly at the limits, it registers; a second registration is refused.
    let id = reg.register(&f, k.node_id(), T0 + 5 * MIN).unwrap();
    assert_eq!(id, tee_id_of(&k.node_id()));
    let e = reg.enclave(&id).unwrap();
    assert!(e.enabled && !e.dev && e.rsa_spki.is_none());
    assert_eq!(
        (e.attested_at_ms, e.registered_at_ms, e.last_heartbeat_ms),
        (T0, T0 + 5 * MIN, T0)
    );
    assert_eq!(e.pcr_set, pcrs(0).id());
    assert_eq!(
        reg.register(&f, k.node_id(), T0 + 1)
            .unwrap_err()
            .to_string(),
        format!("enclave {id} is already registered and enabled")
    );
}

#[test]
fn dev_enclaves_register_only_when_the_params_allow_dev_roots() {
    let mut reg = TeeRegistry::new(RegistryParams::devnet());
    reg.approve_pcrs(pcrs(0)).unwrap();
    let mut f = facts(&pcrs(0), &key(1), T0);
    f.dev = true;
    let id = reg.register(&f, key(1).node_id(), T0).unwrap();
    assert!(reg.enclave(&id).unwrap().dev);
    // Params parse with defaults: an empty object is the default (no dev roots).
    let p: RegistryParams = serde_json::from_str("{}").unwrap();
    assert_eq!(p, RegistryParams::default());
    assert!(!p.allow_dev_roots);
}

#[test]
fn the_key_binds_through_spki_or_nitriding_user_data() {
    let k = key(1);
    let mut f = facts(&pcrs(0), &k, T0);
    assert_eq!(
        check_binding(&f, &k.node_id()).unwrap(),
        "public_key holds the Ed25519 key"
    );
    f.public_key = Some(ed25519_spki_der(&k.node_id()));
    assert_eq!(
        check_binding(&f, &k.node_id()).unwrap(),
        "public_key holds the Ed25519 key's SubjectPublicKeyInfo"
    );
    f.public_key = Some(vec![4; 65]);
    f.user_data = Some(
        NitridingUserData::for_keys(b"tls cert", &ed25519_spki_der(&k.node_id()))
            .to_bytes()
            .to_vec(),
    );
    assert_eq!(
        check_binding(&f, &k.node_id()).unwrap(),
        "nitriding user_data holds SHA-256 of the key's SubjectPublicKeyInfo"
    );
    assert_eq!(
        check_binding(&f, &key(2).node_id()).unwrap_err(),
        "the document carries a 65-byte public_key that differs and nitriding user_data for another signing key"
    );
    let mut reg = TeeRegistry::default();
    reg.approve_pcrs(pcrs(0)).unwrap();
    reg.register(&f, k.node_id(), T0).unwrap();
}

#[test]
fn revoking_a_set_disables_its_enclaves_until_they_register_again() {
    let (mut reg, a) = registered();
    reg.approve_pcrs(pcrs(3)).unwrap();
    let b = reg
        .register(&facts(&pcrs(3), &key(2), T0), key(2).node_id(), T0)
        .unwrap();
    assert_eq!(reg.active(T0 + MIN, 10 * MIN).len(), 2);

    assert_eq!(reg.revoke_pcrs(&pcrs(0).id()).unwrap(), vec![a]);
    let e = reg.enclave(&a).unwrap();
    assert!(!e.enabled);
    let reason = format!("PCR set {} was revoked", pcrs(0).id());
    assert_eq!(e.disabled_reason.as_deref(), Some(reason.as_str()));
    assert!(!reg.is_active(&a, T0 + MIN, 10 * MIN));
    assert!(reg.is_active(&b, T0 + MIN, 10 * MIN));

    // A heartbeat of a disabled enclave is refused.
    let err = reg
        .heartbeat(&a, T0 + MIN, &sign_heartbeat(&key(1), T0 + MIN))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("enclave {a} is disabled ({reason}); it must register again")
    );

    // Approving the set again does not bring it back.
    reg.approve_pcrs(pcrs(0)).unwrap();
    assert!(!reg.enclave(&a).unwrap().enabled);
    assert!(!reg.is_active(&a, T0 + MIN, 10 * MIN));
    // Registering again with a fresh document does.
    let again = facts(&pcrs(0), &key(1), T0 + 2 * MIN);
    reg.register(&again, key(1).node_id(), T0 + 2 * MIN)
        .unwrap();
    let e = reg.enclave(&a).unwrap();
    assert!(e.enabled && e.disabled_reason.is_none());
    assert!(reg.is_active(&a, T0 + 3 * MIN, 10 * MIN));
}

#[test]
fn heartbeats_are_signed_fresh_and_increasing() {
    let (mut reg, id) = registered();
    let k = key(1);

    // Unknown enclave.
    let stranger = tee_id_of(&key(9).node_id());
    assert_eq!(
        reg.heartbeat(&stranger, T0 + MIN, &sign_heartbeat(&key(9), T0 + MIN))
            .unwrap_err()
            .to_string(),
        format!("enclave {stranger} is not registered")
    );
    // Signed by another key, or over another time.
    let err = reg
        .heartbeat(&id, T0 + MIN, &sign_heartbeat(&key(2), T0 + MIN))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "heartbeat of enclave {id}: signature does not verify under key {}",
            k.node_id()
        )
    );
    assert!(matches!(
        reg.heartbeat(&id, T0 + MIN, &sign_heartbeat(&k, T0 + 2 * MIN)),
        Err(RegistryError::BadSignature { .. })
    ));
    assert!(matches!(
        reg.heartbeat(&id, T0 + MIN, "not hex"),
        Err(RegistryError::BadSignature { .. })
    ));

    // Registration counts as a heartbeat at the document's time: not after it is refused.
    assert_eq!(
        reg.heartbeat(&id, T0, &sign_heartbeat(&k, T0))
            .unwrap_err()
            .to_string(),
        format!("heartbeat of enclave {id} at {T0} is not after its last heartbeat at {T0}")
    );
    reg.heartbeat(&id, T0 + MIN, &sign_heartbeat(&k, T0 + MIN))
        .unwrap();
    assert_eq!(reg.enclave(&id).unwrap().last_heartbeat_ms, T0 + MIN);
    // A replay, and an older one, are refused.
    assert!(matches!(
        reg.heartbeat(&id, T0 + MIN, &sign_heartbeat(&k, T0 + MIN)),
        Err(RegistryError::HeartbeatNotIncreasing { .. })
    ));
    assert!(matches!(
        reg.heartbeat(&id, T0 + 30_000, &sign_heartbeat(&k, T0 + 30_000)),
        Err(RegistryError::HeartbeatNotIncreasing { .. })
    ));

    // Received at a time: not from the future, not older than the maximum age (10 min).
    let at = T0 + 2 * MIN;
    assert_eq!(
        reg.heartbeat_at(&id, at, &sign_heartbeat(&k, at), at - 1)
            .unwrap_err()
            .to_string(),
        format!(
            "heartbeat of enclave {id} is dated {at}, after the current time {}",
            at - 1
        )
    );
    assert_eq!(
        reg.heartbeat_at(&id, at, &sign_heartbeat(&k, at), at + 10 * MIN + 1)
            .unwrap_err()
            .to_string(),
        format!(
            "heartbeat of enclave {id} is 600001 ms old at {}; the maximum age is 600000 ms",
            at + 10 * MIN + 1
        )
    );
    reg.heartbeat_at(&id, at, &sign_heartbeat(&k, at), at + 10 * MIN)
        .unwrap();
    assert_eq!(reg.enclave(&id).unwrap().last_heartbeat_ms, at);
}

#[test]
fn active_means_approved_enabled_and_a_fresh_heartbeat() {
    let (mut reg, a) = registered();
    let b = reg
        .register(&facts(&pcrs(0), &key(2), T0), key(2).node_id(), T0)
        .unwrap();
    let max = 10 * MIN;

    // Both fresh right after registration; in tee id order.
    let active: Vec<Digest> = reg.active(T0 + max, max).iter().map(|e| e.tee_id).collect();
    let mut expected = vec![a, b];
    expected.sort();
    assert_eq!(active, expected);

    // Only the one that keeps beating stays active.
    reg.heartbeat(&b, T0 + 5 * MIN, &sign_heartbeat(&key(2), T0 + 5 * MIN))
        .unwrap();
    let now = T0 + max + 1;
    assert!(!reg.is_active(&a, now, max));
    assert!(reg.is_active(&b, now, max));
    assert_eq!(reg.active(now, max).len(), 1);
    assert!(reg.active(T0 + 5 * MIN + max + 1, max).is_empty());
    // A longer maximum age keeps both.
    assert_eq!(reg.active(now, 2 * max).len(), 2);
    // Unknown ids are not active.
    assert!(!reg.is_active(&Digest::default(), now, max));

    // Revocation of the set makes both inactive at once.
    reg.revoke_pcrs(&pcrs(0).id()).unwrap();
    assert!(reg.active(T0 + 6 * MIN, max).is_empty());
}

#[test]
fn the_registry_serializes_deterministically_and_round_trips() {
    let (mut reg, id) = registered();
    reg.heartbeat(&id, T0 + MIN, &sign_heartbeat(&key(1), T0 + MIN))
        .unwrap();
    let json = serde_json::to_string(&reg).unwrap();
    let back: TeeRegistry = serde_json::from_str(&json).unwrap();
    assert_eq!(back, reg);
    assert_eq!(serde_json::to_string(&back).unwrap(), json);
    assert!(!reg.is_default());
    assert!(TeeRegistry::default().is_default());
    // An empty object is the default registry.
    assert_eq!(
        serde_json::from_str::<TeeRegistry>("{}").unwrap(),
        TeeRegistry::default()
    );
}

/// The real AWS-signed fixtures: facts come from the verifier (audit mode, at the document's
/// own time); the PCR set registers once approved. `nitroprover_sample` carries a 32-byte
/// `public_key`, which the registry accepts as the Ed25519 key it binds when it is a valid
/// point; `base_nitro_validator` carries a 65-byte (P-256/secp) key that binds no Ed25519
/// key.
#[test]
fn real_fixture_documents_register_once_their_pcrs_are_approved() {
    let doc = include_bytes!("../fixtures/nitro/nitroprover_sample.cbor");
    let v = verify(doc, &Policy::audit()).unwrap();
    let f = EnclaveFacts::from(&v);
    assert!(!f.dev);
    let pk = f.public_key.clone().unwrap();
    assert_eq!(pk.len(), 32);
    let signing_key = NodeId(pk.try_into().unwrap());
    let set = PcrSet::from_pcrs(&f.pcrs).unwrap();
    assert_eq!(set.pcr0, v.pcrs[&0]);

    let mut reg = TeeRegistry::default();
    assert!(matches!(
        reg.register(&f, signing_key, f.timestamp_ms),
        Err(RegistryError::PcrsNotApproved { .. })
    ));
    reg.approve_pcrs(set.clone()).unwrap();
    // Stale five minutes after the document.
    assert!(matches!(
        reg.register(&f, signing_key, f.timestamp_ms + 5 * MIN + 1),
        Err(RegistryError::StaleDocument { .. })
    ));
    let id = reg.register(&f, signing_key, f.timestamp_ms + MIN).unwrap();
    let e = reg.enclave(&id).unwrap();
    assert_eq!(e.document_digest, v.document_digest);
    assert_eq!(e.pcr_set, set.id());
    assert!(reg.is_active(&id, f.timestamp_ms + MIN, 10 * MIN));

    // A document whose public_key is not an Ed25519 key binds none.
    let doc = include_bytes!("../fixtures/nitro/base_nitro_validator.cbor");
    let f = EnclaveFacts::from(&verify(doc, &Policy::audit()).unwrap());
    reg.approve_pcrs(PcrSet::from_pcrs(&f.pcrs).unwrap())
        .unwrap();
    let err = reg
        .register(&f, key(1).node_id(), f.timestamp_ms)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("the document carries a 65-byte public_key that differs and no user_data"),
        "{err}"
    );
}
