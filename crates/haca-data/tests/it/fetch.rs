//! Fetching from a real local server: what the item records, and what is refused.

use crate::serve;
use haca_core::{sha256, NodeKey};
use haca_data::fetch::{DEFAULT_MAX_BYTES, DEFAULT_TIMEOUT};
use haca_data::{Allowlist, FetchError, Fetcher, FreshnessPolicy};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

fn fetcher(rules: &[String]) -> Fetcher {
    Fetcher::new(
        Allowlist::parse(rules).unwrap(),
        FreshnessPolicy::default(),
        DEFAULT_MAX_BYTES,
        DEFAULT_TIMEOUT,
    )
    .unwrap()
}

#[tokio::test]
async fn a_fetch_is_signed_with_its_hash_status_type_size_and_cache_lifetime() {
    let src = serve(Arc::new(|_: &str| {
        (
            200,
            vec![
                ("content-type".into(), "application/json".into()),
                ("cache-control".into(), "max-age=7".into()),
            ],
            br#"{"eur_usd":1.08}"#.to_vec(),
        )
    }));
    let key = NodeKey::from_seed([3; 32]);
    let f = fetcher(&[format!("{}/rates", src.url)]);
    let got = f
        .fetch(&format!("{}/rates/eur", src.url), &key)
        .await
        .unwrap();
    let item = &got.item;
    item.verify().unwrap();
    assert_eq!(item.signer, key.node_id());
    assert_eq!(item.id, Some(item.computed_id()));
    assert_eq!(item.sha256, sha256(br#"{"eur_usd":1.08}"#));
    assert_eq!(got.content, br#"{"eur_usd":1.08}"#);
    assert_eq!(item.http_status, Some(200));
    assert_eq!(item.content_type.as_deref(), Some("application/json"));
    assert_eq!(item.size, Some(16));
    assert_eq!(item.valid_until, Some(item.fetched_at + 7_000));
    assert_eq!(item.tls_cert_sha256, None, "plain http has no certificate");
    assert_eq!(item.source, format!("{}/rates/eur", src.url));
}

#[tokio::test]
async fn a_source_outside_the_allowlist_is_refused_naming_the_rule_before_any_request() {
    let src = serve(Arc::new(|_: &str| (200, vec![], b"secret".to_vec())));
    let rule = format!("{}/public", src.url);
    let f = fetcher(std::slice::from_ref(&rule));
    let key = NodeKey::from_seed([3; 32]);
    let e = f
        .fetch(&format!("{}/private/keys", src.url), &key)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "source_not_allowed");
    let msg = e.to_string();
    assert!(
        msg.contains(&rule) && msg.contains("path /private/keys is outside /public"),
        "{msg}"
    );
    // A look-alike host is another host.
    let e = f
        .fetch(&src.url.replace("127.0.0.1", "127.0.0.1.nip.io"), &key)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "source_not_allowed", "{e}");
    assert_eq!(src.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_redirect_out_of_the_allowlist_is_not_followed() {
    let out = serve(Arc::new(|_: &str| (200, vec![], b"elsewhere".to_vec())));
    let target = format!("{}/x", out.url);
    let src = serve(Arc::new(move |_: &str| {
        (302, vec![("location".into(), target.clone())], Vec::new())
    }));
    let f = fetcher(&[format!("{}/", src.url)]);
    let e = f
        .fetch(&format!("{}/go", src.url), &NodeKey::from_seed([3; 32]))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("outside the allowlist"), "{e}");
    assert_eq!(out.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_body_over_the_cap_is_refused() {
    let src = serve(Arc::new(|_: &str| (200, vec![], vec![b'x'; 2048])));
    let f = Fetcher::new(
        Allowlist::parse(&[format!("{}/", src.url)]).unwrap(),
        FreshnessPolicy::default(),
        1024,
        Duration::from_secs(5),
    )
    .unwrap();
    let e = f
        .fetch(&format!("{}/big", src.url), &NodeKey::from_seed([3; 32]))
        .await
        .unwrap_err();
    assert!(matches!(e, FetchError::TooLarge { limit: 1024, .. }), "{e}");
}
