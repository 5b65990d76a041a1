//! Stage 4: the decision log. Every request's record is committed to SQLite before the caller
//! hears the outcome and before any tool is called ("no log, no call").
//!
//! One writer thread owns the connection and commits concurrent records in one transaction
//! (group commit), so durability costs one fsync per batch rather than per request. Each
//! record carries `prev_hash` and `hash = SHA-256(prev_hash || record JSON)`, chaining the log
//! so that an edited, deleted, inserted or reordered record breaks verification. Records are
//! numbered without gaps (`seq`), and the writer signs checkpoints of the head with the
//! broker's key (see [`checkpoint`]) so that a truncated tail is detected too. Reading back:
//! [`verify`], [`query`] (through the indexed [`lookup`] table, which keeps indexes off the
//! commit path), [`archive`]; the format is documented in `docs/decision-log.md`.

pub mod archive;
pub mod checkpoint;
pub mod lookup;
pub mod query;
pub mod reason;
pub mod record;
pub mod repair;
pub mod repair_record;
pub mod storage;
pub mod verify;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, params};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

pub use checkpoint::{CheckpointClaims, CheckpointOptions};
pub use reason::{Reason, Stage};
pub use record::{DecisionRecord, DispatchFacts, PrincipalFacts, RecordKind, TokenFacts, Verdict};

use crate::config::Synchronous;

/// The hash that precedes the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Records waiting for the writer; beyond this, appends wait (bounded by [`APPEND_TIMEOUT`]).
const QUEUE_CAPACITY: usize = 8192;

/// Initial buffer for a record's JSON: a decision with its Cedar request is 1-2 KB.
const ENCODE_CAPACITY: usize = 2048;

/// Longest a request waits for its record to be committed before it fails with 503.
const APPEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Page size of a new log (an existing file keeps its own): SQLite's default. Over HTTP a
/// commit carries only the records of the requests in flight, and each one rewrites its table
/// and index pages in full into the WAL; 4 KiB pages write a quarter of the bytes of 16 KiB
/// ones, which this log used before. In `bench/load.sh` that took ≈ 10% (NORMAL) to ≈ 20%
/// (FULL) off the p50 of a lone request, ≈ 20% off FULL's p50 at half of peak and ≈ 25% off
/// NORMAL's p99 there, and raised NORMAL's saturation throughput by ≈ 25-40%. Only huge
/// batches (the audit bench's 1,024-record transactions) favoured 16 KiB pages. See
/// BENCHMARKS.md.
const PAGE_SIZE: u32 = 4096;

/// Records committed between two WAL checkpoints on the background thread: a few megabytes
/// of WAL for records of 1-2 KB with their index entries. Copying the WAL back into the
/// database (and its fsync) thus stays off the writer thread, which only appends.
const WAL_CHECKPOINT_EVERY_RECORDS: u64 = 512;

/// The writer's own SQLite auto-checkpoint threshold, in bytes of WAL, with background
/// checkpoints: a backstop that bounds the WAL if they fall behind or fail. Under constant
/// load the WAL cannot restart while a background checkpoint runs, so this backstop is what
/// eventually rewinds it; it runs on the writer thread, so it should be rare.
const WRITER_AUTOCHECKPOINT_BYTES: u32 = 64 << 20;

/// The auto-checkpoint threshold, in WAL pages, when the writer checkpoints inline (FULL):
/// a checkpoint every ≈ 15-30 commits. SQLite's default of 1,000 pages made each one a stall
/// of several milliseconds (p99 at half of peak 4.3-5.9 ms against 2.5-2.7 ms with 256).
/// Without indexes on `decisions` most WAL frames are distinct table pages, so 256 frames
/// made each checkpoint copy more pages than before (p99 at half of peak 4.1 ms against
/// 3.2 ms); 128 brought it to 2.9 ms (BENCHMARKS.md, ninth pass).
const INLINE_AUTOCHECKPOINT_PAGES: u32 = 128;

