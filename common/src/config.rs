//! Reading TOML config files into typed structs, and reporting every problem with the file
//! and the key it concerns.
//!
//! Structs deny unknown keys; after parsing, each config's own `validate` adds the problems
//! that types alone cannot catch (a port of 0, a timeout shorter than an interval).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// One thing wrong in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `tls.ca`; empty for the file as a whole.
    pub key: String,
    /// What is wrong and, where possible, what would be right.
    pub reason: String,
}

impl Problem {
    /// A problem with `key`.
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Problem {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// A config file that cannot be used, with every problem found in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong, at least one entry.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if p.key.is_empty() {
                write!(f, "{}: {}", self.path.display(), p.reason)?;
            } else {
                write!(f, "{}: {}: {}", self.path.display(), p.key, p.reason)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// A config type that can check itself after parsing.
pub trait Validate {
    /// Every problem found; empty when the config is usable.
    fn validate(&self) -> Vec<Problem>;
}

/// Largest config file accepted.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Reads, parses and validates the TOML file at `path`.
pub fn load<T: DeserializeOwned + Validate>(path: &Path) -> Result<T, ConfigError> {
    let fail = |key: String, reason: String| ConfigError {
        path: path.to_owned(),
        problems: vec![Problem { key, reason }],
    };
    let meta = std::fs::metadata(path).map_err(|e| fail(String::new(), e.to_string()))?;
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(fail(
            String::new(),
            format!(
                "file is {} bytes; the limit is {MAX_CONFIG_BYTES}",
                meta.len()
            ),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| fail(String::new(), e.to_string()))?;
    let value: T = parse(&text).map_err(|(key, reason)| fail(key, reason))?;
    let problems = value.validate();
    if problems.is_empty() {
        Ok(value)
    } else {
        Err(ConfigError {
            path: path.to_owned(),
            problems,
        })
    }
}

/// Parses TOML text, returning the failing key path and reason on error.
pub fn parse<T: DeserializeOwned>(text: &str) -> Result<T, (String, String)> {
    let de = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let key = err.path().to_string();
        let inner = err.into_inner();
        let mut reason = inner.message().to_owned();
        if let Some(span) = inner.span() {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            reason = format!("{reason} (line {line})");
        }
        let key = if key == "." { String::new() } else { key };
        (key, reason)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        #[allow(dead_code)]
        inner: Inner,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[allow(dead_code)]
        port: u16,
    }

    #[test]
    fn unknown_key_is_named_with_its_section() {
        let (key, reason) = parse::<Outer>("[inner]\nport = 1\nprot = 2\n").unwrap_err();
        assert_eq!(key, "inner.prot");
        assert!(reason.contains("prot"), "{reason}");
        assert!(reason.contains("line 3"), "{reason}");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let (key, reason) = parse::<Outer>("[inner]\nport = \"x\"\n").unwrap_err();
        assert_eq!(key, "inner.port");
        assert!(reason.contains("line 2"), "{reason}");
    }
}
