//! Memory-tracking chains on the primary: where the kernel tracks written pages
//! (soft-dirty) and CRIU can use it, each periodic dump of a workload writes only the pages
//! written since the previous dump, which is its parent; everything else is marked "in
//! parent". The tree is frozen only while those pages are written.
//!
//! The shadow and the restore still see whole images: once CRIU has let the tree go, the
//! dump is *flattened* — each run left in the parent is copied from the parent's pages —
//! so the epoch that is sent is a complete dump and the delta against the shadow's base
//! works as before. The flattened dump is then kept as the next dump's parent, in
//! `DUMP_DIR/tracked`, beside the workload's epoch directories (memory-backed scratch space
//! where there is some).
//!
//! A switchover's final dump is made whole while CRIU still holds the tree (in its
//! `post-dump` notification, [`crate::checkpoint`]): if it cannot be, CRIU resumes the tree
//! instead of stopping it for good, the dump is retried whole, and failing that the move
//! fails with the workload still running where it was. A parent whose pages file is shorter
//! than its pagemap says is refused, not patched with holes.
//!
//! A chain is trusted only as far as this agent knows what cleared the tree's dirty bits.
//! It is dropped, and the next dump is whole, when a dump fails (CRIU may have cleared them
//! before failing), when the tree is another one (a restart, a restore; the marker holds
//! its pid and start time), and when the agent restarts (its pid is in the marker too).

use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::pagemap::{self, Held, Pagemap, PAGE};

/// The chain's directory under a workload's dump directory.
pub const CHAIN_DIR: &str = "tracked";
/// The symlink CRIU leaves in a dump made with a parent.
const PARENT_LINK: &str = "parent";
/// What the chain was taken of.
const MARKER: &str = "understudy-chain";

/// Why a tracked dump could not be made whole.
#[derive(Debug, thiserror::Error)]
pub enum FlattenError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A pagemap could not be decoded.
    #[error("{path}: {source}")]
    Pagemap {
        /// The image.
        path: PathBuf,
        /// What is wrong with it.
        source: pagemap::PagemapError,
    },
    /// The parent's pages file holds fewer pages than its pagemap says.
    #[error("{path}: {len} bytes, but its pagemap names {expected}")]
    ParentShort {
        /// The parent's pages file.
        path: PathBuf,
        /// Its length.
        len: u64,
        /// What its pagemap says it holds.
        expected: u64,
    },
    /// A run the dump left in its parent is not there.
    #[error("{file}: pages {vaddr:#x}+{pages} are in neither the dump nor its parent")]
    NotInParent {
        /// The pagemap.
        file: String,
        /// First missing page.
        vaddr: u64,
        /// Pages missing from there.
        pages: u64,
    },
}

/// What a flattened dump held before it was made whole.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flattened {
    /// Pages CRIU wrote while the tree was frozen.
    pub pages_dumped: u64,
    /// Pages in the whole dump.
    pub pages_total: u64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FlattenError + '_ {
    move |source| FlattenError::Io {
        path: path.to_owned(),
        source,
    }
}

fn read_map(path: &Path) -> Result<Pagemap, FlattenError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    pagemap::decode(&bytes).map_err(|source| FlattenError::Pagemap {
        path: path.to_owned(),
        source,
    })
}

