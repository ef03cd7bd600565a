//! Counts an operator's metrics read (`/metrics`): the outbox (runs waiting for settlement)
//! and the review queue. Cheap aggregate queries on the reader connection.

use crate::{Store, StoreError};

/// The outbox and review queue at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpsCounts {
    /// Records waiting in the outbox (not yet in a committed block).
    pub outbox: u64,
    /// When the oldest of them was written (unix ms), if any.
    pub outbox_oldest_ms: Option<u64>,
    /// Review cases not decided yet.
    pub cases_open: u64,
    pub cases_cleared: u64,
    pub cases_rejected: u64,
}

impl Store {
    pub fn ops_counts(&self) -> Result<OpsCounts, StoreError> {
        self.read(|c| {
            let (outbox, oldest): (i64, Option<i64>) = c
                .prepare_cached("SELECT COUNT(*), MIN(created_at) FROM outbox")?
                .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            let mut counts = OpsCounts {
                outbox: outbox.max(0) as u64,
                outbox_oldest_ms: oldest.map(|t| t.max(0) as u64),
                ..OpsCounts::default()
            };
            let mut st =
                c.prepare_cached("SELECT decided, COUNT(*) FROM cases GROUP BY decided")?;
            let rows = st.query_map([], |r| {
                Ok((r.get::<_, Option<String>>(0)?, r.get::<_, i64>(1)?))
            })?;
            for row in rows {
                let (decided, n) = row?;
                let n = n.max(0) as u64;
                match decided.as_deref() {
                    None => counts.cases_open = n,
                    Some("CLEARED") => counts.cases_cleared = n,
                    Some(_) => counts.cases_rejected += n,
                }
            }
            Ok(counts)
        })
    }
}
