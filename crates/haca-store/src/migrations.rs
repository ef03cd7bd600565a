//! Schema migrations, applied in order; `PRAGMA user_version` records how many have run.
//! A migration is never edited once released: add a new one.

use crate::StoreError;
use rusqlite::Connection;

const MIGRATIONS: &[&str] = &[
    // 1: runs with receipts; the Model Hub's blobs and append-only label history.
    r#"
    CREATE TABLE runs (
        run_id          TEXT PRIMARY KEY,
        created_at      INTEGER NOT NULL,
        model           TEXT NOT NULL,
        blob_id         TEXT NOT NULL,
        mode            TEXT NOT NULL,
        node_id         TEXT NOT NULL,
        receipt_digest  TEXT NOT NULL,
        output          TEXT NOT NULL,
        receipt         TEXT NOT NULL
    );
    CREATE INDEX runs_by_time ON runs(created_at);
    CREATE INDEX runs_by_blob ON runs(blob_id);

    CREATE TABLE blobs (
        blob_id     TEXT PRIMARY KEY,
        size        INTEGER NOT NULL,
        format      TEXT NOT NULL,
        created_at  INTEGER NOT NULL
    );

    CREATE TABLE labels (
        label       TEXT NOT NULL,
        revision    INTEGER NOT NULL,
        blob_id     TEXT NOT NULL REFERENCES blobs(blob_id),
        created_at  INTEGER NOT NULL,
        uploader    TEXT NOT NULL,
        PRIMARY KEY (label, revision)
    );
    CREATE TRIGGER labels_no_update BEFORE UPDATE ON labels
        BEGIN SELECT RAISE(ABORT, 'label history is append-only'); END;
    CREATE TRIGGER labels_no_delete BEFORE DELETE ON labels
        BEGIN SELECT RAISE(ABORT, 'label history is append-only'); END;
    "#,
    // 2: the chain (committed blocks with their certificates), each run's settlement outcome,
    // and the gateway's outbox of records not yet decided by a committed block.
    r#"
    CREATE TABLE chain_blocks (
        height        INTEGER PRIMARY KEY,
        block_id      TEXT NOT NULL,
        block         BLOB NOT NULL,
        certificate   TEXT NOT NULL,
        committed_at  INTEGER NOT NULL
    );
    CREATE TRIGGER chain_blocks_no_update BEFORE UPDATE ON chain_blocks
        BEGIN SELECT RAISE(ABORT, 'committed blocks never change'); END;
    CREATE TRIGGER chain_blocks_no_delete BEFORE DELETE ON chain_blocks
        BEGIN SELECT RAISE(ABORT, 'committed blocks never change'); END;

    CREATE TABLE settlements (
        run_id      TEXT PRIMARY KEY,
        status      TEXT NOT NULL CHECK (status IN ('settled', 'rejected')),
        height      INTEGER NOT NULL,
        round       INTEGER,
        leaf_index  INTEGER,
        reason      TEXT
    );

    CREATE TABLE outbox (
        run_id      TEXT PRIMARY KEY,
        record      TEXT NOT NULL,
        created_at  INTEGER NOT NULL
    );
    "#,
    // 3: the transparency log: entries by index with their canonical JSON and RFC 6962 leaf
    // hash, and every checkpoint the log signed (its note text). Both are append-only.
    r#"
    CREATE TABLE log_entries (
        idx         INTEGER PRIMARY KEY,
        kind        TEXT NOT NULL,
        leaf_hash   BLOB NOT NULL CHECK (length(leaf_hash) = 32),
        data        TEXT NOT NULL
    );
    CREATE TRIGGER log_entries_no_update BEFORE UPDATE ON log_entries
        BEGIN SELECT RAISE(ABORT, 'the transparency log is append-only'); END;
    CREATE TRIGGER log_entries_no_delete BEFORE DELETE ON log_entries
        BEGIN SELECT RAISE(ABORT, 'the transparency log is append-only'); END;

    CREATE TABLE log_checkpoints (
        size          INTEGER PRIMARY KEY,
        root          BLOB NOT NULL CHECK (length(root) = 32),
        timestamp_ms  INTEGER NOT NULL,
        note          TEXT NOT NULL
    );
    CREATE TRIGGER log_checkpoints_no_update BEFORE UPDATE ON log_checkpoints
        BEGIN SELECT RAISE(ABORT, 'signed checkpoints never change'); END;
    CREATE TRIGGER log_checkpoints_no_delete BEFORE DELETE ON log_checkpoints
        BEGIN SELECT RAISE(ABORT, 'signed checkpoints never change'); END;
    "#,
    // 4: the x402 token ledger: balances and total supply per asset (amounts as decimal text
    // of base units), the EIP-3009 authorization nonces already used, and every settlement
    // attempt (settled or refused). Addresses and nonces are lowercase 0x hex.
    r#"
    CREATE TABLE token_balances (
        asset       TEXT NOT NULL,
        address     TEXT NOT NULL,
        amount      TEXT NOT NULL,
        PRIMARY KEY (asset, address)
    );

    CREATE TABLE token_supply (
        asset       TEXT PRIMARY KEY,
        amount      TEXT NOT NULL
    );

    CREATE TABLE used_nonces (
        asset       TEXT NOT NULL,
        address     TEXT NOT NULL,
        nonce       TEXT NOT NULL,
        used_at     INTEGER NOT NULL,
        UNIQUE (asset, address, nonce)
    );
    CREATE TRIGGER used_nonces_no_update BEFORE UPDATE ON used_nonces
        BEGIN SELECT RAISE(ABORT, 'a used nonce stays used'); END;
    CREATE TRIGGER used_nonces_no_delete BEFORE DELETE ON used_nonces
        BEGIN SELECT RAISE(ABORT, 'a used nonce stays used'); END;

    CREATE TABLE payments (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        transaction_id  TEXT UNIQUE,
        network         TEXT NOT NULL,
        asset           TEXT NOT NULL,
        payer           TEXT NOT NULL,
        pay_to          TEXT NOT NULL,
        amount          TEXT NOT NULL,
        nonce           TEXT NOT NULL,
        resource        TEXT NOT NULL,
        request_hash    TEXT,
        verified_at     INTEGER NOT NULL,
        settled_at      INTEGER,
        status          TEXT NOT NULL CHECK (status IN ('settled', 'refused')),
        error           TEXT
    );
    CREATE INDEX payments_by_payer ON payments(payer);
    "#,
    // 5: API keys for clients that know nothing of x402. A key's balance is the ledger
    // account `account`; only the key's SHA-256 is kept, never the key.
    r#"
    CREATE TABLE api_keys (
        id          TEXT PRIMARY KEY,
        key_hash    TEXT NOT NULL UNIQUE,
        account     TEXT NOT NULL UNIQUE,
        label       TEXT,
        created_at  INTEGER NOT NULL,
        created_by  TEXT NOT NULL,
        revoked_at  INTEGER
    );
    "#,
    // 6: chat conversations: each turn names its run and the route that served it, so a turn
    // that changed provider or path is visible later.
    r#"
    CREATE TABLE chat_turns (
        conversation    TEXT NOT NULL,
        turn            INTEGER NOT NULL,
        run_id          TEXT NOT NULL UNIQUE,
        created_at      INTEGER NOT NULL,
        model           TEXT NOT NULL,
        provider        TEXT NOT NULL,
        path            TEXT NOT NULL,
        privacy         TEXT NOT NULL,
        attempts        INTEGER NOT NULL,
        PRIMARY KEY (conversation, turn)
    );
    "#,
    // 7: the review queue: tokens (their SHA-256 only), cases and their runs, decisions
    // (append-only, each with the evidence snapshot it read and its log index), and webhook
    // deliveries of clearances.
    r#"
    CREATE TABLE review_tokens (
        id          TEXT PRIMARY KEY,
        token_hash  TEXT NOT NULL UNIQUE,
        role        TEXT NOT NULL CHECK (role IN ('reviewer', 'viewer')),
        label       TEXT,
        created_at  INTEGER NOT NULL,
        created_by  TEXT NOT NULL,
        revoked_at  INTEGER
    );

    CREATE TABLE cases (
        id          TEXT PRIMARY KEY,
        policy      TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        created_by  TEXT NOT NULL,
        decided     TEXT CHECK (decided IN ('CLEARED', 'REJECTED')),
        decided_at  INTEGER
    );
    CREATE INDEX cases_by_time ON cases(created_at);

    CREATE TABLE case_runs (
        case_id     TEXT NOT NULL REFERENCES cases(id),
        position    INTEGER NOT NULL,
        run_id      TEXT NOT NULL,
        PRIMARY KEY (case_id, position)
    );
    CREATE INDEX case_runs_by_run ON case_runs(run_id);

    CREATE TABLE case_decisions (
        case_id      TEXT NOT NULL REFERENCES cases(id),
        seq          INTEGER NOT NULL,
        action       TEXT NOT NULL,
        overridden   INTEGER NOT NULL,
        reason       TEXT,
        decided_by   TEXT NOT NULL,
        at           INTEGER NOT NULL,
        state_before TEXT NOT NULL,
        state_after  TEXT NOT NULL,
        snapshot     TEXT NOT NULL,
        log_index    INTEGER NOT NULL,
        PRIMARY KEY (case_id, seq)
    );
    CREATE TRIGGER case_decisions_no_update BEFORE UPDATE ON case_decisions
        BEGIN SELECT RAISE(ABORT, 'decisions are append-only'); END;
    CREATE TRIGGER case_decisions_no_delete BEFORE DELETE ON case_decisions
        BEGIN SELECT RAISE(ABORT, 'decisions are append-only'); END;

    CREATE TABLE webhook_deliveries (
        id          TEXT PRIMARY KEY,
        case_id     TEXT NOT NULL REFERENCES cases(id),
        url         TEXT NOT NULL,
        attempts    INTEGER NOT NULL,
        status      TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
        last_error  TEXT,
        updated_at  INTEGER NOT NULL
    );

    CREATE INDEX runs_by_model ON runs(model);
    "#,
    // 8: a webhook delivery keeps the body it sends, so that a node restarted before the
    // receiver answered sends it again.
    r#"
    ALTER TABLE webhook_deliveries ADD COLUMN body TEXT NOT NULL DEFAULT '';
    "#,
    // 9: a charge names the run it paid for, so that a charge whose run was never stored (the
    // node stopped between the two, or every route failed) is refunded, and says so.
    r#"
    ALTER TABLE payments ADD COLUMN run_id TEXT;
    ALTER TABLE payments ADD COLUMN refunded_at INTEGER;
    ALTER TABLE payments ADD COLUMN refund_reason TEXT;
    CREATE INDEX payments_by_run ON payments(run_id);
    "#,
    // 10: zkml runs answer before their proof exists; the job that proves one is stored with
    // the run (its input, rounded to the model's grid), so a restarted node proves it still.
    r#"
    CREATE TABLE zk_jobs (
        run_id      TEXT PRIMARY KEY REFERENCES runs(run_id),
        blob_id     TEXT NOT NULL,
        input       TEXT NOT NULL,
        status      TEXT NOT NULL CHECK (status IN ('queued', 'proving', 'proved', 'failed')),
        error       TEXT,
        created_at  INTEGER NOT NULL,
        finished_at INTEGER
    );
    CREATE INDEX zk_jobs_unfinished ON zk_jobs(status) WHERE status IN ('queued', 'proving');
    "#,
    // 11: data items a data node fetched and signed, with the bytes they hash; runs admit
    // them by id. Items are immutable: an id is the hash of the item's signed fields.
    r#"
    CREATE TABLE data_items (
        id          TEXT PRIMARY KEY,
        item        TEXT NOT NULL,
        content     BLOB NOT NULL,
        source      TEXT NOT NULL,
        fetched_at  INTEGER NOT NULL
    );
    CREATE TRIGGER data_items_no_update BEFORE UPDATE ON data_items
        BEGIN SELECT RAISE(ABORT, 'data items are immutable'); END;
    "#,
    // 12: MemSync. Each user's memory rows as sealed JSON (haca-mem's SealedRow: metadata in
    // the clear, text under the user's key) with the row's sealed embedding; the bio sealed
    // likewise. Nothing here opens without the user's credential, which the node never stores.
    r#"
    CREATE TABLE memory_rows (
        owner       TEXT NOT NULL,
        id          TEXT NOT NULL,
        sealed      TEXT NOT NULL,
        vector      BLOB,
        updated_at  INTEGER NOT NULL,
        PRIMARY KEY (owner, id)
    );
    CREATE TABLE memory_bios (
        owner       TEXT PRIMARY KEY,
        sealed      BLOB NOT NULL,
        updated_at  INTEGER NOT NULL
    );
    "#,
    // 13: a Model Hub artifact's Walrus blob id beside its SHA-256 (RS2 over Walrus mainnet's
    // 1000 shards, computed at upload); NULL for artifacts stored before it.
    r#"
    ALTER TABLE blobs ADD COLUMN walrus_blob_id TEXT;
    CREATE INDEX blobs_by_walrus ON blobs(walrus_blob_id);
    "#,
];

pub(crate) fn apply(conn: &mut Connection) -> Result<(), StoreError> {
    let done: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if done as usize > MIGRATIONS.len() {
        return Err(StoreError::Invalid(format!(
            "database schema version {done} is newer than this build knows ({}); use a newer haca",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
        tracing::info!("store: applied migration {}", i + 1);
    }
    Ok(())
}
