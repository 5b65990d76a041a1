//! Stage 4: the decision log. Every request's record is committed to SQLite before the caller
//! hears the outcome and before any tool is called ("no log, no call").
//!
//! One writer thread owns the connection and commits concurrent records in one transaction
//! (group commit), so durability costs one fsync per batch rather than per request. Each
//! record carries `prev_hash` and `hash = SHA-256(prev_hash || record JSON)`, chaining the log
//! so that an edited, deleted, inserted or reordered record breaks verification.

pub mod record;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, params};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

pub use record::{DecisionRecord, DispatchFacts, PrincipalFacts, RecordKind, TokenFacts, Verdict};

use crate::config::Synchronous;

/// The hash that precedes the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Records waiting for the writer; beyond this, appends wait (bounded by [`APPEND_TIMEOUT`]).
const QUEUE_CAPACITY: usize = 8192;

/// Longest a request waits for its record to be committed before it fails with 503.
const APPEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the decision log could not take a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    /// SQLite refused the write (disk full, locked, read-only, removed file...).
    #[error("decision log unavailable: {0}")]
    Unavailable(String),
    /// The writer has stopped.
    #[error("decision log writer has stopped")]
    Closed,
    /// The record did not commit in time.
    #[error("decision log did not commit in time")]
    Timeout,
}

/// Settings of the decision log.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// The SQLite file.
    pub path: PathBuf,
    /// Durability mode.
    pub synchronous: Synchronous,
    /// How long SQLite waits on a lock held by another connection.
    pub busy_timeout: Duration,
    /// Most records per transaction.
    pub max_batch: usize,
}

struct Job {
    record: DecisionRecord,
    ack: oneshot::Sender<Result<(), AuditError>>,
}

/// Handle to the decision log; cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Job>,
    healthy: Arc<AtomicBool>,
    path: PathBuf,
}

/// Joins the writer thread when dropped last, after the queue drains.
pub struct AuditWriterHandle {
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AuditWriterHandle {
    /// Waits for the writer to commit everything queued and stop (all senders must be dropped).
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const SCHEMA_SQL: &str = "
CREATE TABLE IF NOT EXISTS decisions (
    seq         INTEGER PRIMARY KEY,
    decision_id TEXT NOT NULL,
    kind        TEXT NOT NULL,
    time_ms     INTEGER NOT NULL,
    stage       TEXT NOT NULL,
    reason      TEXT NOT NULL,
    decision    TEXT NOT NULL,
    subject     TEXT,
    tool        TEXT,
    record      TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_by_id ON decisions (decision_id);
CREATE INDEX IF NOT EXISTS decisions_by_time ON decisions (time_ms);
CREATE INDEX IF NOT EXISTS decisions_by_subject_tool ON decisions (subject, tool);
";

impl AuditLog {
    /// Opens (creating if needed) the log and starts the writer thread.
    pub fn open(options: AuditOptions) -> Result<(Self, AuditWriterHandle), AuditError> {
        if let Some(dir) = options.path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| AuditError::Unavailable(e.to_string()))?;
        }
        let conn = open_connection(&options, true)?;
        let head = chain_head(&conn)?;
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let healthy = Arc::new(AtomicBool::new(true));
        let writer = Writer {
            options: options.clone(),
            conn: Some(conn),
            head,
            inode: inode_of(&options.path),
            healthy: healthy.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("toolgate-audit".to_owned())
            .spawn(move || writer.run(rx))
            .map_err(|e| AuditError::Unavailable(e.to_string()))?;
        Ok((
            Self {
                tx,
                healthy,
                path: options.path,
            },
            AuditWriterHandle {
                thread: Some(thread),
            },
        ))
    }

    /// Appends a record and waits until it is committed.
    pub async fn append(&self, record: DecisionRecord) -> Result<(), AuditError> {
        let (ack, done) = oneshot::channel();
        let wait = async {
            self.tx
                .send(Job { record, ack })
                .await
                .map_err(|_| AuditError::Closed)?;
            done.await.map_err(|_| AuditError::Closed)?
        };
        match tokio::time::timeout(APPEND_TIMEOUT, wait).await {
            Ok(result) => result,
            Err(_) => Err(AuditError::Timeout),
        }
    }

    /// Whether the last write succeeded.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// The SQLite file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn open_connection(options: &AuditOptions, create: bool) -> Result<Connection, AuditError> {
    let unavailable = |e: rusqlite::Error| AuditError::Unavailable(e.to_string());
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(&options.path, flags).map_err(unavailable)?;
    conn.busy_timeout(options.busy_timeout)
        .map_err(unavailable)?;
    let sync = match options.synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    conn.execute_batch(&format!(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous={sync};"
    ))
    .map_err(unavailable)?;
    conn.execute_batch(SCHEMA_SQL).map_err(unavailable)?;
    Ok(conn)
}

fn chain_head(conn: &Connection) -> Result<String, AuditError> {
    let head: Option<String> = conn
        .query_row(
            "SELECT hash FROM decisions ORDER BY seq DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            other => Err(other),
        })
        .map_err(|e| AuditError::Unavailable(e.to_string()))?;
    Ok(head.unwrap_or_else(|| GENESIS_HASH.to_owned()))
}

/// The chain hash of a record: SHA-256 over the previous hash and the record's JSON text.
pub fn chain_hash(prev_hash: &str, record_json: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(record_json.as_bytes());
    hex::encode(h.finalize())
}

#[cfg(unix)]
fn inode_of(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.ino())
}

