//! FlakeHub's JSON answers, decoded without I/O: the output endpoint's
//! `{"attribute_path", "store_path", "token"}` and the `exp` claim of a
//! JWT device token. The parent module adds the URL to errors and wraps
//! the token in `Secret`; the fuzz target `flakehub_json` (fuzz/) builds
//! this file on its own.

use crate::nix::store_path::StorePath;

/// A decoded, validated answer of the output endpoint. `token` is the
/// closure token (a secret: the caller wraps it at once), `None` when
/// absent, null or empty.
pub struct Output {
    pub attribute_path: String,
    pub store_path: StorePath,
    pub token: Option<String>,
}

/// Why an answer was refused.
pub enum OutputError {
    /// Not the expected JSON object: a detail for the user.
    BadJson(&'static str),
    /// `store_path` is not a store path: the value, cut to 200 bytes.
    BadStorePath(String),
}

/// Decode the body of the output endpoint.
pub fn parse_output(body: &[u8]) -> Result<Output, OutputError> {
    #[derive(miniserde::Deserialize)]
    struct Answer {
        attribute_path: String,
        store_path: String,
        token: Option<String>,
    }
    let text = std::str::from_utf8(body).map_err(|_| OutputError::BadJson("not UTF-8"))?;
    let a: Answer = miniserde::json::from_str(text).map_err(|_| {
        OutputError::BadJson("malformed, or a field is missing or has the wrong type")
    })?;
    let Ok(store_path) = StorePath::parse(&a.store_path) else {
        let mut value = a.store_path;
        if value.len() > 200 {
            let mut cut = 200;
            while !value.is_char_boundary(cut) {
                cut -= 1;
            }
            value.truncate(cut);
        }
        return Err(OutputError::BadStorePath(value));
    };
    Ok(Output {
        attribute_path: a.attribute_path,
        store_path,
        token: a.token.filter(|t| !t.is_empty()),
    })
}

/// The `exp` claim of a JWT (optionally prefixed `flakehub1_`); `None`
/// for anything that is not a JWT with a numeric `exp`. The signature is
/// not checked: this is only for display.
pub fn jwt_exp(t: &str) -> Option<i64> {
    use base64::Engine;
    let t = t.strip_prefix("flakehub1_").unwrap_or(t);
    let mut parts = t.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || payload.len() > 16 << 10 {
        return None;
    }
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: miniserde::json::Value =
        miniserde::json::from_str(std::str::from_utf8(&json).ok()?).ok()?;
    let miniserde::json::Value::Object(obj) = v else {
        return None;
    };
    match obj.get("exp")? {
        miniserde::json::Value::Number(miniserde::json::Number::U64(n)) => i64::try_from(*n).ok(),
        miniserde::json::Value::Number(miniserde::json::Number::I64(n)) => Some(*n),
        miniserde::json::Value::Number(miniserde::json::Number::F64(n)) if n.fract() == 0.0 => {
            Some(*n as i64)
        }
        _ => None,
    }
}
