//! The review queue's rows: tokens, cases, their runs, decisions and webhook deliveries.

use crate::runs::{record, RunRecord};
use crate::{Store, StoreError};
use rusqlite::{params, OptionalExtension};

/// A review token as stored: its SHA-256, never the token.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ReviewTokenRow {
    pub id: String,
    pub token_hash: String,
    /// `reviewer` or `viewer`.
    pub role: String,
    pub label: Option<String>,
    pub created_at: u64,
    pub created_by: String,
    pub revoked_at: Option<u64>,
}

/// A case as stored; its state beyond a decision is read off its runs' evidence.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CaseRow {
    pub id: String,
    pub policy: String,
    pub created_at: u64,
    pub created_by: String,
    /// `CLEARED` or `REJECTED` once decided.
    pub decided: Option<String>,
    pub decided_at: Option<u64>,
    pub runs: u64,
}

/// One decision on a case, as appended.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DecisionRow {
    pub case_id: String,
    /// 1 for a case's first decision (filled in by the store).
    pub seq: u64,
    pub action: String,
    pub overridden: bool,
    pub reason: Option<String>,
    pub decided_by: String,
    pub at: u64,
    pub state_before: String,
    pub state_after: String,
    /// The evidence snapshot it read, JSON.
    pub snapshot: String,
    /// Where the decision landed in the transparency log.
    pub log_index: u64,
}

/// One webhook delivery of a case's clearance and where it stands.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct WebhookDelivery {
    pub id: String,
    pub case_id: String,
    pub url: String,
    pub attempts: u64,
    /// `pending`, `delivered` or `failed` (after the last attempt).
    pub status: String,
    pub last_error: Option<String>,
    pub updated_at: u64,
    /// The JSON body sent (the same on every attempt).
    #[serde(skip)]
    pub body: String,
}

/// Which cases a queue listing shows.
#[derive(Clone, Debug, Default)]
pub struct CaseFilter {
    pub policy: Option<String>,
    /// Cases with at least one run of this model label.
    pub model: Option<String>,
    /// Cases with at least one run of this blob id.
    pub artifact: Option<String>,
    /// `Some(true)`: decided cases only; `Some(false)`: open ones only.
    pub decided: Option<bool>,
    pub limit: usize,
}

/// How many runs of one label ran one blob, and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelUseRow {
    pub label: String,
    pub blob_id: String,
    pub runs: u64,
    pub first_at: u64,
    pub last_at: u64,
}

fn case_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CaseRow> {
    Ok(CaseRow {
        id: r.get(0)?,
        policy: r.get(1)?,
        created_at: r.get::<_, i64>(2)? as u64,
        created_by: r.get(3)?,
        decided: r.get(4)?,
        decided_at: r.get::<_, Option<i64>>(5)?.map(|t| t as u64),
        runs: r.get::<_, i64>(6)? as u64,
    })
}

const CASE_COLUMNS: &str = "c.id, c.policy, c.created_at, c.created_by, c.decided, c.decided_at,
    (SELECT COUNT(*) FROM case_runs x WHERE x.case_id = c.id)";

