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

    /// What is worth knowing but not wrong (a directory the service creates when it
    /// starts); `validate` prints these and still passes.
    fn notes(&self) -> Vec<Problem> {
        Vec::new()
    }
}

/// Prints `config`'s notes, one a line, as `PATH: note: KEY: WHAT`.
pub fn print_notes(path: &Path, config: &impl Validate) {
    for n in config.notes() {
        crate::outln!("{}: note: {}: {}", path.display(), n.key, n.reason);
    }
}

/// Largest config file accepted.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Reads, parses and validates the TOML file at `path`.
pub fn load<T: DeserializeOwned + Validate>(path: &Path) -> Result<T, ConfigError> {
    let fail = |key: String, reason: String| ConfigError {
        path: path.to_owned(),
        problems: vec![Problem { key, reason }],
    };
    let text = read_capped(path).map_err(|reason| fail(String::new(), reason))?;
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

/// Reads a config file the operator named: a regular file (not a device, FIFO or
/// directory, which could block or never end) of at most [`MAX_CONFIG_BYTES`], as UTF-8.
pub fn read_capped(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err(format!(
            "not a regular file ({}); a config must be a plain file",
            file_kind(&meta)
        ));
    }
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    // The cap holds even if the file grows after the check above.
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(format!(
            "file is larger than the limit of {MAX_CONFIG_BYTES} bytes"
        ));
    }
    String::from_utf8(bytes).map_err(|e| format!("not UTF-8 text: {e}"))
}

fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

/// Adds a problem for `key` unless `value` lies in `min..=max`.
pub fn check_range(
    problems: &mut Vec<Problem>,
    key: &str,
    value: std::time::Duration,
    min: std::time::Duration,
    max: std::time::Duration,
) {
    if value < min || value > max {
        problems.push(Problem::new(
            key,
            format!(
                "{} is outside {}..{}",
                humantime_text(value),
                humantime_text(min),
                humantime_text(max)
            ),
        ));
    }
}

fn humantime_text(d: std::time::Duration) -> String {
    humantime::format_duration(d).to_string()
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
    fn devices_fifos_and_oversized_files_are_refused_without_reading_them_whole() {
        let e = read_capped(Path::new("/dev/zero")).unwrap_err();
        assert!(e.contains("character device"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        let e = read_capped(&fifo).unwrap_err();
        assert!(e.contains("FIFO"), "{e}");
        let big = dir.path().join("big.toml");
        std::fs::write(&big, vec![b'#'; MAX_CONFIG_BYTES as usize + 1]).unwrap();
        assert!(read_capped(&big).unwrap_err().contains("limit"));
        assert!(read_capped(dir.path()).unwrap_err().contains("directory"));
    }

    #[test]
    fn wrong_type_names_the_key() {
        let (key, reason) = parse::<Outer>("[inner]\nport = \"x\"\n").unwrap_err();
        assert_eq!(key, "inner.port");
        assert!(reason.contains("line 2"), "{reason}");
    }
}
