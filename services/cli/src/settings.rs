//! Where the CLI finds the API and its token: flags, then environment
//! variables (clap reads both), then a TOML file.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::CliError;

/// The API's one base URL under `scripts/up` (the producer, which
/// forwards the ledger's paths).
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// What the config file may hold; every key optional.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    pub url: Option<String>,
    pub ledger_url: Option<String>,
    pub token: Option<String>,
}

/// What flags and environment gave (clap has already let a flag win over
/// its variable).
#[derive(Debug, Default, Clone)]
pub struct Given {
    pub url: Option<String>,
    pub ledger_url: Option<String>,
    pub token: Option<String>,
}

/// Where to send calls, and as whom.
#[derive(Debug, Clone)]
pub struct Settings {
    pub producer: reqwest::Url,
    pub ledger: reqwest::Url,
    token: Option<String>,
    /// Where a token could have come from, for the error that says it is
    /// missing.
    file: PathBuf,
}

impl Settings {
    /// Flags and environment win over the file. Without a ledger URL from
    /// any of them, ledger calls go to the one base URL (`--url`), which
    /// answers every path of the API.
    pub fn resolve(given: Given, file: FileSettings, file_path: PathBuf) -> Result<Self, CliError> {
        let url = given.url.or(file.url);
        let ledger_url = given.ledger_url.or(file.ledger_url);
        let producer = url.unwrap_or_else(|| DEFAULT_URL.to_owned());
        let ledger = ledger_url.unwrap_or_else(|| producer.clone());
        Ok(Self {
            producer: parse_url("--url", &producer)?,
            ledger: parse_url("--ledger-url", &ledger)?,
            token: given.token.or(file.token).filter(|t| !t.is_empty()),
            file: file_path,
        })
    }

    /// The API token; a usage error (exit 2) when none was configured.
    pub fn token(&self) -> Result<&str, CliError> {
        self.token.as_deref().ok_or_else(|| {
            CliError::usage(format!(
                "no API token: pass --token, set HOOKFLEET_TOKEN or put `token = \"...\"` in {}",
                self.file.display()
            ))
        })
    }

    /// The same, calling the admin API with the admin token, at
    /// `admin_url` when it is served apart.
    pub fn as_admin(&self, admin_url: Option<&str>, admin_token: &str) -> Result<Self, CliError> {
        let mut admin = self.clone();
        if let Some(url) = admin_url {
            admin.producer = parse_url("--admin-url", url)?;
        }
        admin.token = Some(admin_token.to_owned()).filter(|t| !t.is_empty());
        Ok(admin)
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }
}

fn parse_url(flag: &str, raw: &str) -> Result<reqwest::Url, CliError> {
    let url = reqwest::Url::parse(raw)
        .map_err(|e| CliError::usage(format!("{flag}: {raw:?} is not a URL: {e}")))?;
    if !["http", "https"].contains(&url.scheme()) {
        return Err(CliError::usage(format!(
            "{flag}: {raw:?} must be an http or https URL"
        )));
    }
    Ok(url)
}

/// `$XDG_CONFIG_HOME/hookfleet/cli.toml`, else `~/.config/hookfleet/cli.toml`.
pub fn default_file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    Some(base.join("hookfleet").join("cli.toml"))
}

/// Reads the config file: `explicit` must exist; the default path is read
/// only if it does.
pub fn load_file(explicit: Option<&Path>) -> Result<(FileSettings, PathBuf), CliError> {
    let (path, required) = match explicit {
        Some(path) => (path.to_path_buf(), true),
        None => match default_file() {
            Some(path) => (path, false),
            None => return Ok((FileSettings::default(), PathBuf::from("the config file"))),
        },
    };
    if !required && !path.exists() {
        return Ok((FileSettings::default(), path));
    }
    let settings = config::Config::builder()
        .add_source(config::File::from(path.as_path()).format(config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize::<FileSettings>())
        .map_err(|e| CliError::usage(format!("config file {}: {e}", path.display())))?;
    Ok((settings, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(url: Option<&str>, ledger_url: Option<&str>, token: Option<&str>) -> FileSettings {
        FileSettings {
            url: url.map(Into::into),
            ledger_url: ledger_url.map(Into::into),
            token: token.map(Into::into),
        }
    }

    #[test]
    fn flags_and_environment_win_over_the_file() {
        let settings = Settings::resolve(
            Given {
                url: Some("http://given:1".into()),
                ledger_url: None,
                token: Some("hf_given".into()),
            },
            file(
                Some("http://file:1"),
                Some("http://file:2"),
                Some("hf_file"),
            ),
            "cli.toml".into(),
        )
        .unwrap();
        assert_eq!(settings.producer.as_str(), "http://given:1/");
        assert_eq!(settings.ledger.as_str(), "http://file:2/");
        assert_eq!(settings.token().unwrap(), "hf_given");
    }

    #[test]
    fn without_a_ledger_url_ledger_calls_go_to_the_one_base_url() {
        let one_gateway = Settings::resolve(
            Given {
                url: Some("https://hooks.example.com".into()),
                ..Given::default()
            },
            FileSettings::default(),
            "cli.toml".into(),
        )
        .unwrap();
        assert_eq!(one_gateway.ledger.as_str(), "https://hooks.example.com/");
        let local = Settings::resolve(Given::default(), FileSettings::default(), "cli.toml".into())
            .unwrap();
        assert_eq!(local.producer.as_str(), "http://127.0.0.1:8080/");
        assert_eq!(local.ledger.as_str(), "http://127.0.0.1:8080/");
    }

    #[test]
    fn a_missing_token_or_a_bad_url_is_a_usage_error() {
        let settings =
            Settings::resolve(Given::default(), FileSettings::default(), "cli.toml".into())
                .unwrap();
        assert!(
            matches!(settings.token(), Err(CliError::Usage(m)) if m.contains("HOOKFLEET_TOKEN"))
        );
        let bad = Settings::resolve(
            Given {
                url: Some("ftp://x".into()),
                ..Given::default()
            },
            FileSettings::default(),
            "cli.toml".into(),
        );
        assert!(matches!(bad, Err(CliError::Usage(_))));
    }
}
