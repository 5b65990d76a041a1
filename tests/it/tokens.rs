//! Hostile-token corpus: each case goes through the real HTTP API and must come back 401 with
//! the right RFC 6750 challenge, a coarse message, and its own reason code in the decision log.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    RSA_PKCS1_SHA256, RSA_PKCS1_SHA512, RSA_PSS_SHA256, RsaKeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::support::{AUDIENCE, ISSUER, Options, TestApp};

const OTHER_ISSUER: &str = "https://other-idp.test";
const RSA_KID: &str = "rsa-1";
const EC_KID: &str = "ec-1";

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Test keys besides the harness's Ed25519 issuer key: RSA and EC keys in the same JWKS.
pub struct Keys {
    pub rsa: RsaKeyPair,
    pub ec: EcdsaKeyPair,
}

impl Keys {
    pub fn generate() -> Self {
        Self {
            rsa: RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap(),
            ec: EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
        }
    }

    pub fn rsa_jwk(&self) -> Value {
        let public = self.rsa.public_key();
        json!({
            "kty": "RSA", "kid": RSA_KID, "alg": "RS256", "use": "sig",
            "n": b64(public.modulus().big_endian_without_leading_zero()),
            "e": b64(public.exponent().big_endian_without_leading_zero()),
        })
    }

    pub fn ec_jwk(&self) -> Value {
        let point = self.ec.public_key().as_ref();
        json!({
            "kty": "EC", "kid": EC_KID, "crv": "P-256", "alg": "ES256", "use": "sig",
            "x": b64(&point[1..33]), "y": b64(&point[33..65]),
        })
    }

    /// Signs raw header and claims text with RSA (PKCS#1 v1.5 SHA-256 unless `alg` says more).
    pub fn rsa_sign(&self, header: &str, claims: &str) -> String {
        self.rsa_sign_with(&RSA_PKCS1_SHA256, header, claims)
    }

    fn rsa_sign_with(
        &self,
        padding: &'static dyn aws_lc_rs::signature::RsaEncoding,
        header: &str,
        claims: &str,
    ) -> String {
        let message = format!("{}.{}", b64(header), b64(claims));
        let mut sig = vec![0; self.rsa.public_modulus_len()];
        self.rsa
            .sign(padding, &SystemRandom::new(), message.as_bytes(), &mut sig)
            .unwrap();
        format!("{message}.{}", b64(sig))
    }

    /// Signs raw header and claims text with the P-256 key (JWS r||s form).
    pub fn ec_sign(&self, header: &str, claims: &str) -> String {
        let message = format!("{}.{}", b64(header), b64(claims));
        let sig = self
            .ec
            .sign(&SystemRandom::new(), message.as_bytes())
            .unwrap();
        format!("{message}.{}", b64(sig.as_ref()))
    }
}

