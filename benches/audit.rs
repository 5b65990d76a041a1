//! Appends per second through the decision-log writer (group commit), with `synchronous`
//! FULL and NORMAL, from many concurrent appenders: 64 (a busy broker) and 1,024 with
//! `max_batch` 1,024 (saturation, the transaction size of the issue's floor). Run with
//! `cargo bench --bench audit`; the issue's targets are ≥ 20k records/s (FULL) and ≥ 50k
//! records/s (NORMAL). With `AUDIT_LATENCY=1` it also prints per-append latency percentiles.
//!
//! Records look like the broker's: ≈ 1 KB of JSON with a principal, token facts and the
//! recorded Cedar request; decision ids and times increase (UUIDv7, the clock) across
//! iterations, so the lookup table's indexes grow at their right edge as in production.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::value::RawValue;
use toolgate::audit::{
    AuditLog, AuditOptions, AuditWriterHandle, DecisionRecord, PrincipalFacts, TokenFacts, Verdict,
};
use toolgate::config::Synchronous;
use toolgate::policy::PolicyDecision;

/// The broker's allocator (see `src/main.rs`), so the work is timed as the broker does it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// (appenders, records per iteration, max_batch).
const CASES: [(usize, usize, usize); 2] = [(64, 2048, 256), (1024, 8192, 1024)];

/// Records numbered across iterations, so keys never repeat.
static NEXT: AtomicU64 = AtomicU64::new(0);

fn record() -> DecisionRecord {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut r = DecisionRecord::new(
        format!("0192f3a4-7e00-7000-8000-{n:012}"),
        format!("req-{n}"),
        "invoke",
        1_700_000_000_000 + (n / 50) as i64,
    );
    let agent = format!("agent-{}", n % 8);
    r.stage = "policy".to_owned();
    r.reason = "allowed".to_owned();
    r.decision = Verdict::Allow;
    r.tool = Some("files___read_file".to_owned());
    r.arguments = Some(serde_json::json!({ "path": "/srv/reports/q3.txt" }));
    r.arguments_sha256 =
        Some("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".to_owned());
    r.principal = Some(PrincipalFacts {
        issuer: "https://idp.example.com".to_owned(),
        subject: agent.clone(),
        client_id: Some("reports-bot".to_owned()),
        actors: vec![],
        groups: vec!["analysts".to_owned()],
        scopes: vec!["files:read".to_owned()],
    });
    r.token = Some(TokenFacts {
        sha256: "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae".to_owned(),
        kid: Some("k1".to_owned()),
        jti: Some(format!("jti-{n}")),
        alg: "RS256".to_owned(),
        exp: 1_700_003_600,
    });
    let request = format!(
        r#"{{"principal":{{"type":"Agent","id":"{agent}"}},"action":{{"type":"Action","id":"files___read_file"}},"resource":{{"type":"Tool","id":"files___read_file"}},"context":{{"arguments":{{"path":"/srv/reports/q3.txt"}},"request_id":"req-{n}","now":1700000000,"token":{{"scopes":["files:read"],"groups":["analysts"],"client_id":"reports-bot"}}}},"entities":[{{"uid":{{"type":"Agent","id":"{agent}"}},"attrs":{{"issuer":"https://idp.example.com"}},"parents":[{{"type":"Group","id":"analysts"}}]}}]}}"#
    );
    r.policy = Some(PolicyDecision {
        allowed: true,
        determining_policies: vec!["analysts-read-reports".to_owned()],
        errors: vec![],
        erroring_policies: vec![],
        policy_set_hash: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            .to_owned(),
        schema_hash: "a665a45920422f9d417e4867efdc4fb8a04a1f3fff1fa07e998e86f7f7a27ae3".to_owned(),
        request: RawValue::from_string(request).unwrap(),
    });
    r.latency_us = BTreeMap::from([
        ("auth".to_owned(), 21),
        ("tool".to_owned(), 1),
        ("arguments".to_owned(), 3),
        ("policy".to_owned(), 18),
    ]);
    r
}

