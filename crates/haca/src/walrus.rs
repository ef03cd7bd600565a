//! Walrus storage: a client of Walrus's HTTP API (a publisher's `PUT /v1/blobs`, an
//! aggregator's `GET /v1/blobs/{blob_id}`), and the node's own blob store that serves the
//! same two routes (`server::walrus`), so a deployment can keep artifacts and settlement tree
//! dumps on Walrus, and tests run against a haca node.
//!
//! Every id is checked, not trusted: the client computes the Walrus blob id of what it stores
//! (haca-walrus, RS2 over mainnet's 1,000 shards) and refuses a publisher that names another, and an
//! aggregator's bytes must give the id they were asked by.

use std::path::{Path, PathBuf};

/// The Walrus blob id of `bytes` at mainnet's shard count.
pub fn walrus_id(bytes: &[u8]) -> Result<String, String> {
    haca_walrus::mainnet_blob_id(bytes).map_err(|e| e.to_string())
}

/// Whether `s` is a Walrus id's text (so also safe as a file name): 32 bytes in URL-safe
/// base64, no padding.
pub fn is_walrus_id(s: &str) -> bool {
    s.parse::<haca_walrus::BlobId>().is_ok()
}

/// A Walrus publisher and aggregator (either may be absent: a read-only or write-only use).
#[derive(Clone)]
pub struct WalrusClient {
    pub publisher: Option<String>,
    pub aggregator: Option<String>,
    http: reqwest::Client,
}

/// What a publisher answered to a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub blob_id: String,
    /// `false` when Walrus already held the blob (`alreadyCertified`).
    pub newly_created: bool,
}

impl WalrusClient {
    pub fn new(publisher: Option<String>, aggregator: Option<String>) -> WalrusClient {
        let trim = |s: String| s.trim_end_matches('/').to_owned();
        WalrusClient {
            publisher: publisher.map(trim),
            aggregator: aggregator.map(trim),
            http: reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(10))
                .timeout(std::time::Duration::from_secs(600))
                .build()
                .expect("an HTTP client builds"),
        }
    }

    /// Stores `bytes` with the publisher (`PUT /v1/blobs[?epochs=N]`), with extra request
    /// headers (a haca node's operator token). The id it names must be the bytes' own.
    pub async fn store(
        &self,
        bytes: Vec<u8>,
        epochs: Option<u32>,
        headers: &[(&str, &str)],
    ) -> Result<Stored, String> {
        let expected = walrus_id(&bytes)?;
        self.store_as(expected, bytes, epochs, headers).await
    }

    /// [`store`](Self::store) of bytes whose Walrus id, `expected`, the caller has already
    /// (the encoding costs about 0.1 s of CPU a megabyte and 1.5x the bytes in memory).
    pub async fn store_as(
        &self,
        expected: String,
        bytes: Vec<u8>,
        epochs: Option<u32>,
        headers: &[(&str, &str)],
    ) -> Result<Stored, String> {
        let publisher = self
            .publisher
            .as_ref()
            .ok_or("no Walrus publisher is set")?;
        let mut url = format!("{publisher}/v1/blobs");
        if let Some(e) = epochs {
            url.push_str(&format!("?epochs={e}"));
        }
        let mut req = self.http.put(&url).body(bytes);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.map_err(|e| format!("{url}: {e}"))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| format!("{url}: {e}"))?;
        if !status.is_success() {
            return Err(format!("{url}: HTTP {}: {text}", status.as_u16()));
        }
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("{url}: the answer is not JSON: {e}"))?;
        let (blob_id, newly_created) =
            if let Some(id) = v["newlyCreated"]["blobObject"]["blobId"].as_str() {
                (id, true)
            } else if let Some(id) = v["alreadyCertified"]["blobId"].as_str() {
                (id, false)
            } else {
                return Err(format!(
                    "{url}: the answer names no blobId (newlyCreated or alreadyCertified): {text}"
                ));
            };
        if blob_id != expected {
            return Err(format!(
                "{url}: the publisher named blob {blob_id}, the bytes give {expected}"
            ));
        }
        Ok(Stored {
            blob_id: expected,
            newly_created,
        })
    }

    /// Reads blob `blob_id` from the aggregator; the bytes must give that id.
    pub async fn read(&self, blob_id: &str) -> Result<Vec<u8>, String> {
        let aggregator = self
            .aggregator
            .as_ref()
            .ok_or("no Walrus aggregator is set")?;
        if !is_walrus_id(blob_id) {
            return Err(format!(
                "{blob_id:?} is not a Walrus blob id (43 characters of URL-safe base64)"
            ));
        }
        let url = format!("{aggregator}/v1/blobs/{blob_id}");
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| format!("{url}: {e}"))?;
        if !status.is_success() {
            return Err(format!(
                "{url}: HTTP {}: {}",
                status.as_u16(),
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
            ));
        }
        let got = walrus_id(&bytes)?;
        if got != blob_id {
            return Err(format!(
                "{url}: the aggregator's {} bytes give blob id {got}, not {blob_id}",
                bytes.len()
            ));
        }
        Ok(bytes.to_vec())
    }
}

