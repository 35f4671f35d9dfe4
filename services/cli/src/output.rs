//! Printing: the API's JSON for scripts, plain columns for people.

use std::io::Write;

use comfy_table::{Table, presets};
use serde_json::Value;

use crate::cli::Output;

/// How a command prints its answer.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    pub output: Output,
}

impl Printer {
    pub fn json(&self) -> bool {
        self.output == Output::Json
    }

    /// The API's answer, pretty, for `--output json`.
    pub fn print_json(&self, value: &Value) {
        let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
        line(&text);
    }
}

/// One line on stdout, flushed at once: a pipe reader (a test, `grep`)
/// sees it while the command still runs.
pub fn line(text: &str) {
    let mut out = std::io::stdout().lock();
    // A closed pipe (`| head`) is not an error worth reporting.
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

/// Columns separated by spaces under upper-case headers, like `kubectl
/// get`: easy to read and to `awk`.
pub fn table(headers: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let mut table = Table::new();
    table.load_style(presets::NOTHING);
    table.set_header(headers.iter().map(|h| h.to_uppercase()));
    for row in rows {
        table.add_row(row);
    }
    trim_lines(&table.to_string())
}

/// One record as `field  value` lines.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let mut table = Table::new();
    table.load_style(presets::NOTHING);
    for (name, value) in pairs {
        table.add_row(vec![format!("{name}:"), value.clone()]);
    }
    trim_lines(&table.to_string())
}

fn trim_lines(text: &str) -> String {
    text.lines()
        .map(|l| l.trim_end().strip_prefix(' ').unwrap_or(l.trim_end()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// An optional value as a cell: `-` when absent.
pub fn or_dash<T: ToString>(value: Option<T>) -> String {
    value
        .map(|v| v.to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "-".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_has_upper_case_headers_and_aligned_columns() {
        let text = table(
            &["id", "state"],
            [
                vec!["ep_1".to_owned(), "enabled".to_owned()],
                vec!["ep_22".to_owned(), "disabled".to_owned()],
            ],
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("ID"));
        assert_eq!(lines[1].find("enabled"), lines[2].find("disabled"));
    }

    #[test]
    fn absent_values_are_dashes() {
        assert_eq!(or_dash(None::<String>), "-");
        assert_eq!(or_dash(Some("")), "-");
        assert_eq!(or_dash(Some(200)), "200");
    }
}
