//! A host's memory measured as a memory cgroup (`[agent] memory_cgroup`): for an agent whose
//! host is a container or a slice with a memory limit, or a host that shares its kernel
//! with others (as the test hosts do). The capacity is the cgroup's limit (or the machine's
//! memory, when the limit is higher or unset), and what is in use is its working set: usage
//! minus the page cache the kernel can drop at once (inactive file pages), as the kubelet and
//! cAdvisor count it. Reads cgroup v2 (`memory.max`, `memory.current`) and v1
//! (`memory.limit_in_bytes`, `memory.usage_in_bytes`).

use std::path::{Path, PathBuf};

/// Which cgroup interface the directory has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// A memory cgroup standing for the host's memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryCgroup {
    dir: PathBuf,
    version: Version,
}

/// Its memory now, bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupMemory {
    /// The capacity: the limit, at most the machine's memory.
    pub limit: u64,
    /// The working set: usage minus inactive file pages.
    pub used: u64,
}

impl MemoryCgroup {
    /// The cgroup at `dir`, or why it is not a memory cgroup.
    pub fn open(dir: &Path) -> Result<Self, String> {
        let version = if dir.join("memory.max").is_file() {
            Version::V2
        } else if dir.join("memory.limit_in_bytes").is_file() {
            Version::V1
        } else {
            return Err(format!(
                "{} is not a memory cgroup (it has neither memory.max nor memory.limit_in_bytes)",
                dir.display()
            ));
        };
        Ok(MemoryCgroup {
            dir: dir.to_path_buf(),
            version,
        })
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads it now; `machine` is the machine's memory (the cap of the limit).
    pub fn read(&self, machine: u64) -> Result<CgroupMemory, String> {
        let file = |name: &str| {
            let p = self.dir.join(name);
            std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))
        };
        let (limit, usage, inactive_key) = match self.version {
            Version::V2 => (
                file("memory.max")?,
                file("memory.current")?,
                "inactive_file",
            ),
            Version::V1 => (
                file("memory.limit_in_bytes")?,
                file("memory.usage_in_bytes")?,
                "total_inactive_file",
            ),
        };
        let stat = file("memory.stat")?;
        parse(&limit, &usage, &stat, inactive_key, machine)
            .map_err(|e| format!("{}: {e}", self.dir.display()))
    }
}

/// The arithmetic, from the files' texts.
fn parse(
    limit: &str,
    usage: &str,
    stat: &str,
    inactive_key: &str,
    machine: u64,
) -> Result<CgroupMemory, String> {
    let limit = match limit.trim() {
        "max" => machine,
        v => v
            .parse::<u64>()
            .map_err(|_| format!("limit {v:?} is not a number"))?
            .min(machine),
    };
    let usage: u64 = usage
        .trim()
        .parse()
        .map_err(|_| format!("usage {:?} is not a number", usage.trim()))?;
    let inactive = stat
        .lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == inactive_key)
        .and_then(|(_, v)| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    Ok(CgroupMemory {
        limit,
        used: usage.saturating_sub(inactive).min(limit),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn the_working_set_leaves_out_inactive_file_pages_and_the_limit_is_capped() {
        let stat = "anon 100\ninactive_file 300\nactive_file 50\n";
        let m = parse("1073741824\n", "1000\n", stat, "inactive_file", 4 * GIB).unwrap();
        assert_eq!(
            m,
            CgroupMemory {
                limit: GIB,
                used: 700
            }
        );
        // No limit (v2 "max", v1's huge number): the machine's memory.
        let m = parse("max\n", "10\n", "", "inactive_file", 4 * GIB).unwrap();
        assert_eq!(m.limit, 4 * GIB);
        let m = parse(
            "9223372036854771712",
            "10",
            "",
            "total_inactive_file",
            4 * GIB,
        )
        .unwrap();
        assert_eq!(m.limit, 4 * GIB);
    }

    #[test]
    fn garbage_is_refused_naming_the_value() {
        let e = parse("lots", "1", "", "inactive_file", GIB).unwrap_err();
        assert!(e.contains("\"lots\""), "{e}");
        let e = parse("max", "-", "", "inactive_file", GIB).unwrap_err();
        assert!(e.contains("usage"), "{e}");
    }

    #[test]
    fn a_directory_without_memory_files_is_not_a_memory_cgroup() {
        let d = std::env::temp_dir().join(format!("us-cg-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let e = MemoryCgroup::open(&d).unwrap_err();
        assert!(e.contains("not a memory cgroup"), "{e}");
        std::fs::write(d.join("memory.max"), "max\n").unwrap();
        std::fs::write(d.join("memory.current"), "4096\n").unwrap();
        std::fs::write(d.join("memory.stat"), "inactive_file 1024\n").unwrap();
        let m = MemoryCgroup::open(&d).unwrap().read(GIB).unwrap();
        assert_eq!(
            m,
            CgroupMemory {
                limit: GIB,
                used: 3072
            }
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
