#![allow(clippy::expect_used, clippy::panic)] // benchmark setup: a failure should stop the run
//! Token verification cost per algorithm, and the cache-hit path a client
//! reusing its token takes. Keys come from `openssl genpkey` at start.
//!
//! cargo bench --bench auth

use std::{process::Command, sync::Arc};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use mcpgate::auth::{
    jwks::{JwksCache, KeyFamily, VerificationKey},
    verify::IssuerVerifier,
};

const ISSUER: &str = "https://idp.bench";
const AUDIENCE: &str = "https://mcp.bench/mcp";

fn main() {
    divan::main();
}

struct Case {
    verifier: IssuerVerifier,
    token: String,
    runtime: tokio::runtime::Runtime,
}

fn openssl(args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success(), "openssl {args:?}");
}

fn case(alg: Algorithm) -> Case {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("key.pem");
    let public = dir.path().join("pub.pem");
    let key_s = key.to_str().expect("utf-8 path");
    let (genpkey, family): (&[&str], KeyFamily) = match alg {
        Algorithm::RS256 | Algorithm::PS256 => (
            &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
            KeyFamily::Rsa,
        ),
        Algorithm::ES256 => (
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            KeyFamily::Ec,
        ),
        Algorithm::EdDSA => (&["-algorithm", "ED25519"], KeyFamily::Okp),
        other => panic!("no bench for {other:?}"),
    };
    let mut args = vec!["genpkey"];
    args.extend_from_slice(genpkey);
    args.extend_from_slice(&["-out", key_s]);
    openssl(&args);
    openssl(&[
        "pkey",
        "-in",
        key_s,
        "-pubout",
        "-out",
        public.to_str().expect("utf-8 path"),
    ]);
    let private_pem = std::fs::read(&key).expect("key");
    let public_pem = std::fs::read(&public).expect("public key");
    let (encoding, decoding) = match family {
        KeyFamily::Rsa => (
            EncodingKey::from_rsa_pem(&private_pem),
            DecodingKey::from_rsa_pem(&public_pem),
        ),
        KeyFamily::Ec => (
            EncodingKey::from_ec_pem(&private_pem),
            DecodingKey::from_ec_pem(&public_pem),
        ),
        KeyFamily::Okp => (
            EncodingKey::from_ed_pem(&private_pem),
            DecodingKey::from_ed_pem(&public_pem),
        ),
    };
    let (encoding, decoding) = (
        encoding.expect("private key"),
        decoding.expect("public key"),
    );
    let mut header = Header::new(alg);
    header.kid = Some("k".to_owned());
    header.typ = Some("at+jwt".to_owned());
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": "alice", "aud": AUDIENCE, "exp": now + 3600, "iat": now,
        "scope": "calc notes:read", "client_id": "bench",
    });
    let token = jsonwebtoken::encode(&header, &claims, &encoding).expect("sign");
    let keys = vec![VerificationKey {
        kid: Some("k".to_owned()),
        key: decoding,
        alg: Some(alg),
        family,
    }];
    let verifier = IssuerVerifier::new(
        ISSUER.to_owned(),
        vec![AUDIENCE.to_owned()],
        vec![alg],
        JwksCache::preloaded(keys),
        None,
        reqwest::Client::new(),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    Case {
        verifier,
        token,
        runtime,
    }
}

const ALGS: &[&str] = &["RS256", "PS256", "ES256", "EdDSA"];

fn alg(name: &str) -> Algorithm {
    match name {
        "RS256" => Algorithm::RS256,
        "PS256" => Algorithm::PS256,
        "ES256" => Algorithm::ES256,
        _ => Algorithm::EdDSA,
    }
}

/// A cache miss: header, key lookup, signature, claims.
#[divan::bench(args = ALGS)]
fn verify_uncached(bencher: divan::Bencher, name: &str) {
    let case = case(alg(name));
    bencher.bench_local(|| {
        let principal = case
            .runtime
            .block_on(case.verifier.verify_jwt(divan::black_box(&case.token)));
        assert!(principal.is_ok());
    });
}

/// A client reusing its token: SHA-256 of the token and a cache lookup.
#[divan::bench(args = ALGS)]
fn verify_cached(bencher: divan::Bencher, name: &str) {
    let case = Arc::new(case(alg(name)));
    assert!(
        case.runtime
            .block_on(case.verifier.verify(&case.token))
            .is_ok()
    );
    bencher.bench_local(|| {
        let principal = case
            .runtime
            .block_on(case.verifier.verify(divan::black_box(&case.token)));
        assert!(principal.is_ok());
    });
}