fn pagemaps(dir: &Path) -> Result<Vec<String>, FlattenError> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let name = entry.map_err(io(dir))?.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("pagemap-") && name.ends_with(".img") {
            names.push(name.into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Makes the dump in `dir` whole, copying every run it left in `parent` (itself whole)
/// from there, and removes CRIU's link to the parent. A dump without runs in a parent is
/// left as it is and only counted.
pub fn flatten(dir: &Path, parent: &Path) -> Result<Flattened, FlattenError> {
    let mut counted = Flattened::default();
    for name in pagemaps(dir)? {
        let map = read_map(&dir.join(&name))?;
        counted.pages_dumped += map.present_pages();
        counted.pages_total += map.total_pages();
        if map.uses_parent() {
            flatten_one(dir, parent, &name, &map)?;
        }
    }
    let link = dir.join(PARENT_LINK);
    if link.symlink_metadata().is_ok() {
        std::fs::remove_file(&link).map_err(io(&link))?;
    }
    Ok(counted)
}

/// Where each page of a whole dump's pagemap is in its pages file: (vaddr, pages, offset).
fn index(map: &Pagemap) -> Vec<(u64, u64, u64)> {
    let mut at = 0;
    let mut runs: Vec<(u64, u64, u64)> = map
        .runs
        .iter()
        .filter(|r| r.held == Held::Present)
        .map(|r| {
            let pages = u64::from(r.nr_pages);
            let run = (r.vaddr, pages, at);
            at += pages * PAGE;
            run
        })
        .collect();
    runs.sort_unstable();
    runs
}

fn flatten_one(dir: &Path, parent: &Path, name: &str, map: &Pagemap) -> Result<(), FlattenError> {
    let parent_map_path = parent.join(name);
    let parent_map = read_map(&parent_map_path)?;
    let parent_index = index(&parent_map);
    let parent_pages_path = parent.join(format!("pages-{}.img", parent_map.pages_id));
    let parent_pages = std::fs::File::open(&parent_pages_path).map_err(io(&parent_pages_path))?;
    // A parent cut short (scratch space that filled, a crash while it was kept) would leave
    // holes in the whole dump: refused, so the next dump is whole.
    let expected = parent_map.present_pages() * PAGE;
    let len = parent_pages
        .metadata()
        .map_err(io(&parent_pages_path))?
        .len();
    if len != expected {
        return Err(FlattenError::ParentShort {
            path: parent_pages_path,
            len,
            expected,
        });
    }
    let pages_path = dir.join(format!("pages-{}.img", map.pages_id));
    // A dump whose runs are all in the parent may have no pages file of its own.
    let own = match std::fs::File::open(&pages_path) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(&pages_path)(e)),
    };
    let whole_path = dir.join(format!("pages-{}.img.whole", map.pages_id));
    if segments(map) == segments(&parent_map) {
        // The same pages in the same order as the parent's (the usual case: the mappings
        // did not change): the written pages are put in place in the parent's file, which
        // becomes this dump's, and nothing else is copied.
        drop(parent_pages);
        std::fs::rename(&parent_pages_path, &whole_path).map_err(io(&whole_path))?;
        let whole = std::fs::OpenOptions::new()
            .write(true)
            .open(&whole_path)
            .map_err(io(&whole_path))?;
        let mut buf = vec![0u8; 1 << 20];
        let (mut at, mut own_at) = (0u64, 0u64);
        for run in &map.runs {
            let len = u64::from(run.nr_pages) * PAGE;
            if run.held == Held::Present {
                let file = own
                    .as_ref()
                    .ok_or_else(|| io(&pages_path)(std::io::ErrorKind::NotFound.into()))?;
                let mut out = Positioned { file: &whole, at };
                copy(file, own_at, len, &mut buf, &mut out, &pages_path)?;
                own_at += len;
            }
            at += len;
        }
        return finish(dir, name, map, &whole_path, &pages_path);
    }
    let whole = std::fs::File::create(&whole_path).map_err(io(&whole_path))?;
    let mut out = BufWriter::with_capacity(1 << 20, whole);
    let mut buf = vec![0u8; 1 << 20];
    let mut own_at = 0u64;
    for run in &map.runs {
        let pages = u64::from(run.nr_pages);
        match run.held {
            Held::Present => {
                let file = own
                    .as_ref()
                    .ok_or_else(|| io(&pages_path)(std::io::ErrorKind::NotFound.into()))?;
                copy(file, own_at, pages * PAGE, &mut buf, &mut out, &pages_path)?;
                own_at += pages * PAGE;
            }
            Held::Parent => {
                let mut vaddr = run.vaddr;
                let end = run.vaddr + pages * PAGE;
                while vaddr < end {
                    let found = parent_index
                        .partition_point(|&(v, _, _)| v <= vaddr)
                        .checked_sub(1)
                        .map(|i| parent_index[i])
                        .filter(|&(v, n, _)| vaddr < v + n * PAGE);
                    let Some((v, n, offset)) = found else {
                        return Err(FlattenError::NotInParent {
                            file: name.to_owned(),
                            vaddr,
                            pages: (end - vaddr) / PAGE,
                        });
                    };
                    let len = (v + n * PAGE).min(end) - vaddr;
                    copy(
                        &parent_pages,
                        offset + (vaddr - v),
                        len,
                        &mut buf,
                        &mut out,
                        &parent_pages_path,
                    )?;
                    vaddr += len;
                }
            }
        }
    }
    out.flush().map_err(io(&whole_path))?;
    drop(out);
    finish(dir, name, map, &whole_path, &pages_path)
}