/// Whether WAL checkpoints run on a background thread: with `synchronous = NORMAL` only.
/// There a commit does not fsync, and the checkpoint's fsync was the writer's main stall.
/// With FULL every commit already waits on an fsync of the WAL, and a concurrent
/// checkpoint's fsync of the database made those waits longer (p99 at saturation 15 ms ->
/// 31 ms in `bench/load.sh`), so the writer keeps checkpointing inline.
fn background_wal_checkpoints(options: &AuditOptions) -> bool {
    options.synchronous == Synchronous::Normal
}

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
    /// The end of the chain is damaged: the broker will not write onto it.
    #[error("decision log damaged: {0}")]
    Damaged(String),
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
    /// Signed checkpoints of the chain head; `None` writes none.
    pub checkpoints: Option<CheckpointOptions>,
}

struct Job {
    entry: Entry,
    ack: oneshot::Sender<Result<(), AuditError>>,
}

/// A record encoded for the writer: the JSON text that is hashed and stored, and the index
/// columns. Encoding happens on the caller's task, in parallel, so the single writer thread
/// only chains, hashes and inserts.
struct Entry {
    json: String,
    decision_id: String,
    kind: &'static str,
    time_ms: i64,
    stage: String,
    reason: String,
    decision: &'static str,
    subject: Option<String>,
    tool: Option<String>,
}

impl Entry {
    fn encode(record: &DecisionRecord) -> Result<Self, AuditError> {
        // One buffer of a typical record's size, instead of growing from empty by doubling
        // (about ten reallocations and copies per record).
        let mut buf = Vec::with_capacity(ENCODE_CAPACITY);
        serde_json::to_writer(&mut buf, record)
            .map_err(|e| AuditError::Unavailable(e.to_string()))?;
        let json = String::from_utf8(buf).map_err(|e| AuditError::Unavailable(e.to_string()))?;
        Ok(Self {
            json,
            kind: record.kind.as_str(),
            decision: record.decision.as_str(),
            subject: record.principal.as_ref().map(|p| p.subject.clone()),
            decision_id: record.decision_id.clone(),
            time_ms: record.time_ms,
            stage: record.stage.clone(),
            reason: record.reason.clone(),
            tool: record.tool.clone(),
        })
    }
}

