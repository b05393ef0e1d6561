//! Finding the CRIU that `packaging/criu/provision-criu.sh` set up.

use std::path::PathBuf;

/// What `criu.env` says about the provisioned CRIU.
#[derive(Debug, Clone)]
pub struct CriuEnv {
    /// The criu command to run.
    pub bin: PathBuf,
    /// Its version.
    pub version: String,
}

/// Reads `$UNDERSTUDY_CRIU_CACHE/criu.env` (default `/var/cache/understudy/criu`).
///
/// `Err` says why CRIU tests cannot run; with `UNDERSTUDY_REQUIRE_CRIU=1` (as in CI) that
/// is a failure instead of a skip.
pub fn provisioned() -> Result<CriuEnv, String> {
    let cache = std::env::var("UNDERSTUDY_CRIU_CACHE")
        .unwrap_or_else(|_| "/var/cache/understudy/criu".into());
    let path = PathBuf::from(&cache).join("criu.env");
    let found = std::fs::read_to_string(&path)
        .map_err(|e| {
            format!(
                "{}: {e} (run packaging/criu/provision-criu.sh as root first)",
                path.display()
            )
        })
        .and_then(|text| {
            let get = |key: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                    .map(|v| v.trim_matches('\'').to_owned())
                    .ok_or_else(|| format!("{}: no {key}", path.display()))
            };
            Ok(CriuEnv {
                bin: PathBuf::from(get("CRIU_BIN")?),
                version: get("CRIU_VERSION")?,
            })
        });
    if let Err(e) = &found {
        if std::env::var("UNDERSTUDY_REQUIRE_CRIU").as_deref() == Ok("1") {
            panic!("CRIU required but not provisioned: {e}");
        }
    }
    found
}

/// Raises `fs.pipe-max-size` to the 4 MiB CRIU's page server needs for post-copy moves on a
/// host without CAP_SYS_RESOURCE, as here (the agent refuses post-copy below it).
pub fn allow_post_copy() {
    let path = "/proc/sys/fs/pipe-max-size";
    let now: u64 = std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if now < 4 << 20 {
        std::fs::write(path, (4u64 << 20).to_string()).expect("raise fs.pipe-max-size");
    }
}