/// Puts the whole pages file in place and the pagemap saying so beside it.
fn finish(
    dir: &Path,
    name: &str,
    map: &Pagemap,
    whole_path: &Path,
    pages_path: &Path,
) -> Result<(), FlattenError> {
    let whole_map = Pagemap {
        pages_id: map.pages_id,
        runs: map
            .runs
            .iter()
            .map(|r| pagemap::Run {
                held: Held::Present,
                ..*r
            })
            .collect(),
    };
    let map_path = dir.join(name);
    let map_tmp = dir.join(format!("{name}.whole"));
    std::fs::write(&map_tmp, pagemap::encode(&whole_map)).map_err(io(&map_tmp))?;
    std::fs::rename(whole_path, pages_path).map_err(io(pages_path))?;
    std::fs::rename(&map_tmp, &map_path).map_err(io(&map_path))?;
    Ok(())
}

/// The pages of a pagemap in file order, as runs of consecutive addresses (whatever holds
/// them): two pagemaps with the same segments lay out their whole pages files alike.
fn segments(map: &Pagemap) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for r in &map.runs {
        let pages = u64::from(r.nr_pages);
        match out.last_mut() {
            Some((v, n)) if *v + *n * PAGE == r.vaddr => *n += pages,
            _ => out.push((r.vaddr, pages)),
        }
    }
    out
}

/// Writes at a moving offset of a file.
struct Positioned<'a> {
    file: &'a std::fs::File,
    at: u64,
}

impl Write for Positioned<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write_all_at(buf, self.at)?;
        self.at += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn copy(
    from: &std::fs::File,
    mut at: u64,
    mut len: u64,
    buf: &mut [u8],
    out: &mut impl Write,
    path: &Path,
) -> Result<(), FlattenError> {
    while len > 0 {
        let n = len.min(buf.len() as u64) as usize;
        from.read_exact_at(&mut buf[..n], at).map_err(io(path))?;
        out.write_all(&buf[..n]).map_err(io(path))?;
        at += n as u64;
        len -= n as u64;
    }
    Ok(())
}

/// Who a chain belongs to: this agent process and the tree's root (pid and start time).
fn marker_text(pid: i32) -> Option<String> {
    let start = crate::procs::start_ticks(pid)?;
    Some(format!("{} {pid} {start}\n", std::process::id()))
}

/// The parent for the next dump of the tree rooted at `pid`, when `dump_dir` holds a chain
/// this agent took of that very tree.
pub fn parent(dump_dir: &Path, pid: i32) -> Option<PathBuf> {
    let chain = dump_dir.join(CHAIN_DIR);
    let marker = std::fs::read_to_string(chain.join(MARKER)).ok()?;
    (Some(marker) == marker_text(pid)).then_some(chain)
}

