//! Times on the command line and in the output.

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

use crate::error::CliError;

/// A point in time as a flag gives it: RFC 3339 (`2026-11-27T12:00:00Z`)
/// or a duration before `now` (`15m`, `2h`, `1day`). Returns RFC 3339, as
/// the API takes it.
pub fn parse_point(flag: &str, raw: &str, now: OffsetDateTime) -> Result<String, CliError> {
    if let Ok(at) = OffsetDateTime::parse(raw, &Rfc3339) {
        return format(at);
    }
    let ago = humantime::parse_duration(raw).map_err(|_| {
        CliError::usage(format!(
            "{flag}: {raw:?} is neither an RFC 3339 time (2026-11-27T12:00:00Z) nor a duration ago (15m, 2h)"
        ))
    })?;
    let at = time::Duration::try_from(ago)
        .ok()
        .and_then(|ago| now.checked_sub(ago))
        .ok_or_else(|| CliError::usage(format!("{flag}: {raw:?} is too long ago")))?;
    format(at)
}

fn format(at: OffsetDateTime) -> Result<String, CliError> {
    at.to_offset(UtcOffset::UTC)
        .format(&Rfc3339)
        .map_err(|e| CliError::usage(format!("time out of range: {e}")))
}

/// A time from the API (`2026-11-27T12:00:00.123+00:00`).
pub fn parse_api(raw: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(raw, &Rfc3339).ok()
}

/// An API time for people: UTC to the second.
pub fn show(raw: &str) -> String {
    parse_api(raw)
        .map(show_time)
        .unwrap_or_else(|| raw.to_owned())
}

pub fn show_time(at: OffsetDateTime) -> String {
    at.to_offset(UtcOffset::UTC)
        .format(format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second]Z"
        ))
        .unwrap_or_else(|_| at.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-27 12:00:00 UTC);

    #[test]
    fn a_point_is_rfc_3339_or_a_duration_ago() {
        assert_eq!(
            parse_point("--since", "2026-11-27T10:00:00+02:00", NOW).unwrap(),
            "2026-11-27T08:00:00Z"
        );
        assert_eq!(
            parse_point("--since", "90m", NOW).unwrap(),
            "2026-11-27T10:30:00Z"
        );
        assert!(matches!(
            parse_point("--since", "yesterday-ish", NOW),
            Err(CliError::Usage(m)) if m.starts_with("--since")
        ));
    }

    #[test]
    fn api_times_show_in_utc_to_the_second() {
        assert_eq!(
            show("2026-11-27T13:00:01.123456+01:00"),
            "2026-11-27 12:00:01Z"
        );
        assert_eq!(show("not a time"), "not a time");
    }
}
