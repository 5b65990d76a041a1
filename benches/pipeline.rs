//! Benchmarks of the request pipeline's stages. Run with `cargo bench`; see BENCHMARKS.md.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

use toolgate::http::json_depth;

fn json_depth_of_a_typical_body(c: &mut Criterion) {
    let body = serde_json::json!({ "arguments": { "path": "/srv/reports/q3.txt", "labels": ["a", "b"], "n": { "x": 1 } } });
    c.bench_function("json_depth/typical_body", |b| {
        b.iter(|| json_depth(black_box(&body)))
    });
}

criterion_group!(benches, json_depth_of_a_typical_body);
criterion_main!(benches);
