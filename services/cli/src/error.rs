//! What can go wrong, and the exit code each case gives scripts.

use std::process::ExitCode;

/// A failed command. Each variant is printed as one line,
/// `error: <code>: <message>`, and maps to one exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line or the configuration is incomplete or wrong (a
    /// missing token, an unreadable payload file): exit 2, like clap's own
    /// usage errors.
    #[error("usage: {0}")]
    Usage(String),
    /// The API answered with an error: exit 1.
    #[error("{code}: {message}")]
    Api { code: String, message: String },
    /// The API could not be reached: exit 1.
    #[error("unreachable: {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// Something local failed at run time (a port already in use): exit 1.
    #[error("{what}: {reason}")]
    Local { what: String, reason: String },
}

impl CliError {
    pub fn usage(message: impl Into<String>) -> Self {
        Self::Usage(message.into())
    }

    pub fn api(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Api {
            code: code.into(),
            message: message.into(),
        }
    }

    pub fn local(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Self::Local {
            what: what.into(),
            reason: reason.to_string(),
        }
    }

    /// 2 for usage, 1 for everything that went wrong while running.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::Usage(_) => ExitCode::from(2),
            _ => ExitCode::from(1),
        }
    }

    /// The error as the one line a user sees on stderr.
    pub fn one_line(&self) -> String {
        let text = format!("error: {self}");
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

/// An error and the causes beneath it, joined on one line (reqwest's own
/// message says only "error sending request"; the cause says why).
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_exits_2_and_everything_else_1() {
        assert_eq!(CliError::usage("x").exit_code(), ExitCode::from(2));
        assert_eq!(
            CliError::api("not_found", "x").exit_code(),
            ExitCode::from(1)
        );
    }

    #[test]
    fn an_error_is_one_line() {
        let error = CliError::api("invalid_field", "url:\n  not a URL");
        assert_eq!(error.one_line(), "error: invalid_field: url: not a URL");
    }
}
