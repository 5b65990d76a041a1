//! Unit tests of the revocation store: matching, expiry, the in-memory view, and markers.

use super::*;

fn config() -> Config {
    Config::from_toml_str(
        r#"
[[issuers]]
issuer = "https://idp.test"
audiences = ["a"]
jwks_file = "jwks.json"
algorithms = ["EdDSA"]
max_lifetime_seconds = 600
leeway_seconds = 10
"#,
        Path::new("t.toml"),
        Path::new("/base"),
        std::iter::empty(),
    )
    .unwrap()
}

fn facts<'a>(
    issuer: &'a str,
    subject: &'a str,
    jti: Option<&'a str>,
    issued_at: Option<i64>,
) -> TokenFacts<'a> {
    TokenFacts {
        issuer,
        subject,
        jti,
        issued_at,
    }
}

#[test]
fn revocations_match_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    let store = RevocationStore::open(&dir.path().join("state.db")).unwrap();
    let config = config();
    let now = 1_000_000;
    let subject = RevocationRequest {
        subject: Some("alice".to_owned()),
        ..Default::default()
    };
    let rev = store.revoke(&config, &subject, now).unwrap();
    assert_eq!(rev.expires_at, now + 600 + 20);
    let iss = "https://idp.test";
    // Issued at or before the cut-off, or with no `iat`: revoked. After: not.
    assert!(
        store
            .is_revoked(facts(iss, "alice", None, Some(now)), now)
            .unwrap()
    );
    assert!(
        store
            .is_revoked(facts(iss, "alice", None, None), now)
            .unwrap()
    );
    assert!(
        !store
            .is_revoked(facts(iss, "alice", None, Some(now + 1)), now)
            .unwrap()
    );
    assert!(
        !store
            .is_revoked(facts(iss, "bob", None, Some(now - 5)), now)
            .unwrap()
    );
    // Once every affected token has expired the entry no longer matches or lists.
    let later = rev.expires_at + 1;
    assert!(
        !store
            .is_revoked(facts(iss, "alice", None, Some(now)), later)
            .unwrap()
    );
    assert!(store.list(later).unwrap().is_empty());
    assert_eq!(store.list(now).unwrap(), vec![rev]);

    let jti = RevocationRequest {
        jti: Some("j1".to_owned()),
        issuer: Some("https://other.test".to_owned()),
        ..Default::default()
    };
    assert!(matches!(
        store.revoke(&config, &jti, now),
        Err(RevocationError::Invalid(_))
    ));
}

#[test]
fn the_view_answers_as_the_query_does() {
    let dir = tempfile::tempdir().unwrap();
    let store = RevocationStore::open(&dir.path().join("state.db")).unwrap();
    let config = config();
    let iss = "https://idp.test";
    let now = 1_000_000;
    let requests = [
        RevocationRequest {
            jti: Some("j1".to_owned()),
            ..Default::default()
        },
        RevocationRequest {
            jti: Some("j2".to_owned()),
            issuer: Some(iss.to_owned()),
            ..Default::default()
        },
        RevocationRequest {
            subject: Some("alice".to_owned()),
            before: Some(now - 100),
            ..Default::default()
        },
        RevocationRequest {
            subject: Some("bob".to_owned()),
            issuer: Some(iss.to_owned()),
            ..Default::default()
        },
        RevocationRequest {
            issuer: Some(iss.to_owned()),
            before: Some(now - 300),
            ..Default::default()
        },
    ];
    let mut expiries = Vec::new();
    for request in &requests {
        expiries.push(store.revoke(&config, request, now).unwrap().expires_at);
    }
    let mut revoked = 0;
    for issuer in [iss, "https://other.test"] {
        for subject in ["alice", "bob", "carol"] {
            for jti in [None, Some("j1"), Some("j2"), Some("j3")] {
                for iat in [
                    None,
                    Some(now - 400),
                    Some(now - 200),
                    Some(now),
                    Some(now + 1),
                ] {
                    for at in [now, expiries[0], expiries[0] + 1] {
                        let view = store
                            .is_revoked(facts(issuer, subject, jti, iat), at)
                            .unwrap();
                        let query = store
                            .query_is_revoked(facts(issuer, subject, jti, iat), at)
                            .unwrap();
                        assert_eq!(view, query, "{issuer} {subject} {jti:?} {iat:?} {at}");
                        revoked += usize::from(view);
                    }
                }
            }
        }
    }
    // Both answers occur, and they came from the view.
    assert!(revoked > 20 && revoked < 300, "{revoked}");
    assert!(store.view.load().is_some());
}

