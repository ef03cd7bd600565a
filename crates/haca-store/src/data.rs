//! Data items: each signed item (its JSON) with the bytes it hashes, by id. Written once; a
//! second fetch is another item with another id.

use crate::{Store, StoreError};
use haca_core::data::DataItem;
use rusqlite::{params, OptionalExtension};

impl Store {
    /// Stores a signed item and its content. Storing the same item again is a no-op.
    pub async fn insert_data_item(
        &self,
        item: &DataItem,
        content: Vec<u8>,
    ) -> Result<(), StoreError> {
        let id = item
            .id
            .ok_or_else(|| StoreError::Invalid("a data item without an id".into()))?
            .to_hex();
        let json = serde_json::to_string(item)
            .map_err(|e| StoreError::Invalid(format!("data item {id}: {e}")))?;
        let (source, fetched_at) = (item.source.clone(), item.fetched_at as i64);
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO data_items (id, item, content, source, fetched_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![id, json, content, source, fetched_at])?;
            Ok(())
        })
        .await
    }

    /// The item `id` (64 hex characters), without its content.
    pub fn data_item(&self, id: &str) -> Result<Option<DataItem>, StoreError> {
        let json: Option<String> = self.read(|c| {
            Ok(
                c.prepare_cached("SELECT item FROM data_items WHERE id = ?1")?
                    .query_row([id], |r| r.get(0))
                    .optional()?,
            )
        })?;
        json.map(|j| {
            serde_json::from_str(&j)
                .map_err(|e| StoreError::Corrupt(format!("data item {id}: {e}")))
        })
        .transpose()
    }

    /// The content of item `id`.
    pub fn data_content(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|c| {
            Ok(
                c.prepare_cached("SELECT content FROM data_items WHERE id = ?1")?
                    .query_row([id], |r| r.get(0))
                    .optional()?,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use haca_core::{sha256, NodeId, NodeKey};

    #[tokio::test]
    async fn an_item_is_stored_once_with_its_content_and_never_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("haca.db")).unwrap();
        let item = DataItem {
            id: None,
            source: "http://127.0.0.1:1/x".into(),
            fetched_at: 5,
            valid_until: Some(60_005),
            http_status: Some(200),
            sha256: sha256(b"body"),
            tls_cert_sha256: None,
            content_type: None,
            size: Some(4),
            signer: NodeId([0; 32]),
            signature: String::new(),
            age_ms: None,
        }
        .sign(&NodeKey::from_seed([4; 32]));
        let id = item.id.unwrap().to_hex();
        store
            .insert_data_item(&item, b"body".to_vec())
            .await
            .unwrap();
        store
            .insert_data_item(&item, b"other".to_vec())
            .await
            .unwrap();
        assert_eq!(store.data_item(&id).unwrap(), Some(item));
        assert_eq!(store.data_content(&id).unwrap(), Some(b"body".to_vec()));
        assert_eq!(store.data_item(&"0".repeat(64)).unwrap(), None);
        let changed = store
            .write(move |tx| {
                tx.execute("UPDATE data_items SET content = x'00' WHERE id = ?1", [&id])?;
                Ok(())
            })
            .await;
        assert!(changed.is_err());
    }
}
