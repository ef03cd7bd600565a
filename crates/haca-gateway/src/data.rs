//! Admitting data items into a run: each id the request names (`data: [ITEM_ID]`) is read
//! from the node's store (where its data role, or a data node it trusts, put it), checked
//! (its id and data-node signature) and refused when stale at request time, all before the
//! run is charged. The items go to the receipt builder ([`ReceiptBuilder::data`]), which
//! writes each with its age at use into the data box.
//!
//! Why not an [`crate::EvidenceSource`]: sources run after execution, when the run is paid
//! and computed; a stale or unknown item must be refused before either.
//!
//! [`ReceiptBuilder::data`]: crate::builder::ReceiptBuilder::data

use crate::error::GatewayError;
use crate::Gateway;
use haca_core::data::DataItem;
use haca_core::Digest;

/// Items one request may admit at most.
pub const MAX_ITEMS: usize = 16;

/// The code of a refusal of an item past its `valid_until`.
pub const DATA_STALE: &str = "data_stale";

impl Gateway {
    /// The items `ids` names, checked and fresh at `now` (unix ms), in the request's order.
    pub fn admit_data(&self, ids: &[String], now: u64) -> Result<Vec<DataItem>, GatewayError> {
        if ids.len() > MAX_ITEMS {
            return Err(GatewayError::invalid(
                "invalid_data",
                format!("data: {} items, at most {MAX_ITEMS} per run", ids.len()),
            )
            .param("data"));
        }
        let mut items: Vec<DataItem> = Vec::with_capacity(ids.len());
        for (i, raw) in ids.iter().enumerate() {
            let field = format!("data[{i}]");
            let id: Digest = raw.parse().map_err(|e| {
                GatewayError::invalid(
                    "invalid_data",
                    format!("{field}: {raw:?} is not a data item id: {e}"),
                )
                .param(&field)
            })?;
            if items.iter().any(|it| it.id == Some(id)) {
                return Err(GatewayError::invalid(
                    "invalid_data",
                    format!("{field}: item {id} is listed twice"),
                )
                .param(&field));
            }
            let item = self.store.data_item(&id.to_hex())?.ok_or_else(|| {
                GatewayError::not_found(
                    "data_not_found",
                    format!("{field}: no data item {id} on this node (fetch it first: POST /v1/data/fetch)"),
                )
                .param(&field)
            })?;
            item.verify().map_err(|e| {
                GatewayError::invalid("data_invalid", format!("{field}: item {id}: {e}"))
                    .param(&field)
            })?;
            if let Some(until) = item.valid_until.filter(|u| now > *u) {
                return Err(GatewayError::invalid(
                    DATA_STALE,
                    format!(
                        "{field}: item {id} from {} is stale: fetched at {}, valid until {}, {} ms ago; fetch it again",
                        item.source,
                        haca_core::format_unix_ms(item.fetched_at),
                        haca_core::format_unix_ms(until),
                        now - until
                    ),
                )
                .param(&field));
            }
            items.push(item);
        }
        Ok(items)
    }
}