/// Keeps the flattened dump `images` (sent, or not: it is what CRIU compared the tree
/// with) as the chain's parent for the next dump of the tree rooted at `pid`.
pub fn keep(images: &Path, dump_dir: &Path, pid: i32) -> Result<(), std::io::Error> {
    let chain = dump_dir.join(CHAIN_DIR);
    drop_chain(dump_dir);
    let data = images.join(understudy_common::data_entry::DATA_PREFIX.trim_end_matches('/'));
    if data.exists() {
        std::fs::remove_dir_all(&data)?;
    }
    let marker = marker_text(pid).ok_or_else(|| std::io::Error::other("the tree is gone"))?;
    std::fs::rename(images, &chain)?;
    std::fs::write(chain.join(MARKER), marker)
}

/// Forgets the chain in `dump_dir`: the next dump is whole.
pub fn drop_chain(dump_dir: &Path) {
    crate::checkpoint::remove_dir(&dump_dir.join(CHAIN_DIR));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pagemap::Run;

    fn page(fill: u8) -> Vec<u8> {
        vec![fill; PAGE as usize]
    }

    fn write_dump(dir: &Path, map: &Pagemap, pages: &[Vec<u8>]) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("pagemap-1.img"), pagemap::encode(map)).unwrap();
        std::fs::write(
            dir.join(format!("pages-{}.img", map.pages_id)),
            pages.concat(),
        )
        .unwrap();
    }

    fn run(vaddr: u64, nr_pages: u32, held: Held) -> Run {
        Run {
            vaddr,
            nr_pages,
            held,
        }
    }

    #[test]
    fn a_chained_dump_is_made_whole_from_its_parent() {
        let root = tempfile::tempdir().unwrap();
        let parent = root.path().join(CHAIN_DIR);
        // The parent: pages 0x1000..0x4000 (a, b, c) and 0x10000 (d), listed out of order.
        write_dump(
            &parent,
            &Pagemap {
                pages_id: 1,
                runs: vec![
                    run(0x10000, 1, Held::Present),
                    run(0x1000, 3, Held::Present),
                ],
            },
            &[page(b'd'), page(b'a'), page(b'b'), page(b'c')],
        );
        // The new dump: page 0x2000 rewritten (B), a new page 0x20000 (E), the rest in the
        // parent, one run spanning two of the parent's.
        let dir = root.path().join("epoch-2");
        write_dump(
            &dir,
            &Pagemap {
                pages_id: 2,
                runs: vec![
                    run(0x1000, 1, Held::Parent),
                    run(0x2000, 1, Held::Present),
                    run(0x3000, 1, Held::Parent),
                    run(0x10000, 1, Held::Parent),
                    run(0x20000, 1, Held::Present),
                ],
            },
            &[page(b'B'), page(b'E')],
        );
        std::os::unix::fs::symlink("../tracked", dir.join(PARENT_LINK)).unwrap();
        let counted = flatten(&dir, &parent).unwrap();
        assert_eq!(
            counted,
            Flattened {
                pages_dumped: 2,
                pages_total: 5
            }
        );
        let pages = std::fs::read(dir.join("pages-2.img")).unwrap();
        assert_eq!(
            pages,
            [page(b'a'), page(b'B'), page(b'c'), page(b'd'), page(b'E')].concat()
        );
        let map = pagemap::decode(&std::fs::read(dir.join("pagemap-1.img")).unwrap()).unwrap();
        assert!(map.runs.iter().all(|r| r.held == Held::Present));
        assert_eq!(map.total_pages(), 5);
        assert!(dir.join(PARENT_LINK).symlink_metadata().is_err());
        let left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".whole"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn a_dump_laid_out_like_its_parent_is_patched_into_the_parents_pages() {
        let root = tempfile::tempdir().unwrap();
        let parent = root.path().join(CHAIN_DIR);
        write_dump(
            &parent,
            &Pagemap {
                pages_id: 1,
                runs: vec![run(0x1000, 3, Held::Present), run(0x9000, 2, Held::Present)],
            },
            &[page(b'a'), page(b'b'), page(b'c'), page(b'd'), page(b'e')],
        );
        let dir = root.path().join("epoch-2");
        write_dump(
            &dir,
            &Pagemap {
                pages_id: 4,
                runs: vec![
                    run(0x1000, 1, Held::Present),
                    run(0x2000, 2, Held::Parent),
                    run(0x9000, 1, Held::Parent),
                    run(0xa000, 1, Held::Present),
                ],
            },
            &[page(b'A'), page(b'E')],
        );
        let counted = flatten(&dir, &parent).unwrap();
        assert_eq!((counted.pages_dumped, counted.pages_total), (2, 5));
        assert_eq!(
            std::fs::read(dir.join("pages-4.img")).unwrap(),
            [page(b'A'), page(b'b'), page(b'c'), page(b'd'), page(b'E')].concat()
        );
        // The parent's pages file became this dump's: nothing else was copied.
        assert!(!parent.join("pages-1.img").exists());
    }

    #[test]
    fn a_run_missing_from_the_parent_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let parent = root.path().join(CHAIN_DIR);
        write_dump(
            &parent,
            &Pagemap {
                pages_id: 1,
                runs: vec![run(0x1000, 2, Held::Present)],
            },
            &[page(1), page(2)],
        );
        let dir = root.path().join("epoch-2");
        write_dump(
            &dir,
            &Pagemap {
                pages_id: 1,
                runs: vec![run(0x2000, 2, Held::Parent)],
            },
            &[],
        );
        let err = flatten(&dir, &parent).unwrap_err();
        assert!(
            matches!(
                err,
                FlattenError::NotInParent {
                    vaddr: 0x3000,
                    pages: 1,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("pagemap-1.img"), "{err}");
    }

    #[test]
    fn a_parent_cut_short_is_refused_rather_than_patched_with_holes() {
        let root = tempfile::tempdir().unwrap();
        let parent = root.path().join(CHAIN_DIR);
        let map = Pagemap {
            pages_id: 1,
            runs: vec![run(0x1000, 3, Held::Present)],
        };
        // Laid out like the parent (the in-place case), whose file lost its last page.
        write_dump(&parent, &map, &[page(b'a'), page(b'b')]);
        let dir = root.path().join("epoch-2");
        write_dump(
            &dir,
            &Pagemap {
                pages_id: 2,
                runs: vec![run(0x1000, 1, Held::Present), run(0x2000, 2, Held::Parent)],
            },
            &[page(b'A')],
        );
        let err = flatten(&dir, &parent).unwrap_err();
        assert!(
            matches!(err, FlattenError::ParentShort { len, expected, .. }
                if len == 2 * PAGE && expected == 3 * PAGE),
            "{err}"
        );
        assert!(err.to_string().contains("pages-1.img"), "{err}");
        // Nothing was moved: the dump is as CRIU left it.
        assert_eq!(std::fs::read(dir.join("pages-2.img")).unwrap(), page(b'A'));
    }

    #[test]
    fn a_chain_serves_only_the_tree_and_agent_that_made_it() {
        let root = tempfile::tempdir().unwrap();
        let me = i32::try_from(std::process::id()).unwrap();
        let images = root.path().join("epoch-1");
        std::fs::create_dir_all(images.join("data")).unwrap();
        std::fs::write(images.join("pages-1.img"), b"x").unwrap();
        assert_eq!(parent(root.path(), me), None);
        keep(&images, root.path(), me).unwrap();
        assert!(!images.exists());
        assert!(!root.path().join(CHAIN_DIR).join("data").exists());
        assert_eq!(parent(root.path(), me), Some(root.path().join(CHAIN_DIR)));
        // Another tree (here: this process's parent) is not served by it.
        let other = nix::unistd::getppid().as_raw();
        assert_eq!(parent(root.path(), other), None);
        // A marker written by another agent process is not trusted.
        std::fs::write(
            root.path().join(CHAIN_DIR).join(MARKER),
            marker_text(me)
                .unwrap()
                .replacen(&std::process::id().to_string(), "1", 1),
        )
        .unwrap();
        assert_eq!(parent(root.path(), me), None);
        drop_chain(root.path());
        assert!(!root.path().join(CHAIN_DIR).exists());
    }
}
