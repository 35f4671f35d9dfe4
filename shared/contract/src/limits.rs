//! Caps on what a tenant may store, checked when it is created or changed.
//!
//! An endpoint's URL and custom headers travel in the AMQP headers of every
//! delivery task, on a broker connection all tenants share: a frame larger
//! than the broker's `frame_max` makes RabbitMQ close that connection. The
//! caps keep one tenant's endpoint far below that. The README's security
//! section lists them.

/// The longest endpoint URL, in bytes.
pub const MAX_URL_BYTES: usize = 2048;
/// The longest description of an endpoint, or name of a tenant, in
/// characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1024;
/// The longest reason given when disabling an endpoint, in characters.
pub const MAX_REASON_CHARS: usize = 512;
/// The most custom headers one endpoint may send.
pub const MAX_HEADERS: usize = 20;
/// The longest custom header name, in bytes.
pub const MAX_HEADER_NAME_BYTES: usize = 128;
/// The longest custom header value, in bytes.
pub const MAX_HEADER_VALUE_BYTES: usize = 4096;
/// The most bytes of all of an endpoint's custom header names and values
/// together.
pub const MAX_HEADERS_TOTAL_BYTES: usize = 8192;
/// The deepest nesting of arrays and objects in an event payload. Payloads
/// are passed through unparsed; receivers (and the ledger) parse them.
pub const MAX_PAYLOAD_DEPTH: usize = 64;

/// Why a text field was refused; the message completes "field: ".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("must not contain a NUL character")]
    Nul,
    #[error("is {0} characters; at most {1} are allowed")]
    TooLong(usize, usize),
}

/// A free-text field (a description, a name, a reason): no NUL (Postgres
/// text cannot hold it) and at most `max` characters.
pub fn check_text(value: &str, max: usize) -> Result<(), TextError> {
    if value.contains('\0') {
        return Err(TextError::Nul);
    }
    let chars = value.chars().count();
    if chars > max {
        return Err(TextError::TooLong(chars, max));
    }
    Ok(())
}

/// Deserializes an optional whole number written as an integer or as a
/// float with no fraction (`153.0`): JSON Schema's `integer` admits both,
/// so the API does too. Out of `T`'s range, or with a fraction, it is
/// refused.
pub fn optional_whole<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    use serde::Deserialize;
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    let whole = number.as_u64().or_else(|| {
        number
            .as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u64::MAX as f64)
            .map(|f| f as u64)
    });
    whole
        .and_then(|n| T::try_from(n).ok())
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom(format!("{number} is not a whole number in range")))
}

/// How deeply JSON text nests arrays and objects, outside strings. One
/// pass, no recursion: no input, valid or not, can make it slow or deep.
pub fn json_depth(json: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0_usize, 0_usize);
    let (mut in_string, mut escaped) = (false, false);
    for &byte in json {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_refuses_nul_and_length() {
        assert_eq!(check_text("fine", 10), Ok(()));
        assert_eq!(check_text("a\0b", 10), Err(TextError::Nul));
        assert_eq!(check_text("ééé", 3), Ok(()));
        assert_eq!(check_text("abcd", 3), Err(TextError::TooLong(4, 3)));
    }

    #[test]
    fn whole_numbers_may_be_written_as_floats() {
        #[derive(serde::Deserialize)]
        struct Scan {
            #[serde(default, deserialize_with = "optional_whole")]
            scan: Option<u16>,
        }
        let read = |json: &str| serde_json::from_str::<Scan>(json).map(|s| s.scan);
        assert_eq!(read(r#"{"scan": 153}"#).unwrap(), Some(153));
        assert_eq!(read(r#"{"scan": 153.0}"#).unwrap(), Some(153));
        assert_eq!(read(r#"{"scan": null}"#).unwrap(), None);
        assert_eq!(read(r#"{}"#).unwrap(), None);
        assert!(read(r#"{"scan": 1.5}"#).is_err());
        assert!(read(r#"{"scan": 70000}"#).is_err());
        assert!(read(r#"{"scan": -1}"#).is_err());
    }

    #[test]
    fn depth_counts_nesting_outside_strings() {
        assert_eq!(json_depth(br#"{}"#), 1);
        assert_eq!(json_depth(br#"{"a": [1, {"b": []}]}"#), 4);
        assert_eq!(json_depth(br#"{"a": "[[[{{\"["}"#), 1);
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert_eq!(json_depth(deep.as_bytes()), 100);
    }
}