fn open(
    runtime: &tokio::runtime::Runtime,
    dir: &tempfile::TempDir,
    synchronous: Synchronous,
    max_batch: usize,
) -> (AuditLog, AuditWriterHandle) {
    runtime.block_on(async {
        AuditLog::open(AuditOptions {
            path: dir.path().join("decisions.db"),
            synchronous,
            busy_timeout: Duration::from_secs(2),
            max_batch,
            checkpoints: None,
        })
        .unwrap()
    })
}

/// `records` appends from `appenders` concurrent tasks; each task's append latencies.
async fn burst(log: &AuditLog, appenders: usize, records: usize) -> Vec<Vec<Duration>> {
    let mut tasks = Vec::with_capacity(appenders);
    for _ in 0..appenders {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(records / appenders);
            for _ in 0..records / appenders {
                let r = record();
                let start = Instant::now();
                log.append(&r).await.unwrap();
                latencies.push(start.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::with_capacity(appenders);
    for t in tasks {
        all.push(t.await.unwrap());
    }
    all
}

fn appends(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let size = serde_json::to_string(&record()).unwrap().len();
    println!("record JSON: {size} bytes");
    let mut group = c.benchmark_group("audit_append");
    group.measurement_time(Duration::from_secs(5));
    for (appenders, records, max_batch) in CASES {
        group.throughput(Throughput::Elements(records as u64));
        for (name, synchronous) in [("full", Synchronous::Full), ("normal", Synchronous::Normal)] {
            let dir = tempfile::tempdir().unwrap();
            let (log, writer) = open(&runtime, &dir, synchronous, max_batch);
            group.bench_function(format!("{name}/{appenders}_appenders"), |b| {
                b.iter(|| runtime.block_on(burst(&log, appenders, records)));
            });
            drop(log);
            writer.join();
        }
    }
    group.finish();
}

/// Per-append latency percentiles (from send to commit acknowledged) over a few seconds of
/// back-to-back bursts, printed; only with `AUDIT_LATENCY=1`.
fn latency(_: &mut Criterion) {
    if std::env::var_os("AUDIT_LATENCY").is_none() {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    for (appenders, records, max_batch) in CASES {
        for (name, synchronous) in [("full", Synchronous::Full), ("normal", Synchronous::Normal)] {
            let dir = tempfile::tempdir().unwrap();
            let (log, writer) = open(&runtime, &dir, synchronous, max_batch);
            let mut all = Vec::new();
            let cpu_before = cpu_ticks();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(5) {
                all.extend(runtime.block_on(burst(&log, appenders, records)).concat());
            }
            let rate = all.len() as f64 / start.elapsed().as_secs_f64();
            let cpu = cpu_ticks();
            let count = all.len() as f64;
            let per = |i: usize| (cpu[i] - cpu_before[i]) as f64 * 10_000.0 / count;
            drop(log);
            writer.join();
            all.sort_unstable();
            let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
            println!(
                "latency {name}/{appenders}_appenders: {} appends, {rate:.0}/s, CPU µs per append: process {:.1}, writer {:.1}, WAL thread {:.1}; p50 {:?}, p99 {:?}, p99.9 {:?}, max {:?}",
                all.len(),
                per(0),
                per(1),
                per(2),
                at(0.5),
                at(0.99),
                at(0.999),
                all[all.len() - 1],
            );
        }
    }
}

/// CPU time in clock ticks (10 ms) of the process, the writer thread and the WAL
/// checkpoint thread, from `/proc` (Linux only; zeros elsewhere).
fn cpu_ticks() -> [u64; 3] {
    let mut ticks = [0; 3];
    let fields = |stat: &str| -> Option<(String, u64)> {
        let (head, tail) = stat.rsplit_once(") ")?;
        let comm = head.split_once(" (")?.1.to_owned();
        let f: Vec<&str> = tail.split_whitespace().collect();
        Some((
            comm,
            f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?,
        ))
    };
    if let Some((_, t)) = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .as_deref()
        .and_then(fields)
    {
        ticks[0] = t;
    }
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        match fields(&stat) {
            Some((comm, t)) if comm == "toolgate-audit" => ticks[1] += t,
            Some((comm, t)) if comm.starts_with("toolgate-audit-") => ticks[2] += t,
            _ => {}
        }
    }
    ticks
}

criterion_group!(benches, appends, latency);
criterion_main!(benches);
