//! Stage 1's signature check against the published Wycheproof vectors: ECDSA (P1363
//! encoding), EdDSA, RSA PKCS#1 v1.5 and RSA-PSS. Every valid vector verifies, every invalid
//! one is refused.
//!
//! The vectors sign arbitrary messages, and a compact JWS signs `header.payload`, which no
//! arbitrary message equals; wrapping them as tokens would test only the vectors that happen
//! to have that shape. So each vector goes through `verify_jws_signature`, the check that
//! every token and `token verify --signature-only` end in, with the vector's message as the
//! signing input and its group's public key as a JWK read by the broker's own key-set code
//! (key chosen by `kid`, algorithm bound to the key). Splitting the compact form around it is
//! tested with the real binary in `cli_exits`.
//!
//! Groups JWS cannot express (other curves, hashes, PSS parameters than RFC 7518 §3.5's
//! MGF1 with the same hash and a salt as long as the hash, Ed448) are skipped and counted, as
//! are the P-521 (ES512) groups: jsonwebtoken 11, and so the broker, has no ES512.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use toolgate::auth::{KeySet, TokenError, verify_jws_signature};
use wycheproof::{EllipticCurve, HashFunction, Mgf, TestResult};

/// One group of vectors that JWS can express, as the broker sees it.
struct Group {
    /// The set it comes from, for messages.
    set: String,
    alg: Algorithm,
    /// The group's public key as a JWK (without `kid` and `alg`).
    jwk: Value,
    /// `(tcId, result, message, signature)`.
    tests: Vec<(usize, TestResult, Vec<u8>, Vec<u8>)>,
}

