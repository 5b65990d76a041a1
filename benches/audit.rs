//! Appends per second through the decision-log writer (group commit), with `synchronous`
//! FULL and NORMAL, from many concurrent appenders. Run briefly with
//! `cargo bench --bench audit -- --quick`; the targets are ≥ 20k records/s (FULL)
//! and ≥ 50k records/s (NORMAL).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use toolgate::audit::{AuditLog, AuditOptions, DecisionRecord, Verdict};
use toolgate::config::Synchronous;

/// Records per measured iteration, spread over [`APPENDERS`] concurrent tasks.
const RECORDS: usize = 2048;
const APPENDERS: usize = 64;

fn record(i: usize) -> DecisionRecord {
    let mut r = DecisionRecord::new(
        format!("0192f3a4-0000-7000-8000-{i:012}"),
        format!("req-{i}"),
        "invoke",
        1_700_000_000_000 + i as i64,
    );
    r.stage = "policy".to_owned();
    r.reason = "allowed".to_owned();
    r.decision = Verdict::Allow;
    r.tool = Some("files___read_file".to_owned());
    r.arguments = Some(serde_json::json!({ "path": "/srv/reports/q3.txt" }));
    r
}

fn appends(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("audit_append");
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.measurement_time(Duration::from_secs(5));
    for (name, synchronous) in [("full", Synchronous::Full), ("normal", Synchronous::Normal)] {
        let dir = tempfile::tempdir().unwrap();
        let (log, writer) = runtime.block_on(async {
            AuditLog::open(AuditOptions {
                path: dir.path().join("decisions.db"),
                synchronous,
                busy_timeout: Duration::from_secs(2),
                max_batch: 256,
                checkpoints: None,
            })
            .unwrap()
        });
        group.bench_function(format!("{name}/{APPENDERS}_appenders"), |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let mut tasks = Vec::with_capacity(APPENDERS);
                    for a in 0..APPENDERS {
                        let log = log.clone();
                        tasks.push(tokio::spawn(async move {
                            for i in (a..RECORDS).step_by(APPENDERS) {
                                log.append(&record(i)).await.unwrap();
                            }
                        }));
                    }
                    for t in tasks {
                        t.await.unwrap();
                    }
                });
            });
        });
        drop(log);
        writer.join();
    }
    group.finish();
}

criterion_group!(benches, appends);
criterion_main!(benches);