/// A broker whose test issuer trusts EdDSA, RS256 and ES256 keys, plus a second issuer with a
/// key of its own.
pub async fn spawn_with_keys(keys: &Keys, other: &toolgate::signing::SigningKey) -> TestApp {
    TestApp::spawn_with(Options {
        algorithms: Some(r#"["EdDSA", "RS256", "ES256"]"#.to_owned()),
        extra_jwks: vec![keys.rsa_jwk(), keys.ec_jwk()],
        files: vec![("other-jwks.json".to_owned(), other.jwks().to_string())],
        extra_config: format!(
            r#"
[[issuers]]
issuer = "{OTHER_ISSUER}"
audiences = ["other-audience"]
jwks_file = "other-jwks.json"
algorithms = ["EdDSA"]
"#
        ),
        ..Options::default()
    })
    .await
}

fn header(alg: &str, kid: &str) -> String {
    json!({ "alg": alg, "typ": "at+jwt", "kid": kid }).to_string()
}

/// Sends one case and checks status, challenge, body and the logged reason.
#[track_caller]
fn check(
    name: &str,
    reply: &crate::support::Reply,
    decisions: &[crate::support::Row],
    reason: &str,
) {
    assert_eq!(reply.status, 401, "{name}: {:?}", reply.body);
    let description = match reason {
        "token_missing" | "token_not_bearer" => None,
        "token_expired" => Some("the token has expired"),
        "token_too_large" => Some("the token is too large"),
        _ => Some("the token is not valid"),
    };
    let expected = match description {
        None => "Bearer realm=\"toolgate\"".to_owned(),
        Some(d) => {
            format!("Bearer realm=\"toolgate\", error=\"invalid_token\", error_description=\"{d}\"")
        }
    };
    assert_eq!(
        reply.header("www-authenticate"),
        Some(expected.as_str()),
        "{name}"
    );
    // The caller learns nothing beyond the coarse description: no reason code in the body.
    assert_eq!(reply.body["error"], "invalid_token", "{name}");
    assert!(
        !reply.body.to_string().contains(reason),
        "{name}: reason leaked in {}",
        reply.body
    );
    let id = reply.header("x-toolgate-decision-id").unwrap();
    let row = decisions
        .iter()
        .find(|r| r.decision_id == id)
        .unwrap_or_else(|| panic!("{name}: no decision record {id}"));
    assert_eq!(
        (
            row.stage.as_str(),
            row.reason.as_str(),
            row.decision.as_str()
        ),
        ("auth", reason, "deny"),
        "{name}"
    );
}

#[tokio::test]
async fn hostile_token_corpus() {
    let keys = Keys::generate();
    let (other_key, _) = toolgate::signing::SigningKey::generate().unwrap();
    let app = spawn_with_keys(&keys, &other_key).await;
    let now = toolgate::auth::unix_now();
    let ed_kid = app.issuer_key.kid().to_owned();
    let base = app.claims("reporting-agent", "files:read", &["reporting"]);
    let base_text = base.to_string();
    let with = |patch: Value| {
        let mut c = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c.to_string()
    };
    let rs = |claims: &str| keys.rsa_sign(&header("RS256", RSA_KID), claims);
    let rs_header = |h: Value| keys.rsa_sign(&h.to_string(), &base_text);

    // Positive controls: each way of building a token yields an accepted token, so every
    // refusal below is due to the one thing the case changes.
    for (name, token) in [
        ("ed25519", app.sign(&base)),
        ("rs256", rs(&base_text)),
        ("es256", keys.ec_sign(&header("ES256", EC_KID), &base_text)),
    ] {
        let reply = app
            .invoke(Some(&token), "demo___echo", json!({ "message": "hi" }))
            .await;
        assert_eq!(reply.status, 200, "control {name}: {:?}", reply.body);
    }

    let signed = rs(&base_text);
    let (signed_head, signed_sig) = signed.rsplit_once('.').unwrap();
    let hmac = |alg: &'static aws_lc_rs::hmac::Algorithm, key: &[u8], header: &str| {
        let message = format!("{}.{}", b64(header), b64(&base_text));
        let tag = aws_lc_rs::hmac::sign(&aws_lc_rs::hmac::Key::new(*alg, key), message.as_bytes());
        format!("{message}.{}", b64(tag.as_ref()))
    };
    let rsa_public_der = keys.rsa.public_key().as_ref().to_vec();
    let rsa_jwk_text = keys.rsa_jwk().to_string();
    let ec_point = keys.ec.public_key().as_ref().to_vec();
    let deep_act = {
        let mut act = json!({ "sub": "agent-last" });
        for i in 0..toolgate::auth::MAX_DELEGATION_DEPTH {
            act = json!({ "sub": format!("agent-{i}"), "act": act });
        }
        act
    };
    let deep_claim = {
        let mut v = json!(1);
        for _ in 0..20 {
            v = json!([v]);
        }
        v
    };
    let many_claims = {
        let mut c = base.clone();
        for i in 0..70 {
            c[format!("extra{i}")] = json!(i);
        }
        c.to_string()
    };
    let altered_sig = {
        let first = if signed_sig.starts_with('A') {
            "B"
        } else {
            "A"
        };
        format!("{signed_head}.{first}{}", &signed_sig[1..])
    };
    // A 2048-bit signature is 256 bytes: its last base64url character carries 4 unused bits.
    let non_canonical_sig = {
        let mut chars: Vec<char> = signed_sig.chars().collect();
        let last = chars.last_mut().unwrap();
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let index = alphabet.find(*last).unwrap();
        *last = alphabet.chars().nth(index | 1).unwrap();
        let sig: String = chars.into_iter().collect();
        format!("{signed_head}.{sig}")
    };
    // `+` and `/` belong to standard base64, not base64url.
    let standard_alphabet = {
        let std = base64::engine::general_purpose::STANDARD_NO_PAD.encode([0xfb_u8; 30]);
        format!("{signed_head}.{std}")
    };

    let cases: Vec<(&str, Option<String>, &str)> = vec![
        // Transport.
        ("no authorization header", None, "token_missing"),
        (
            "basic scheme",
            Some(format!("Basic {signed}")),
            "token_not_bearer",
        ),
        // HTTP trims the trailing blanks, leaving a bare scheme.
        (
            "empty bearer",
            Some("Bearer  ".to_owned()),
            "token_not_bearer",
        ),
        // Size: refused before any decoding.
        (
            "oversize token",
            Some(format!(
                "Bearer {}",
                rs(&with(json!({ "pad": "x".repeat(9000) })))
            )),
            "token_too_large",
        ),
        (
            "oversize garbage",
            Some(format!("Bearer {}", "A".repeat(8 * 1024 + 1))),
            "token_too_large",
        ),
        // Shape and encoding.
        (
            "two parts",
            Some(format!("Bearer {signed_head}")),
            "token_malformed",
        ),
        (
            "four parts",
            Some(format!("Bearer {signed}.{signed_sig}")),
            "token_malformed",
        ),
        (
            "five parts (JWE shape)",
            Some(format!("Bearer {signed_head}.a.b.c")),
            "token_malformed",
        ),
        (
            "padded header",
            Some(format!("Bearer {}=", b64(header("RS256", RSA_KID))) + ".e30.AAAA"),
            "token_malformed",
        ),
        (
            "padded signature",
            Some(format!("Bearer {signed}==")),
            "token_malformed",
        ),
        (
            "non-canonical base64url signature",
            Some(format!("Bearer {non_canonical_sig}")),
            "token_malformed",
        ),
        (
            "non-canonical base64url claims",
            Some(format!("Bearer {}.e31.AAAA", b64(header("RS256", RSA_KID)))),
            "token_malformed",
        ),
        (
            "standard base64 alphabet",
            Some(format!("Bearer {standard_alphabet}")),
            "token_malformed",
        ),
        (
            "trailing garbage",
            Some(format!("Bearer {signed}!!")),
            "token_malformed",
        ),
        (
            "header not an object",
            Some(format!(
                "Bearer {}",
                keys.rsa_sign("[\"RS256\"]", &base_text)
            )),
            "token_malformed",
        ),
        (
            "claims not an object",
            Some(format!("Bearer {}", rs("[1,2,3]"))),
            "token_malformed",
        ),
        (
            "claims a string",
            Some(format!("Bearer {}", rs("\"sub\""))),
            "token_malformed",
        ),
        (
            "claims not JSON",
            Some(format!("Bearer {}", rs("{\"sub\": oops}"))),
            "token_malformed",
        ),
        (
            "claims with trailing JSON",
            Some(format!("Bearer {}", rs(&format!("{base_text} {{}}")))),
            "token_malformed",
        ),
        (
            "duplicate claim",
            Some(format!(
                "Bearer {}",
                rs(&base_text.replacen('{', "{\"sub\":\"root\",", 1))
            )),
            "token_malformed",
        ),
        (
            "duplicate header member",
            Some(format!(
                "Bearer {}",
                keys.rsa_sign(
                    r#"{"alg":"RS256","typ":"at+jwt","kid":"rsa-1","kid":"ec-1"}"#,
                    &base_text
                )
            )),
            "token_malformed",
        ),
        (
            "too many claims",
            Some(format!("Bearer {}", rs(&many_claims))),
            "token_malformed",
        ),
        (
            "claims nested too deep",
            Some(format!("Bearer {}", rs(&with(json!({ "x": deep_claim }))))),
            "token_malformed",
        ),
        (
            "number out of range",
            Some(format!(
                "Bearer {}",
                rs(&base_text.replacen('{', "{\"big\":1e400,", 1))
            )),
            "token_malformed",
        ),
        // Header parameters.
        (
            "alg none, no signature",
            Some(format!(
                "Bearer {}.{}.",
                b64(r#"{"alg":"none","typ":"at+jwt"}"#),
                b64(&base_text)
            )),
            "token_malformed",
        ),
        (
            "alg none with a signature",
            Some(format!(
                "Bearer {}",
                rs_header(json!({"alg": "none", "typ": "at+jwt", "kid": RSA_KID}))
            )),
            "algorithm_not_allowed",
        ),
        (
            "alg None (case variant)",
            Some(format!(
                "Bearer {}",
                rs_header(json!({"alg": "None", "typ": "at+jwt", "kid": RSA_KID}))
            )),
            "algorithm_not_allowed",
        ),
        (
            "HS256 keyed with the RSA public key (DER)",
            Some(format!(
                "Bearer {}",
                hmac(
                    &aws_lc_rs::hmac::HMAC_SHA256,
                    &rsa_public_der,
                    &header("HS256", RSA_KID)
                )
            )),
            "algorithm_not_allowed",
        ),
        (
            "HS256 keyed with the RSA JWK text",
            Some(format!(
                "Bearer {}",
                hmac(
                    &aws_lc_rs::hmac::HMAC_SHA256,
                    rsa_jwk_text.as_bytes(),
                    &header("HS256", RSA_KID)
                )
            )),
            "algorithm_not_allowed",
        ),
        (
            "HS512 keyed with the EC public point",
            Some(format!(
                "Bearer {}",
                hmac(
                    &aws_lc_rs::hmac::HMAC_SHA512,
                    &ec_point,
                    &header("HS512", EC_KID)
                )
            )),
            "algorithm_not_allowed",
        ),
        (
            "RS512 not on the issuer's list",
            Some(format!(
                "Bearer {}",
                keys.rsa_sign_with(&RSA_PKCS1_SHA512, &header("RS512", RSA_KID), &base_text)
            )),
            "algorithm_not_allowed",
        ),
        (
            "PS256 not on the issuer's list",
            Some(format!(
                "Bearer {}",
                keys.rsa_sign_with(&RSA_PSS_SHA256, &header("PS256", RSA_KID), &base_text)
            )),
            "algorithm_not_allowed",
        ),
        (
            "alg missing",
            Some(format!(
                "Bearer {}",
                rs_header(json!({"typ": "at+jwt", "kid": RSA_KID}))
            )),
            "token_malformed",
        ),
        (
            "crit header",
            Some(format!(
                "Bearer {}",
                rs_header(
                    json!({"alg": "RS256", "typ": "at+jwt", "kid": RSA_KID, "crit": ["exp"], "exp": 1})
                )
            )),
            "header_rejected",
        ),
        (
            "empty crit header",
            Some(format!(
                "Bearer {}",
                rs_header(json!({"alg": "RS256", "typ": "at+jwt", "kid": RSA_KID, "crit": []}))
            )),
            "header_rejected",
        ),
        (
            "jku header",
            Some(format!(
                "Bearer {}",
                rs_header(
                    json!({"alg": "RS256", "typ": "at+jwt", "kid": RSA_KID, "jku": "https://evil.test/jwks"})
                )
            )),
            "header_rejected",
        ),
        (
            "x5u header",
            Some(format!(
                "Bearer {}",
                rs_header(
                    json!({"alg": "RS256", "typ": "at+jwt", "kid": RSA_KID, "x5u": "https://evil.test/cert"})
                )
            )),
            "header_rejected",
        ),
        (
            "jwk header",
            Some(format!(
                "Bearer {}",
                rs_header(
                    json!({"alg": "RS256", "typ": "at+jwt", "kid": RSA_KID, "jwk": keys.rsa_jwk()})
                )
            )),
            "header_rejected",
        ),
        (
            "x5c header",
            Some(format!(
                "Bearer {}",
                rs_header(
                    json!({"alg": "RS256", "typ": "at+jwt", "kid": RSA_KID, "x5c": ["MIIB"]})
                )
            )),
            "header_rejected",
        ),
        (
            "typ JWT",
            Some(format!(
                "Bearer {}",
                rs_header(json!({"alg": "RS256", "typ": "JWT", "kid": RSA_KID}))
            )),
            "invalid_claim",
        ),
        (
            "typ missing",
            Some(format!(
                "Bearer {}",
                rs_header(json!({"alg": "RS256", "kid": RSA_KID}))
            )),
            "invalid_claim",
        ),
        // Keys.
        (
            "key of another issuer, its own kid",
            Some(format!(
                "Bearer {}",
                other_key.sign("at+jwt", &base).unwrap()
            )),
            "unknown_kid",
        ),
        (
            "key of another issuer, our kid",
            Some(format!("Bearer {}", {
                let t = other_key.sign("at+jwt", &base).unwrap();
                let (_, rest) = t.split_once('.').unwrap();
                let h = b64(json!({"alg": "EdDSA", "typ": "at+jwt", "kid": ed_kid}).to_string());
                format!("{h}.{rest}")
            })),
            "bad_signature",
        ),
        (
            "other issuer's token for its own audience",
            Some(format!("Bearer {}", {
                let mut c = base.clone();
                c["iss"] = json!(OTHER_ISSUER);
                other_key.sign("at+jwt", &c).unwrap()
            })),
            "audience_mismatch",
        ),
        (
            "kid of the RSA key, ES256 signature",
            Some(format!(
                "Bearer {}",
                keys.ec_sign(&header("ES256", RSA_KID), &base_text)
            )),
            "key_mismatch",
        ),
        (
            "kid of the EC key, RS256 signature",
            Some(format!(
                "Bearer {}",
                keys.rsa_sign(&header("RS256", EC_KID), &base_text)
            )),
            "key_mismatch",
        ),
        (
            "kid of the Ed25519 key, RS256 signature",
            Some(format!(
                "Bearer {}",
                keys.rsa_sign(&header("RS256", &ed_kid), &base_text)
            )),
            "key_mismatch",
        ),
        (
            "unknown kid",
            Some(format!(
                "Bearer {}",
                keys.rsa_sign(&header("RS256", "nope"), &base_text)
            )),
            "unknown_kid",
        ),
        (
            "kid too long",
            Some(format!(
                "Bearer {}",
                keys.rsa_sign(&header("RS256", &"k".repeat(300)), &base_text)
            )),
            "unknown_kid",
        ),
        (
            "no kid with several keys",
            Some(format!(
                "Bearer {}",
                rs_header(json!({"alg": "RS256", "typ": "at+jwt"}))
            )),
            "unknown_kid",
        ),
        (
            "kid not a string",
            Some(format!(
                "Bearer {}",
                rs_header(json!({"alg": "RS256", "typ": "at+jwt", "kid": 1}))
            )),
            "token_malformed",
        ),
        // Signatures.
        (
            "signature altered",
            Some(format!("Bearer {altered_sig}")),
            "bad_signature",
        ),
        (
            "claims swapped after signing",
            Some(format!(
                "Bearer {}.{}.{signed_sig}",
                b64(header("RS256", RSA_KID)),
                b64(with(json!({"sub": "root"})))
            )),
            "bad_signature",
        ),
        (
            "ES256 signature in DER form",
            Some(format!("Bearer {}", {
                let pkcs8 = keys.ec.to_pkcs8v1().unwrap();
                let der_key =
                    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref())
                        .unwrap();
                let message = format!("{}.{}", b64(header("ES256", EC_KID)), b64(&base_text));
                let sig = der_key
                    .sign(&SystemRandom::new(), message.as_bytes())
                    .unwrap();
                format!("{message}.{}", b64(sig.as_ref()))
            })),
            "bad_signature",
        ),
        // Claims.
        (
            "iss missing",
            Some(format!("Bearer {}", rs(&with(json!({"iss": null}))))),
            "missing_claim",
        ),
        (
            "iss not a string",
            Some(format!("Bearer {}", rs(&with(json!({"iss": [ISSUER]}))))),
            "invalid_claim",
        ),
        (
            "iss unknown",
            Some(format!(
                "Bearer {}",
                rs(&with(json!({"iss": "https://evil.test"})))
            )),
            "unknown_issuer",
        ),
        (
            "iss with trailing slash",
            Some(format!(
                "Bearer {}",
                rs(&with(json!({"iss": format!("{ISSUER}/")})))
            )),
            "unknown_issuer",
        ),
        (
            "sub missing",
            Some(format!("Bearer {}", rs(&with(json!({"sub": null}))))),
            "missing_claim",
        ),
        (
            "sub empty",
            Some(format!("Bearer {}", rs(&with(json!({"sub": ""}))))),
            "invalid_claim",
        ),
        (
            "sub a number",
            Some(format!("Bearer {}", rs(&with(json!({"sub": 7}))))),
            "invalid_claim",
        ),
        (
            "exp missing",
            Some(format!("Bearer {}", rs(&with(json!({"exp": null}))))),
            "missing_claim",
        ),
        (
            "exp as string",
            Some(format!(
                "Bearer {}",
                rs(&with(json!({"exp": (now + 300).to_string()})))
            )),
            "invalid_claim",
        ),
        (
            "iat as string",
            Some(format!(
                "Bearer {}",
                rs(&with(json!({"iat": now.to_string()})))
            )),
            "invalid_claim",
        ),
        (
            "nbf as string",
            Some(format!(
                "Bearer {}",
                rs(&with(json!({"nbf": now.to_string()})))
            )),
            "invalid_claim",
        ),
        (
            "exp huge float",
            Some(format!("Bearer {}", rs(&with(json!({"exp": 1e300}))))),
            "invalid_claim",
        ),
        (
            "exp beyond u64",
            Some(format!(
                "Bearer {}",
                rs(&base_text.replace(
                    &format!("\"exp\":{}", now + 300),
                    "\"exp\":99999999999999999999999"
                ))
            )),
            "invalid_claim",
        ),
        (
            "exp negative",
            Some(format!("Bearer {}", rs(&with(json!({"exp": -1}))))),
            "token_expired",
        ),
        (
            "expired",
            Some(format!(
                "Bearer {}",
                rs(&with(json!({"exp": now - 120, "iat": now - 400})))
            )),
            "token_expired",
        ),
        (
            "exp far in the future",
            Some(format!(
                "Bearer {}",
                rs(&with(json!({"exp": now + 10 * 365 * 86_400})))
            )),
            "lifetime_too_long",
        ),
        (
            "exp far in the future, no iat",
            Some(format!(
                "Bearer {}",
                rs(&with(json!({"exp": now + 86_400, "iat": null})))
            )),
            "lifetime_too_long",
        ),
        (
            "iat in the future",
            Some(format!(
                "Bearer {}",
                rs(&with(json!({"iat": now + 3_000, "exp": now + 3_300})))
            )),
            "iat_in_future",
        ),
        (
            "nbf in the future",
            Some(format!("Bearer {}", rs(&with(json!({"nbf": now + 600}))))),
            "token_not_yet_valid",
        ),
        (
            "aud missing",
            Some(format!("Bearer {}", rs(&with(json!({"aud": null}))))),
            "missing_claim",
        ),
        (
            "aud of someone else",
            Some(format!(
                "Bearer {}",
                rs(&with(json!({"aud": ["someone-else"]})))
            )),
            "audience_mismatch",
        ),
        (
            "aud is the admin audience",
            Some(format!(
                "Bearer {}",
                rs(&with(json!({"aud": "toolgate-admin"})))
            )),
            "audience_mismatch",
        ),
        (
            "aud with a number",
            Some(format!(
                "Bearer {}",
                rs(&with(json!({"aud": [AUDIENCE, 1]})))
            )),
            "invalid_claim",
        ),
        (
            "aud an object",
            Some(format!(
                "Bearer {}",
                rs(&with(json!({"aud": {"v": AUDIENCE}})))
            )),
            "invalid_claim",
        ),
        (
            "scope an array",
            Some(format!(
                "Bearer {}",
                rs(&with(json!({"scope": ["files:read"]})))
            )),
            "invalid_claim",
        ),
        (
            "scp with a number",
            Some(format!(
                "Bearer {}",
                rs(&with(json!({"scp": ["files:read", 3]})))
            )),
            "invalid_claim",
        ),
        (
            "jti a number",
            Some(format!("Bearer {}", rs(&with(json!({"jti": 42}))))),
            "invalid_claim",
        ),
        (
            "act deeper than the limit",
            Some(format!("Bearer {}", rs(&with(json!({"act": deep_act}))))),
            "delegation_too_deep",
        ),
        (
            "act not an object",
            Some(format!("Bearer {}", rs(&with(json!({"act": "agent"}))))),
            "invalid_claim",
        ),
        (
            "act without sub",
            Some(format!(
                "Bearer {}",
                rs(&with(json!({"act": {"client_id": "x"}})))
            )),
            "invalid_claim",
        ),
    ];
    assert!(cases.len() >= 40, "corpus has {} cases", cases.len());

    let mut replies = Vec::new();
    for (name, authorization, _) in &cases {
        let mut request = app
            .client
            .post(app.url("/v1/tools/demo___echo/invoke"))
            .header("content-type", "application/json")
            .body(json!({ "arguments": { "message": "hi" } }).to_string());
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let response = request.send().await.unwrap();
        replies.push((*name, crate::support::Reply::read(response).await));
    }
    let decisions = app.decisions();
    // Report every wrong reason at once before the full per-case checks.
    let wrong: Vec<String> = cases
        .iter()
        .zip(&replies)
        .filter_map(|((name, _, want), (_, reply))| {
            let id = reply.header("x-toolgate-decision-id")?;
            let row = decisions.iter().find(|r| r.decision_id == id)?;
            (row.reason != *want).then(|| format!("{name}: got {}, want {want}", row.reason))
        })
        .collect();
    assert!(wrong.is_empty(), "{wrong:#?}");
    for ((name, _, reason), (_, reply)) in cases.iter().zip(&replies) {
        check(name, reply, &decisions, reason);
    }
    // Nothing reached the backend except the three controls.
    assert_eq!(app.backend.calls("/echo").len(), 3);
}
