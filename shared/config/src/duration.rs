//! Durations in settings, written as people write them (`30s`, `5m`,
//! `24h`, `5d`) and deserialized once, here, into [`Duration`]s.
//!
//! A field is `#[serde(with = "hookfleet_config::duration")]`; a list of
//! them (`5s,5m,2h`) is a [`Durations`].

use std::fmt;
use std::time::Duration;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserializer, Serializer};

pub use humantime_serde::{deserialize, serialize};

/// One duration (`30s`, `1m 30s`, `5d`), with an error that says what
/// was expected.
pub fn parse(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw.trim())
        .map_err(|e| format!("{raw:?} is not a duration ({e}); expected such as 5s, 5m or 2h"))
}

/// Comma-separated durations (`5s,5m,30m`), or a list of them in a file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Durations(pub Vec<Duration>);

impl Durations {
    /// Parses `5s, 5m,2h`; empty items are skipped.
    pub fn parse(raw: &str) -> Result<Self, String> {
        raw.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(parse)
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

impl fmt::Display for Durations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self
            .0
            .iter()
            .map(|d| humantime::format_duration(*d).to_string())
            .collect();
        f.write_str(&items.join(","))
    }
}

impl serde::Serialize for Durations {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Durations {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationsVisitor;

        impl<'de> Visitor<'de> for DurationsVisitor {
            type Value = Durations;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("comma-separated durations such as 5s,5m,2h")
            }

            fn visit_str<E: de::Error>(self, raw: &str) -> Result<Durations, E> {
                Durations::parse(raw).map_err(E::custom)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Durations, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    items.extend(Durations::parse(&item).map_err(de::Error::custom)?.0);
                }
                Ok(Durations(items))
            }
        }

        deserializer.deserialize_any(DurationsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_reads_and_writes_as_people_write_it() {
        let parsed = Durations::parse("5s, 5m,,2h").unwrap();
        assert_eq!(parsed.0, [5, 300, 7200].map(Duration::from_secs).to_vec());
        assert_eq!(parsed.to_string(), "5s,5m,2h");
    }

    #[test]
    fn a_bad_item_is_named() {
        let error = Durations::parse("5s,soon").unwrap_err();
        assert!(error.contains("\"soon\""), "{error}");
    }
}