#[cfg(not(unix))]
fn inode_of(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|_| 0)
}

struct Writer {
    options: AuditOptions,
    conn: Option<Connection>,
    head: String,
    inode: Option<u64>,
    healthy: Arc<AtomicBool>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        let mut batch = Vec::with_capacity(self.options.max_batch);
        while let Some(first) = rx.blocking_recv() {
            batch.push(first);
            while batch.len() < self.options.max_batch {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let result = self.commit(&batch);
            self.healthy.store(result.is_ok(), Ordering::Relaxed);
            if let Err(e) = &result {
                tracing::error!(error = %e, records = batch.len(), "decision log write failed; requests fail closed with 503");
            }
            for job in batch.drain(..) {
                let _ = job.ack.send(result.clone());
            }
        }
    }

    fn commit(&mut self, batch: &[Job]) -> Result<(), AuditError> {
        // A log file removed or replaced under us would take writes into an unlinked inode:
        // refuse instead, and reopen only a file that exists again.
        if inode_of(&self.options.path) != self.inode {
            self.conn = None;
        }
        if self.conn.is_none() {
            let conn = open_connection(&self.options, false)?;
            self.head = chain_head(&conn)?;
            self.inode = inode_of(&self.options.path);
            self.conn = Some(conn);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(AuditError::Closed);
        };
        let mut head = self.head.clone();
        let result = (|| -> rusqlite::Result<()> {
            let tx = conn.transaction()?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO decisions (decision_id, kind, time_ms, stage, reason, decision, subject, tool, record, prev_hash, hash)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )?;
                for job in batch {
                    let r = &job.record;
                    let json = serde_json::to_string(r)
                        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
                    let hash = chain_hash(&head, &json);
                    let kind = match r.kind {
                        RecordKind::Decision => "decision",
                        RecordKind::Dispatch => "dispatch",
                    };
                    insert.execute(params![
                        r.decision_id,
                        kind,
                        r.time_ms,
                        r.stage,
                        r.reason,
                        r.decision.as_str(),
                        r.principal.as_ref().map(|p| p.subject.as_str()),
                        r.tool,
                        json,
                        head,
                        hash,
                    ])?;
                    head = hash;
                }
            }
            tx.commit()
        })();
        match result {
            Ok(()) => {
                self.head = head;
                Ok(())
            }
            Err(e) => {
                // Drop the connection: the next batch reopens it and re-reads the chain head.
                self.conn = None;
                Err(AuditError::Unavailable(e.to_string()))
            }
        }
    }
}