/// Outcomes per algorithm, and what was skipped.
#[derive(Default)]
struct Tally {
    valid: BTreeMap<String, usize>,
    invalid: BTreeMap<String, usize>,
    acceptable: usize,
    skipped_groups: BTreeMap<String, usize>,
    failures: Vec<String>,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A big-endian unsigned integer without the leading zero bytes of its two's complement form.
fn unsigned(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

fn rsa_jwk(n: &[u8], e: &[u8]) -> Value {
    json!({ "kty": "RSA", "n": b64(unsigned(n)), "e": b64(unsigned(e)) })
}

fn tests<T>(
    tests: &[T],
    fields: impl Fn(&T) -> (usize, TestResult, Vec<u8>, Vec<u8>),
) -> Vec<(usize, TestResult, Vec<u8>, Vec<u8>)> {
    tests.iter().map(fields).collect()
}

fn ecdsa_groups(tally: &mut Tally) -> Vec<Group> {
    use wycheproof::ecdsa::{TestName, TestSet};
    let mut groups = Vec::new();
    for name in TestName::all() {
        let set = format!("{name:?}");
        let data = TestSet::load(name).unwrap();
        for group in data.test_groups {
            let alg = match (&group.test_type, group.key.curve, group.hash) {
                (
                    wycheproof::ecdsa::TestGroupTypeId::EcdsaP1363,
                    EllipticCurve::Secp256r1,
                    HashFunction::Sha2_256,
                ) => Algorithm::ES256,
                (
                    wycheproof::ecdsa::TestGroupTypeId::EcdsaP1363,
                    EllipticCurve::Secp384r1,
                    HashFunction::Sha2_384,
                ) => Algorithm::ES384,
                (
                    wycheproof::ecdsa::TestGroupTypeId::EcdsaP1363,
                    EllipticCurve::Secp521r1,
                    HashFunction::Sha2_512,
                ) => {
                    *tally
                        .skipped_groups
                        .entry("ES512 (no P-521 in jsonwebtoken 11)".into())
                        .or_default() += 1;
                    continue;
                }
                _ => {
                    *tally
                        .skipped_groups
                        .entry("ECDSA not expressible in JWS".into())
                        .or_default() += 1;
                    continue;
                }
            };
            // The uncompressed point: 0x04 || x || y, each as long as the field.
            let point = &group.key.key[1..];
            let (x, y) = point.split_at(point.len() / 2);
            let crv = if alg == Algorithm::ES256 {
                "P-256"
            } else {
                "P-384"
            };
            groups.push(Group {
                set: set.clone(),
                alg,
                jwk: json!({ "kty": "EC", "crv": crv, "x": b64(x), "y": b64(y) }),
                tests: tests(&group.tests, |t| {
                    (t.tc_id, t.result, t.msg.to_vec(), t.sig.to_vec())
                }),
            });
        }
    }
    groups
}

fn eddsa_groups(tally: &mut Tally) -> Vec<Group> {
    use wycheproof::EdwardsCurve;
    use wycheproof::eddsa::{TestName, TestSet};
    let mut groups = Vec::new();
    for name in TestName::all() {
        let set = format!("{name:?}");
        for group in TestSet::load(name).unwrap().test_groups {
            if group.key.curve != EdwardsCurve::Ed25519 {
                *tally
                    .skipped_groups
                    .entry("Ed448 (the broker takes Ed25519 only)".into())
                    .or_default() += 1;
                continue;
            }
            groups.push(Group {
                set: set.clone(),
                alg: Algorithm::EdDSA,
                jwk: json!({ "kty": "OKP", "crv": "Ed25519", "x": b64(&group.key.pk) }),
                tests: tests(&group.tests, |t| {
                    (t.tc_id, t.result, t.msg.to_vec(), t.sig.to_vec())
                }),
            });
        }
    }
    groups
}

fn rsa_pkcs1_groups(tally: &mut Tally) -> Vec<Group> {
    use wycheproof::rsa_pkcs1_verify::{TestName, TestSet};
    let mut groups = Vec::new();
    for name in TestName::all() {
        let set = format!("{name:?}");
        for group in TestSet::load(name).unwrap().test_groups {
            let alg = match group.hash {
                HashFunction::Sha2_256 => Algorithm::RS256,
                HashFunction::Sha2_384 => Algorithm::RS384,
                HashFunction::Sha2_512 => Algorithm::RS512,
                _ => {
                    *tally
                        .skipped_groups
                        .entry("RSA PKCS#1 hash not in JWS".into())
                        .or_default() += 1;
                    continue;
                }
            };
            groups.push(Group {
                set: set.clone(),
                alg,
                jwk: rsa_jwk(&group.key.n, &group.key.e),
                tests: tests(&group.tests, |t| {
                    (t.tc_id, t.result, t.msg.to_vec(), t.sig.to_vec())
                }),
            });
        }
    }
    groups
}

fn rsa_pss_groups(tally: &mut Tally) -> Vec<Group> {
    use wycheproof::rsa_pss_verify::{TestName, TestSet};
    let mut groups = Vec::new();
    for name in TestName::all() {
        let set = format!("{name:?}");
        for group in TestSet::load(name).unwrap().test_groups {
            // RFC 7518 §3.5: MGF1 with the same hash, and a salt as long as the hash output.
            let alg = match (group.hash, group.salt_size) {
                (HashFunction::Sha2_256, 32) => Some(Algorithm::PS256),
                (HashFunction::Sha2_384, 48) => Some(Algorithm::PS384),
                (HashFunction::Sha2_512, 64) => Some(Algorithm::PS512),
                _ => None,
            }
            .filter(|_| group.mgf == Mgf::Mgf1 && group.mgf_hash == Some(group.hash));
            let Some(alg) = alg else {
                *tally
                    .skipped_groups
                    .entry("RSA-PSS parameters not JWS's".into())
                    .or_default() += 1;
                continue;
            };
            groups.push(Group {
                set: set.clone(),
                alg,
                jwk: rsa_jwk(&group.key.n, &group.key.e),
                tests: tests(&group.tests, |t| {
                    (t.tc_id, t.result, t.msg.to_vec(), t.sig.to_vec())
                }),
            });
        }
    }
    groups
}

/// Runs one group through the broker's check: the JWK (with `kid` and the group's `alg`)
/// parsed as a JWKS, each vector verified under the group's algorithm; every valid vector
/// must also be refused under another algorithm, as the key is bound to its own.
fn check(group: &Group, tally: &mut Tally) {
    let alg = format!("{:?}", group.alg);
    let mut jwk = group.jwk.clone();
    jwk["kid"] = json!("k");
    jwk["alg"] = json!(alg);
    let jwks = json!({ "keys": [jwk] }).to_string();
    let (keys, skipped) = KeySet::from_jwks_str(&jwks)
        .unwrap_or_else(|e| panic!("{}: the group's key is refused: {e}", group.set));
    assert!(skipped.is_empty(), "{}: {skipped:?}", group.set);
    let allowed: Vec<Algorithm> = toolgate::config::ASYMMETRIC_ALGORITHMS
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    let other = if group.alg == Algorithm::PS256 {
        "RS256"
    } else {
        "PS256"
    };
    for (id, result, msg, sig) in &group.tests {
        let got = verify_jws_signature(&keys, &allowed, &alg, Some("k"), msg, sig);
        let label = format!("{} tcId {id} ({alg}, {result:?}): {got:?}", group.set);
        match result {
            TestResult::Valid => {
                *tally.valid.entry(alg.clone()).or_default() += 1;
                let cross = verify_jws_signature(&keys, &allowed, other, Some("k"), msg, sig);
                assert_eq!(
                    cross,
                    Err(TokenError::KeyMismatch),
                    "{label}: under {other}"
                );
                if got.is_err() {
                    tally.failures.push(label);
                }
            }
            TestResult::Invalid => {
                *tally.invalid.entry(alg.clone()).or_default() += 1;
                if got.is_ok() {
                    tally.failures.push(label);
                }
            }
            // Either answer is right ("acceptable" marks weak but not wrong signatures).
            TestResult::Acceptable => tally.acceptable += 1,
        }
    }
}

#[test]
fn wycheproof_signature_vectors_verify_exactly_when_valid() {
    let mut tally = Tally::default();
    let groups: Vec<Group> = [
        ecdsa_groups(&mut tally),
        eddsa_groups(&mut tally),
        rsa_pkcs1_groups(&mut tally),
        rsa_pss_groups(&mut tally),
    ]
    .into_iter()
    .flatten()
    .collect();
    for group in &groups {
        check(group, &mut tally);
    }
    eprintln!(
        "wycheproof: {} groups checked; valid verified {:?}; invalid refused {:?}; {} acceptable; skipped groups {:?}",
        groups.len(),
        tally.valid,
        tally.invalid,
        tally.acceptable,
        tally.skipped_groups
    );
    assert!(
        tally.failures.is_empty(),
        "{} vectors answered wrongly:\n{}",
        tally.failures.len(),
        tally.failures.join("\n")
    );
    // Every algorithm the broker accepts met both valid and invalid vectors.
    for alg in toolgate::config::ASYMMETRIC_ALGORITHMS {
        assert!(
            tally.valid.get(*alg).is_some_and(|n| *n > 0),
            "no valid {alg} vector"
        );
        assert!(
            tally.invalid.get(*alg).is_some_and(|n| *n > 0),
            "no invalid {alg} vector"
        );
    }
}
