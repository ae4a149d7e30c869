//! `flakehub_json`: FlakeHub's output-endpoint answer and the JWT `exp`
//! decoder on arbitrary bytes. An accepted answer holds a valid store path
//! and no empty token, and survives a JSON round trip; a refused store
//! path is reported cut to 200 bytes. The bytes are also tried as a token
//! and as a JWT payload.

use base64::Engine as _;

use answer::{jwt_exp, parse_output, OutputError};
use fh_lite::fuzzing::answer;

#[derive(miniserde::Serialize)]
struct Answer<'a> {
    attribute_path: &'a str,
    store_path: String,
    token: Option<&'a str>,
}

pub fn check(data: &[u8]) {
    match parse_output(data) {
        Ok(out) => {
            assert!(out.store_path.to_absolute().starts_with("/nix/store/"));
            assert_ne!(out.token.as_deref(), Some(""));
            let json = miniserde::json::to_string(&Answer {
                attribute_path: &out.attribute_path,
                store_path: out.store_path.to_absolute(),
                token: out.token.as_deref(),
            });
            let Ok(again) = parse_output(json.as_bytes()) else {
                panic!("re-encoded answer {json:?} is refused");
            };
            assert_eq!(again.attribute_path, out.attribute_path);
            assert_eq!(again.store_path, out.store_path);
            assert_eq!(again.token, out.token);
        }
        Err(OutputError::BadJson(detail)) => assert!(!detail.is_empty()),
        Err(OutputError::BadStorePath(value)) => assert!(value.len() <= 200),
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = jwt_exp(text);
    }
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data);
    let _ = jwt_exp(&format!("eyJhbGciOiJIUzI1NiJ9.{payload}.sig"));
}

/// Seed inputs (examples/seeds.rs): flakehub.rs's unit-test answers and
/// a JWT payload.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    const SP: &str = "/nix/store/0c0g0xqf3s6wqrz3zp5n1f5d8n1pb7dd-nixos-system-pi-24.05";
    vec![
        (
            "answer",
            format!(r#"{{"attribute_path":"x","store_path":"{SP}","token":"abc","extra":1}}"#)
                .into(),
        ),
        (
            "null-token",
            format!(r#"{{"attribute_path":"x","store_path":"{SP}","token":null}}"#).into(),
        ),
        (
            "bad-store-path",
            br#"{"attribute_path":"x","store_path":"/etc/passwd"}"#.to_vec(),
        ),
        ("jwt-payload", br#"{"exp":1700000000,"sub":"x"}"#.to_vec()),
    ]
}
