//! Fuzz target: the decision-record decoder of `log verify` and `replay` on a JSONL export:
//! `verify_jsonl` (lines, chain, checkpoints and their signatures), `read_log` and the replay
//! of recorded Cedar requests against the repository's policies.
//!
//! Input: the file's contents.

#![no_main]

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use jsonwebtoken::jwk::JwkSet;
use libfuzzer_sys::fuzz_target;
use toolgate::audit::verify::verify_jsonl;
use toolgate::policy::PolicySnapshot;
use toolgate::replay;
use toolgate::signing::SigningKey;

struct Fixture {
    snapshot: PolicySnapshot,
    /// Checkpoint signatures are checked against these (`log verify --jwks`).
    keys: JwkSet,
    file: PathBuf,
    _dir: tempfile::TempDir,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../toolgate.toml");
    let snapshot = replay::load_policies(&config, None, None).expect("repository policies");
    let (key, _) = SigningKey::generate().expect("checkpoint key");
    let keys = serde_json::from_value(key.jwks()).expect("checkpoint JWKS");
    let dir = tempfile::tempdir().expect("temp dir");
    Fixture {
        snapshot,
        keys,
        file: dir.path().join("log.jsonl"),
        _dir: dir,
    }
});

fuzz_target!(|data: &[u8]| {
    let f = &*FIXTURE;
    std::fs::write(&f.file, data).expect("writing the input");
    let _ = verify_jsonl(&f.file, Some(&f.keys));
    if let Ok(records) = replay::read_log(&f.file) {
        let _ = replay::replay(&f.snapshot, &records);
    }
});