/// Handle to the decision log; cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Job>,
    healthy: Arc<AtomicBool>,
    path: PathBuf,
    /// Outcome records that could not be written since start (see [`Self::append_outcome`]).
    lost_outcomes: Arc<AtomicU64>,
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
CREATE TABLE IF NOT EXISTS checkpoints (
    id          INTEGER PRIMARY KEY,
    seq         INTEGER NOT NULL,
    head        TEXT NOT NULL,
    time_ms     INTEGER NOT NULL,
    reason      TEXT NOT NULL,
    kid         TEXT NOT NULL,
    jws         TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS chain_anchor (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    seq         INTEGER NOT NULL,
    hash        TEXT NOT NULL,
    time_ms     INTEGER NOT NULL,
    archive     TEXT NOT NULL
);
";

impl AuditLog {
    /// Opens (creating if needed) the log and starts the writer thread.
    pub fn open(options: AuditOptions) -> Result<(Self, AuditWriterHandle), AuditError> {
        if let Some(dir) = options.path.parent()
            && !dir.as_os_str().is_empty()
        {
            crate::private_files::create_dir(dir)
                .map_err(|e| AuditError::Unavailable(e.to_string()))?;
        }
        crate::private_files::secure_sqlite_file(&options.path)
            .map_err(|e| AuditError::Unavailable(e.to_string()))?;
        let mut conn = open_connection(&options, true)?;
        let checkpointed = repair::refuse_damaged(&conn, &options.path)?;
        let head = chain_head(&conn)?;
        // Records no checkpoint covers yet (a crash, or a log from before checkpoints) get one
        // at the next periodic or shutdown checkpoint, so that the next start walks less.
        let uncovered = u64::try_from(head.seq - checkpointed).unwrap_or(0);
        let covered =
            lookup::prepare(&mut conn).map_err(|e| AuditError::Unavailable(e.to_string()))?;
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let healthy = Arc::new(AtomicBool::new(true));
        let (wal_nudge, wal_thread) = if background_wal_checkpoints(&options) {
            let (nudge, nudges) = std::sync::mpsc::sync_channel(1);
            let wal_options = options.clone();
            let thread = std::thread::Builder::new()
                .name("toolgate-audit-wal".to_owned())
                .spawn(move || run_wal_checkpoints(&wal_options, &nudges))
                .map_err(|e| AuditError::Unavailable(e.to_string()))?;
            (Some(nudge), Some(thread))
        } else {
            (None, None)
        };
        let writer = Writer {
            options: options.clone(),
            wal_nudge,
            wal_thread,
            since_wal_checkpoint: 0,
            conn: Some(conn),
            head,
            covered,
            inode: inode_of(&options.path),
            healthy: healthy.clone(),
            since_checkpoint: uncovered,
            last_checkpoint: Instant::now(),
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
                lost_outcomes: Arc::default(),
            },
            AuditWriterHandle {
                thread: Some(thread),
            },
        ))
    }

    /// Appends a record and waits until it is committed.
    pub async fn append(&self, record: &DecisionRecord) -> Result<(), AuditError> {
        let entry = Entry::encode(record)?;
        let (ack, done) = oneshot::channel();
        let wait = async {
            self.tx
                .send(Job { entry, ack })
                .await
                .map_err(|_| AuditError::Closed)?;
            done.await.map_err(|_| AuditError::Closed)?
        };
        match tokio::time::timeout(APPEND_TIMEOUT, wait).await {
            Ok(result) => result,
            Err(_) => Err(AuditError::Timeout),
        }
    }

    /// Appends the outcome record of a dispatched call. The call has happened, so a failure
    /// cannot undo it: it is counted (see [`Self::lost_outcomes`]), and `log verify` lists
    /// the allow record left without an outcome.
    pub async fn append_outcome(&self, record: &DecisionRecord) -> Result<(), AuditError> {
        let result = self.append(record).await;
        if result.is_err() {
            self.lost_outcomes.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// Outcome records that could not be written since the broker started.
    pub fn lost_outcomes(&self) -> u64 {
        self.lost_outcomes.load(Ordering::Relaxed)
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

pub(crate) fn open_connection(
    options: &AuditOptions,
    create: bool,
) -> Result<Connection, AuditError> {
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
    // `page_size` only takes effect on a new, empty file, and must come before WAL mode.
    conn.execute_batch(&format!(
        "PRAGMA page_size={PAGE_SIZE}; PRAGMA journal_mode=WAL; PRAGMA synchronous={sync};"
    ))
    .map_err(unavailable)?;
    let autocheckpoint = if background_wal_checkpoints(options) {
        let page_size: u32 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(unavailable)?;
        WRITER_AUTOCHECKPOINT_BYTES / page_size.max(512)
    } else {
        INLINE_AUTOCHECKPOINT_PAGES
    };
    conn.execute_batch(&format!("PRAGMA wal_autocheckpoint={autocheckpoint};"))
        .map_err(unavailable)?;
    conn.execute_batch(SCHEMA_SQL).map_err(unavailable)?;
    conn.execute_batch(lookup::SCHEMA_SQL)
        .map_err(unavailable)?;
    Ok(conn)
}

/// The last record's position and hash: the newest row, else the archive anchor, else genesis.
pub(crate) fn chain_head(conn: &Connection) -> Result<Head, AuditError> {
    let unavailable = |e: rusqlite::Error| AuditError::Unavailable(e.to_string());
    let row = |sql: &str| -> Result<Option<Head>, AuditError> {
        match conn.query_row(sql, [], |r| {
            Ok(Head {
                seq: r.get(0)?,
                hash: r.get(1)?,
            })
        }) {
            Ok(h) => Ok(Some(h)),
            Err(rusqlite::Error::QueryReturnedNoRows) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    };
    if let Some(head) = row("SELECT seq, hash FROM decisions ORDER BY seq DESC LIMIT 1")? {
        return Ok(head);
    }
    if let Some(anchor) = row("SELECT seq, hash FROM chain_anchor WHERE id = 1")? {
        return Ok(anchor);
    }
    Ok(Head {
        seq: 0,
        hash: GENESIS_HASH.to_owned(),
    })
}

/// Where the chain restarts after archiving (the anchor), else genesis.
pub(crate) fn chain_head_from_anchor(conn: &Connection) -> rusqlite::Result<Head> {
    match conn.query_row("SELECT seq, hash FROM chain_anchor WHERE id = 1", [], |r| {
        Ok(Head {
            seq: r.get(0)?,
            hash: r.get(1)?,
        })
    }) {
        Ok(h) => Ok(h),
        Err(rusqlite::Error::QueryReturnedNoRows) => Ok(Head {
            seq: 0,
            hash: GENESIS_HASH.to_owned(),
        }),
        Err(e) => Err(e),
    }
}

/// A position in the chain: a record's sequence number and hash (seq 0 is genesis).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Sequence number; records are numbered 1, 2, 3... with no gaps.
    pub seq: i64,
    /// The record's chain hash.
    pub hash: String,
}

/// Current Unix time in milliseconds.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The chain hash of a record: SHA-256 over the previous hash and the record's JSON text.
pub fn chain_hash(prev_hash: &str, record_json: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(record_json.as_bytes());
    // Into a buffer, then one copy: `hex::encode` builds its string one char at a time,
    // which was about a quarter of this function's cost on the writer thread.
    let digest = h.finalize();
    let mut text = [0u8; 64];
    match hex::encode_to_slice(digest, &mut text) {
        Ok(()) => std::str::from_utf8(&text)
            .map(str::to_owned)
            .unwrap_or_else(|_| hex::encode(digest)),
        Err(_) => hex::encode(digest),
    }
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

/// Copies the WAL back into the database whenever the writer asks (PASSIVE: never blocks the
/// writer), on a connection of its own, until the writer stops. A failure is logged and the
/// connection reopened on the next request; the writer's own auto-checkpoint bounds the WAL
/// meanwhile.
fn run_wal_checkpoints(options: &AuditOptions, nudges: &std::sync::mpsc::Receiver<()>) {
    let mut conn: Option<Connection> = None;
    while nudges.recv().is_ok() {
        if conn.is_none() {
            match open_connection(options, false) {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "decision log WAL checkpoint skipped");
                    continue;
                }
            }
        }
        if let Some(c) = &conn
            && let Err(e) = c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
        {
            tracing::warn!(error = %e, "decision log WAL checkpoint failed");
            conn = None;
        }
    }
}

struct Writer {
    options: AuditOptions,
    /// Asks the WAL checkpoint thread for a checkpoint; dropped when the writer stops.
    wal_nudge: Option<std::sync::mpsc::SyncSender<()>>,
    wal_thread: Option<std::thread::JoinHandle<()>>,
    since_wal_checkpoint: u64,
    conn: Option<Connection>,
    head: Head,
    /// The last record the lookup table covers (see [`lookup`]).
    covered: i64,
    inode: Option<u64>,
    healthy: Arc<AtomicBool>,
    since_checkpoint: u64,
    last_checkpoint: Instant,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        // A small runtime of its own lets the writer wait for records with a deadline, so a
        // periodic checkpoint is written even when the log goes quiet.
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "decision log writer cannot start its timer");
                self.healthy.store(false, Ordering::Relaxed);
                return;
            }
        };
        let mut batch = Vec::with_capacity(self.options.max_batch);
        loop {
            let interval = self.options.checkpoints.as_ref().and_then(|c| c.interval);
            let next = match interval {
                Some(every) if self.since_checkpoint > 0 => {
                    let wait = every.saturating_sub(self.last_checkpoint.elapsed());
                    runtime.block_on(async { tokio::time::timeout(wait, rx.recv()).await.ok() })
                }
                _ => Some(runtime.block_on(rx.recv())),
            };
            let first = match next {
                // The interval passed with no record: checkpoint what is there.
                None => {
                    self.checkpoint_now("periodic");
                    continue;
                }
                Some(None) => break,
                Some(Some(job)) => job,
            };
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
            if result.is_ok() {
                self.extend_lookup(rx.is_empty());
            }
        }
        // Every sender is gone and the queue is drained: seal the log with a checkpoint.
        self.checkpoint_now("shutdown");
        self.wal_nudge = None;
        if let Some(thread) = self.wal_thread.take() {
            let _ = thread.join();
        }
    }

    /// Extends the lookup table once enough records are uncovered: when no record is waiting
    /// (`idle`), or regardless once the tail is long (see [`lookup`]). It runs after the
    /// batch's requests were answered, in a transaction of its own that does not wait for an
    /// fsync: the lookup rows can be rebuilt from `decisions`, and the next commit's fsync
    /// makes them durable anyway. A failure is logged and the connection reopened, which
    /// covers the tail again; requests never fail because of it.
    fn extend_lookup(&mut self, idle: bool) {
        if !lookup::extension_due(self.head.seq - self.covered, idle) {
            return;
        }
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let full = self.options.synchronous == Synchronous::Full;
        match lookup::extend(conn, self.covered, full) {
            Ok(covered) => self.covered = covered,
            Err(e) => {
                tracing::warn!(error = %e, "decision log lookup table not extended; queries scan the tail meanwhile");
                self.conn = None;
            }
        }
    }

    /// Writes a checkpoint of the current head, if there is anything new to cover.
    fn checkpoint_now(&mut self, reason: &str) {
        if self.since_checkpoint == 0 || self.options.checkpoints.is_none() {
            return;
        }
        // Even when this attempt fails, the next one waits a full interval (no busy loop).
        self.last_checkpoint = Instant::now();
        if let Err(e) = self.ensure_open() {
            tracing::error!(error = %e, "decision log checkpoint skipped");
            return;
        }
        let (Some(conn), Some(options)) = (self.conn.as_mut(), self.options.checkpoints.as_ref())
        else {
            return;
        };
        match checkpoint::store(conn, &options.key, &self.head, reason) {
            Ok(()) => self.since_checkpoint = 0,
            Err(e) => {
                self.conn = None;
                tracing::error!(error = %e, "decision log checkpoint failed");
            }
        }
    }

    fn ensure_open(&mut self) -> Result<(), AuditError> {
        // A log file removed or replaced under us would take writes into an unlinked inode:
        // refuse instead, and reopen only a file that exists again.
        if inode_of(&self.options.path) != self.inode {
            self.conn = None;
        }
        if self.conn.is_none() {
            let mut conn = open_connection(&self.options, false)?;
            self.head = chain_head(&conn)?;
            self.covered =
                lookup::prepare(&mut conn).map_err(|e| AuditError::Unavailable(e.to_string()))?;
            self.inode = inode_of(&self.options.path);
            self.conn = Some(conn);
        }
        Ok(())
    }

    fn commit(&mut self, batch: &[Job]) -> Result<(), AuditError> {
        self.ensure_open()?;
        let Some(conn) = self.conn.as_mut() else {
            return Err(AuditError::Closed);
        };
        let checkpoint_due = self.options.checkpoints.as_ref().is_some_and(|c| {
            c.every_records > 0 && self.since_checkpoint + batch.len() as u64 >= c.every_records
        });
        let mut head = self.head.clone();
        let result = (|| -> Result<(), AuditError> {
            let sql = |e: rusqlite::Error| AuditError::Unavailable(e.to_string());
            let tx = conn.transaction().map_err(sql)?;
            {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO decisions (seq, decision_id, kind, time_ms, stage, reason, decision, subject, tool, record, prev_hash, hash)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                    )
                    .map_err(sql)?;
                for job in batch {
                    let r = &job.entry;
                    let hash = chain_hash(&head.hash, &r.json);
                    // The sequence number is explicit (not SQLite's rowid), so it keeps
                    // counting from the archive anchor even when every row was archived.
                    let seq = head.seq + 1;
                    insert
                        .execute(params![
                            seq,
                            r.decision_id,
                            r.kind,
                            r.time_ms,
                            r.stage,
                            r.reason,
                            r.decision,
                            r.subject,
                            r.tool,
                            r.json,
                            head.hash,
                            hash,
                        ])
                        .map_err(sql)?;
                    head = Head { seq, hash };
                }
            }
            if checkpoint_due && let Some(options) = self.options.checkpoints.as_ref() {
                checkpoint::store(&tx, &options.key, &head, "periodic")?;
            }
            tx.commit().map_err(sql)
        })();
        match result {
            Ok(()) => {
                self.head = head;
                self.since_wal_checkpoint += batch.len() as u64;
                if self.since_wal_checkpoint >= WAL_CHECKPOINT_EVERY_RECORDS
                    && let Some(nudge) = &self.wal_nudge
                {
                    self.since_wal_checkpoint = 0;
                    // Full means a checkpoint is already pending: nothing to add.
                    let _ = nudge.try_send(());
                }
                if checkpoint_due {
                    self.since_checkpoint = 0;
                    self.last_checkpoint = Instant::now();
                } else {
                    self.since_checkpoint += batch.len() as u64;
                }
                Ok(())
            }
            Err(e) => {
                // Drop the connection: the next batch reopens it and re-reads the chain head.
                self.conn = None;
                Err(e)
            }
        }
    }
}