#[test]
fn a_revocation_by_another_store_is_seen_on_the_next_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let server = RevocationStore::open(&path).unwrap();
    let cli = RevocationStore::open(&path).unwrap();
    let iss = "https://idp.test";
    let now = 1_000_000;
    let revoked = |subject: &str, jti: Option<&str>| {
        server
            .is_revoked(facts(iss, subject, jti, Some(now)), now)
            .unwrap()
    };
    assert!(!revoked("alice", None));
    let loaded = server.view.load_full().unwrap();
    let subject = RevocationRequest {
        subject: Some("alice".to_owned()),
        ..Default::default()
    };
    cli.revoke(&config(), &subject, now).unwrap();
    assert!(revoked("alice", None));
    assert!(!Arc::ptr_eq(&loaded, &server.view.load_full().unwrap()));

    // Without its marker the store answers from the database, and is still exact.
    std::fs::remove_file(revocation_view::marker_path(&path)).unwrap();
    let jti = RevocationRequest {
        jti: Some("j1".to_owned()),
        ..Default::default()
    };
    let mut conn = cli.lock().unwrap();
    let tx = conn.transaction().unwrap();
    tx.execute(
        "INSERT INTO revocations (kind, value, before, created_at, expires_at)
         VALUES ('jti', 'j1', ?1, ?1, ?2)",
        params![now, now + 100],
    )
    .unwrap();
    tx.commit().unwrap();
    drop(conn);
    assert!(revoked("bob", Some("j1")));
    // The next revocation creates the marker again, and the view comes back into use.
    cli.revoke(&config(), &jti, now).unwrap();
    assert!(revoked("bob", Some("j1")));
    let marker = revocation_view::marker_path(&path);
    // The view in use was loaded under the marker now on disk.
    let view_is_current = || {
        let on_disk = MarkerStamp::of_linked(&std::fs::File::open(&marker).unwrap());
        server
            .view
            .load()
            .as_ref()
            .is_some_and(|v| Some(v.stamp) == on_disk)
    };
    assert!(view_is_current());

    // A marker replaced by another file (renamed over it) is followed to the new file.
    let replacement = path.with_extension("new-marker");
    std::fs::write(&replacement, b"").unwrap();
    std::fs::rename(&replacement, &marker).unwrap();
    let carol = RevocationRequest {
        subject: Some("carol".to_owned()),
        ..Default::default()
    };
    cli.revoke(&config(), &carol, now).unwrap();
    assert!(revoked("carol", None));
    assert!(view_is_current());
}

#[cfg(unix)]
#[test]
fn a_new_marker_gets_the_database_files_owner_only_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    drop(RevocationStore::open(&path).unwrap());
    let marker = revocation_view::marker_path(&path);
    std::fs::remove_file(&marker).unwrap();
    // The state database holds subjects and `jti`s: a group-writable one is restricted to
    // its owner at open, and the new marker follows it.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660)).unwrap();
    drop(RevocationStore::open(&path).unwrap());
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&marker), 0o600);
}

#[test]
fn single_use_jti_is_seen_once_until_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let store = RevocationStore::open(&dir.path().join("state.db")).unwrap();
    assert!(store.first_use("i", "j", 100, 50).unwrap());
    assert!(!store.first_use("i", "j", 100, 60).unwrap());
    assert!(store.first_use("other", "j", 100, 60).unwrap());
    // After its expiry the entry is replaced (the old token is expired anyway).
    assert!(store.first_use("i", "j", 300, 101).unwrap());
    assert!(!store.first_use("i", "j", 300, 102).unwrap());
}