/// The node's own blobs by Walrus id: one file per blob under a directory, and the Walrus
/// publisher the node also stores artifacts and tree dumps with, when it has one
/// (`--walrus-publisher`).
pub struct LocalBlobs {
    dir: PathBuf,
    pub publisher: Option<WalrusClient>,
}

impl LocalBlobs {
    pub fn open(dir: &Path) -> std::io::Result<LocalBlobs> {
        std::fs::create_dir_all(dir)?;
        Ok(LocalBlobs {
            dir: dir.to_owned(),
            publisher: None,
        })
    }

    /// Also stores artifacts and tree dumps with the Walrus publisher at `url`.
    pub fn with_publisher(mut self, url: Option<String>) -> LocalBlobs {
        self.publisher = url.map(|u| WalrusClient::new(Some(u), None));
        self
    }

    /// Stores `bytes`, whose Walrus id is `id`, with the publisher, off the caller's path; the
    /// outcome is logged.
    pub fn push(&self, what: String, id: String, bytes: Vec<u8>) {
        let Some(p) = self.publisher.clone() else {
            return;
        };
        tokio::spawn(async move {
            match p.store_as(id, bytes, None, &[]).await {
                Ok(s) => tracing::info!("{what} stored on Walrus as {}", s.blob_id),
                Err(e) => tracing::warn!("{what} not stored on Walrus: {e}"),
            }
        });
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Whether this node holds blob `id`.
    pub fn has(&self, id: &str) -> bool {
        is_walrus_id(id) && self.path(id).exists()
    }

    /// Stores `bytes` under their Walrus id; `(id, newly stored)`.
    pub fn put(&self, bytes: &[u8]) -> Result<(String, bool), String> {
        let id = walrus_id(bytes)?;
        let fresh = self.put_as(&id, bytes)?;
        Ok((id, fresh))
    }

    /// Stores `bytes` whose Walrus id the caller computed already (a round's tree dump).
    pub fn put_as(&self, id: &str, bytes: &[u8]) -> Result<bool, String> {
        let path = self.path(id);
        if path.exists() {
            return Ok(false);
        }
        haca_store::write_atomic(&path, bytes, false).map_err(|e| e.to_string())?;
        Ok(true)
    }

    /// The blob's bytes, when this node holds it.
    pub fn get(&self, id: &str) -> Option<Vec<u8>> {
        if !is_walrus_id(id) {
            return None;
        }
        std::fs::read(self.path(id)).ok()
    }
}

/// With a Walrus publisher set: stores every settled round's tree dump with it as its block
/// commits, and keeps it among the node's blobs (so `GET /v1/blobs/{id}` serves it at once).
/// Runs until the chain stops; a dump the publisher refuses is logged and kept locally.
pub async fn mirror_rounds(
    chain: std::sync::Arc<haca_chain::validator::Validator>,
    blobs: std::sync::Arc<LocalBlobs>,
) {
    let mut heights = chain.heights();
    let mut done = *heights.borrow_and_update();
    loop {
        if heights.changed().await.is_err() {
            return;
        }
        let tip = *heights.borrow_and_update();
        for h in done + 1..=tip {
            let c = chain.clone();
            let dump = tokio::task::spawn_blocking(move || c.round_dump_at(h)).await;
            let Ok(Ok(Some((id, bytes)))) = dump else {
                continue;
            };
            match blobs.put_as(&id, &bytes) {
                Ok(true) => {}
                Ok(false) => continue, // kept (and pushed) by a receipt read already
                Err(e) => tracing::warn!("the tree dump of height {h} ({id}) was not kept: {e}"),
            }
            blobs.push(format!("round tree of height {h}"), id, bytes);
        }
        done = tip;
    }
}