impl Store {
    pub async fn create_review_token(&self, row: ReviewTokenRow) -> Result<(), StoreError> {
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO review_tokens (id, token_hash, role, label, created_at, created_by, revoked_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL)",
                params![row.id, row.token_hash, row.role, row.label, row.created_at as i64, row.created_by],
            )?;
            Ok(())
        })
        .await
    }

    /// Revokes a review token; `Ok(false)` when there is no such token.
    pub async fn revoke_review_token(&self, id: &str, at_ms: u64) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.write(move |tx| {
            let exists = tx
                .prepare_cached("SELECT 1 FROM review_tokens WHERE id = ?1")?
                .exists([&id])?;
            tx.execute(
                "UPDATE review_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                params![id, at_ms as i64],
            )?;
            Ok(exists)
        })
        .await
    }

    pub fn review_token_by_hash(&self, hash: &str) -> Result<Option<ReviewTokenRow>, StoreError> {
        self.read(|c| {
            Ok(c.prepare_cached(
                "SELECT id, token_hash, role, label, created_at, created_by, revoked_at
                 FROM review_tokens WHERE token_hash = ?1",
            )?
            .query_row([hash], |r| {
                Ok(ReviewTokenRow {
                    id: r.get(0)?,
                    token_hash: r.get(1)?,
                    role: r.get(2)?,
                    label: r.get(3)?,
                    created_at: r.get::<_, i64>(4)? as u64,
                    created_by: r.get(5)?,
                    revoked_at: r.get::<_, Option<i64>>(6)?.map(|t| t as u64),
                })
            })
            .optional()?)
        })
    }

    /// Stores a new case over `runs` (in order). Every run must be stored here: the first
    /// unknown one is returned as `Err(StoreError::NotFound(run_id))` and nothing is written.
    pub async fn create_case(
        &self,
        id: String,
        policy: String,
        created_at: u64,
        created_by: String,
        runs: Vec<String>,
    ) -> Result<(), StoreError> {
        self.write(move |tx| {
            {
                let mut known = tx.prepare_cached("SELECT 1 FROM runs WHERE run_id = ?1")?;
                for r in &runs {
                    if !known.exists([r])? {
                        return Err(StoreError::NotFound(r.clone()));
                    }
                }
            }
            tx.execute(
                "INSERT INTO cases (id, policy, created_at, created_by) VALUES (?1, ?2, ?3, ?4)",
                params![id, policy, created_at as i64, created_by],
            )?;
            let mut ins = tx.prepare_cached(
                "INSERT INTO case_runs (case_id, position, run_id) VALUES (?1, ?2, ?3)",
            )?;
            for (i, r) in runs.iter().enumerate() {
                ins.execute(params![id, i as i64, r])?;
            }
            Ok(())
        })
        .await
    }

    pub fn case(&self, id: &str) -> Result<Option<CaseRow>, StoreError> {
        self.read(|c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {CASE_COLUMNS} FROM cases c WHERE c.id = ?1"
            ))?
            .query_row([id], case_row)
            .optional()?)
        })
    }

    /// The case's runs, in the case's order (runs missing from the store are left out).
    pub fn case_runs(&self, id: &str) -> Result<Vec<RunRecord>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT r.run_id, r.created_at, r.model, r.blob_id, r.mode, r.node_id, r.receipt_digest, r.output, r.receipt
                 FROM case_runs x JOIN runs r ON r.run_id = x.run_id
                 WHERE x.case_id = ?1 ORDER BY x.position",
            )?;
            let rows = st.query_map([id], record)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Whether run `run_id` belongs to any case (reviewers may read such runs' outputs).
    pub fn run_in_a_case(&self, run_id: &str) -> Result<bool, StoreError> {
        self.read(|c| {
            Ok(
                c.prepare_cached("SELECT 1 FROM case_runs WHERE run_id = ?1 LIMIT 1")?
                    .exists([run_id])?,
            )
        })
    }

    /// The newest cases first that pass `filter`.
    pub fn list_cases(&self, filter: &CaseFilter) -> Result<Vec<CaseRow>, StoreError> {
        let mut sql = format!("SELECT {CASE_COLUMNS} FROM cases c WHERE 1 = 1");
        let mut args: Vec<String> = Vec::new();
        if let Some(p) = &filter.policy {
            args.push(p.clone());
            sql.push_str(&format!(" AND c.policy = ?{}", args.len()));
        }
        if let Some(m) = &filter.model {
            args.push(m.clone());
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM case_runs x JOIN runs r ON r.run_id = x.run_id WHERE x.case_id = c.id AND r.model = ?{})",
                args.len()
            ));
        }
        if let Some(a) = &filter.artifact {
            args.push(a.clone());
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM case_runs x JOIN runs r ON r.run_id = x.run_id WHERE x.case_id = c.id AND r.blob_id = ?{})",
                args.len()
            ));
        }
        match filter.decided {
            Some(true) => sql.push_str(" AND c.decided IS NOT NULL"),
            Some(false) => sql.push_str(" AND c.decided IS NULL"),
            None => {}
        }
        sql.push_str(&format!(
            " ORDER BY c.created_at DESC, c.rowid DESC LIMIT {}",
            filter.limit.max(1)
        ));
        self.read(|c| {
            let mut st = c.prepare_cached(&sql)?;
            let rows = st.query_map(rusqlite::params_from_iter(args.iter()), case_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Appends a decision (its `seq` is assigned here) and, when it decides the case
    /// (`state_after` CLEARED or REJECTED), marks the case decided, in one transaction. A case
    /// decided meanwhile refuses it (`StoreError::Conflict`). Returns the seq.
    pub async fn insert_decision(&self, d: DecisionRow) -> Result<u64, StoreError> {
        self.write(move |tx| {
            let decided: Option<String> = tx
                .prepare_cached("SELECT decided FROM cases WHERE id = ?1")?
                .query_row([&d.case_id], |r| r.get(0))
                .optional()?
                .ok_or_else(|| StoreError::NotFound(d.case_id.clone()))?;
            if let Some(s) = decided {
                return Err(StoreError::Conflict(format!("case {} is already {s}", d.case_id)));
            }
            let seq: i64 = tx
                .prepare_cached("SELECT COALESCE(MAX(seq), 0) + 1 FROM case_decisions WHERE case_id = ?1")?
                .query_row([&d.case_id], |r| r.get(0))?;
            tx.prepare_cached(
                "INSERT INTO case_decisions (case_id, seq, action, overridden, reason, decided_by, at, state_before, state_after, snapshot, log_index)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?
            .execute(params![
                d.case_id, seq, d.action, d.overridden, d.reason, d.decided_by, d.at as i64,
                d.state_before, d.state_after, d.snapshot, d.log_index as i64
            ])?;
            if d.state_after == "CLEARED" || d.state_after == "REJECTED" {
                tx.execute(
                    "UPDATE cases SET decided = ?2, decided_at = ?3 WHERE id = ?1",
                    params![d.case_id, d.state_after, d.at as i64],
                )?;
            }
            Ok(seq as u64)
        })
        .await
    }

    pub fn decisions(&self, case_id: &str) -> Result<Vec<DecisionRow>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT case_id, seq, action, overridden, reason, decided_by, at, state_before, state_after, snapshot, log_index
                 FROM case_decisions WHERE case_id = ?1 ORDER BY seq",
            )?;
            let rows = st.query_map([case_id], |r| {
                Ok(DecisionRow {
                    case_id: r.get(0)?,
                    seq: r.get::<_, i64>(1)? as u64,
                    action: r.get(2)?,
                    overridden: r.get(3)?,
                    reason: r.get(4)?,
                    decided_by: r.get(5)?,
                    at: r.get::<_, i64>(6)? as u64,
                    state_before: r.get(7)?,
                    state_after: r.get(8)?,
                    snapshot: r.get(9)?,
                    log_index: r.get::<_, i64>(10)? as u64,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// For each of `labels`: how many stored runs ran each blob under it, first and last time.
    pub fn label_uses(&self, labels: &[String]) -> Result<Vec<LabelUseRow>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT model, blob_id, COUNT(*), MIN(created_at), MAX(created_at)
                 FROM runs WHERE model = ?1 GROUP BY model, blob_id",
            )?;
            let mut out = Vec::new();
            for l in labels {
                let rows = st.query_map([l], |r| {
                    Ok(LabelUseRow {
                        label: r.get(0)?,
                        blob_id: r.get(1)?,
                        runs: r.get::<_, i64>(2)? as u64,
                        first_at: r.get::<_, i64>(3)? as u64,
                        last_at: r.get::<_, i64>(4)? as u64,
                    })
                })?;
                out.extend(rows.collect::<Result<Vec<_>, _>>()?);
            }
            Ok(out)
        })
    }

    /// The conversation a chat run is a turn of.
    pub fn conversation_of_run(&self, run_id: &str) -> Result<Option<String>, StoreError> {
        self.read(|c| {
            Ok(
                c.prepare_cached("SELECT conversation FROM chat_turns WHERE run_id = ?1")?
                    .query_row([run_id], |r| r.get(0))
                    .optional()?,
            )
        })
    }

    /// Records where a webhook delivery stands (inserted on first call, updated after).
    pub async fn record_webhook(&self, d: WebhookDelivery) -> Result<(), StoreError> {
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO webhook_deliveries (id, case_id, url, attempts, status, last_error, updated_at, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT(id) DO UPDATE SET attempts = ?4, status = ?5, last_error = ?6, updated_at = ?7",
                params![d.id, d.case_id, d.url, d.attempts as i64, d.status, d.last_error, d.updated_at as i64, d.body],
            )?;
            Ok(())
        })
        .await
    }

    /// A case's webhook deliveries.
    pub fn webhooks(&self, case_id: &str) -> Result<Vec<WebhookDelivery>, StoreError> {
        self.deliveries("WHERE case_id = ?1", case_id)
    }

    /// Deliveries still `pending` (a node stopped before the receiver answered), with their
    /// bodies, to send again.
    pub fn pending_webhooks(&self) -> Result<Vec<WebhookDelivery>, StoreError> {
        self.deliveries("WHERE status = ?1 AND body != ''", "pending")
    }

    fn deliveries(&self, filter: &str, arg: &str) -> Result<Vec<WebhookDelivery>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT id, case_id, url, attempts, status, last_error, updated_at, body
                 FROM webhook_deliveries {filter} ORDER BY rowid"
            ))?;
            let rows = st.query_map([arg], |r| {
                Ok(WebhookDelivery {
                    id: r.get(0)?,
                    case_id: r.get(1)?,
                    url: r.get(2)?,
                    attempts: r.get::<_, i64>(3)? as u64,
                    status: r.get(4)?,
                    last_error: r.get(5)?,
                    updated_at: r.get::<_, i64>(6)? as u64,
                    body: r.get(7)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, model: &str, blob: &str, at: u64) -> RunRecord {
        RunRecord {
            run_id: id.into(),
            created_at: at,
            model: model.into(),
            blob_id: blob.into(),
            mode: "vanilla".into(),
            node_id: "n".into(),
            receipt_digest: "d".into(),
            output: "{}".into(),
            receipt: "{}".into(),
            outbox: None,
        }
    }

    fn decision(case: &str, after: &str) -> DecisionRow {
        DecisionRow {
            case_id: case.into(),
            seq: 0,
            action: "clear".into(),
            overridden: false,
            reason: None,
            decided_by: "t1".into(),
            at: 5,
            state_before: "READY".into(),
            state_after: after.into(),
            snapshot: "{}".into(),
            log_index: 3,
        }
    }

    #[tokio::test]
    async fn cases_keep_their_runs_in_order_and_decisions_append_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path().join("db")).unwrap();
        s.insert_run(run("r1", "a", "sha256:1", 1)).await.unwrap();
        s.insert_run(run("r2", "a", "sha256:2", 2)).await.unwrap();
        s.insert_run(run("r3", "b", "sha256:1", 3)).await.unwrap();
        let err = s
            .create_case(
                "c0".into(),
                "default".into(),
                1,
                "t".into(),
                vec!["r1".into(), "nope".into()],
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::NotFound(ref r) if r == "nope"),
            "{err}"
        );
        assert!(s.case("c0").unwrap().is_none(), "nothing written");
        s.create_case(
            "c1".into(),
            "default".into(),
            10,
            "t".into(),
            vec!["r2".into(), "r1".into()],
        )
        .await
        .unwrap();
        s.create_case(
            "c2".into(),
            "loans".into(),
            11,
            "t".into(),
            vec!["r3".into()],
        )
        .await
        .unwrap();
        let runs: Vec<_> = s
            .case_runs("c1")
            .unwrap()
            .into_iter()
            .map(|r| r.run_id)
            .collect();
        assert_eq!(runs, vec!["r2", "r1"]);
        let f = |model: Option<&str>, artifact: Option<&str>| {
            s.list_cases(&CaseFilter {
                model: model.map(Into::into),
                artifact: artifact.map(Into::into),
                limit: 10,
                ..Default::default()
            })
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect::<Vec<_>>()
        };
        assert_eq!(f(None, None), vec!["c2", "c1"]);
        assert_eq!(f(Some("a"), None), vec!["c1"]);
        assert_eq!(f(None, Some("sha256:1")), vec!["c2", "c1"]);
        assert_eq!(f(Some("b"), Some("sha256:2")), Vec::<String>::new());

        assert_eq!(
            s.insert_decision(decision("c1", "CLEARED")).await.unwrap(),
            1
        );
        let again = s
            .insert_decision(decision("c1", "REJECTED"))
            .await
            .unwrap_err();
        assert!(matches!(again, StoreError::Conflict(_)), "{again}");
        assert_eq!(
            s.case("c1").unwrap().unwrap().decided.as_deref(),
            Some("CLEARED")
        );
        assert_eq!(s.decisions("c1").unwrap().len(), 1);
        let open = s
            .list_cases(&CaseFilter {
                decided: Some(false),
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(open.len(), 1);
        let uses = s.label_uses(&["a".into()]).unwrap();
        assert_eq!(uses.len(), 2);

        let mut d = WebhookDelivery {
            id: "msg_1".into(),
            case_id: "c1".into(),
            url: "http://127.0.0.1:9/h".into(),
            attempts: 0,
            status: "pending".into(),
            last_error: None,
            updated_at: 1,
            body: "{}".into(),
        };
        s.record_webhook(d.clone()).await.unwrap();
        assert_eq!(s.pending_webhooks().unwrap(), vec![d.clone()]);
        d.attempts = 1;
        d.status = "delivered".into();
        s.record_webhook(d.clone()).await.unwrap();
        assert!(s.pending_webhooks().unwrap().is_empty());
        assert_eq!(s.webhooks("c1").unwrap(), vec![d]);
    }
}
