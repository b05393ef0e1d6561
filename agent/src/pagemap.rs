//! CRIU's pagemap images (`pagemap-*.img`), read and written without I/O.
//!
//! A pagemap says which pages of one address space (a task's, or a shared-memory
//! segment's) a dump holds, as runs of `nr_pages` pages from `vaddr`: present in the dump's
//! `pages-ID.img` (one after another, in the order of the runs), or left in the parent
//! dump of a memory-tracking chain. The file is CRIU's common image layout: two 32-bit
//! magics, then records of a 32-bit length and a protobuf message, the first a
//! `pagemap_head { pages_id = 1 }`, then `pagemap_entry { vaddr = 1, nr_pages = 2,
//! in_parent = 3 (older CRIU), flags = 4 }`.

/// CRIU's common image magic, first in every image but the inventory.
const COMMON_MAGIC: u32 = 0x5456_4319;
/// The pagemap image's own magic.
const PAGEMAP_MAGIC: u32 = 0x5608_4025;
/// The pages are in the parent dump.
const PE_PARENT: u32 = 1 << 0;
/// The pages may be restored lazily (post-copy). CRIU sets it beside `PE_PRESENT` on
/// private anonymous memory in any dump; alone, the pages are in neither dump.
const PE_LAZY: u32 = 1 << 1;
/// The pages are in this dump's pages file.
const PE_PRESENT: u32 = 1 << 2;
/// Page size CRIU writes pages in on the hosts we run on.
pub const PAGE: u64 = 4096;
/// Largest record accepted (a pagemap entry is a few bytes).
const RECORD_CAP: usize = 1 << 10;

/// Where a run's pages are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// In this dump's pages file.
    Present,
    /// In the parent dump.
    Parent,
}

/// One run of pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// First page's address.
    pub vaddr: u64,
    /// Number of pages.
    pub nr_pages: u32,
    /// Where they are.
    pub held: Held,
}

/// A decoded pagemap image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pagemap {
    /// Which `pages-ID.img` holds the present pages.
    pub pages_id: u32,
    /// The runs, in file order.
    pub runs: Vec<Run>,
}

impl Pagemap {
    /// Pages in the runs held by this dump.
    pub fn present_pages(&self) -> u64 {
        self.count(Held::Present)
    }

    /// Pages in all runs.
    pub fn total_pages(&self) -> u64 {
        self.runs.iter().map(|r| u64::from(r.nr_pages)).sum()
    }

    /// Whether any run is left in the parent.
    pub fn uses_parent(&self) -> bool {
        self.count(Held::Parent) > 0
    }

    fn count(&self, held: Held) -> u64 {
        self.runs
            .iter()
            .filter(|r| r.held == held)
            .map(|r| u64::from(r.nr_pages))
            .sum()
    }
}

/// Why a pagemap image could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PagemapError {
    /// Not a pagemap image.
    #[error("not a CRIU pagemap image (magic {0:#x}, {1:#x})")]
    Magic(u32, u32),
    /// Cut short.
    #[error("truncated at byte {0}")]
    Truncated(usize),
    /// A record larger than any pagemap record.
    #[error("record at byte {at} is {len} bytes, over the {RECORD_CAP}-byte cap")]
    TooLarge {
        /// Offset of its length.
        at: usize,
        /// Its length.
        len: usize,
    },
    /// A malformed protobuf field.
    #[error("record at byte {0}: malformed field")]
    Field(usize),
    /// A required field is missing.
    #[error("record at byte {at}: no {field}")]
    Missing {
        /// Offset of the record.
        at: usize,
        /// The field.
        field: &'static str,
    },
    /// Pages left to a lazy-pages server (post-copy), in neither dump.
    #[error("record at byte {0}: pages left to a lazy-pages server are not supported")]
    Lazy(usize),
}

/// Decodes a pagemap image.
pub fn decode(bytes: &[u8]) -> Result<Pagemap, PagemapError> {
    let word = |at: usize| -> Result<u32, PagemapError> {
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or(PagemapError::Truncated(at))
    };
    let (m1, m2) = (word(0)?, word(4)?);
    if (m1, m2) != (COMMON_MAGIC, PAGEMAP_MAGIC) {
        return Err(PagemapError::Magic(m1, m2));
    }
    let mut at = 8;
    let mut head: Option<u32> = None;
    let mut runs = Vec::new();
    while at < bytes.len() {
        let len = word(at)? as usize;
        if len > RECORD_CAP {
            return Err(PagemapError::TooLarge { at, len });
        }
        let body = bytes
            .get(at + 4..at + 4 + len)
            .ok_or(PagemapError::Truncated(at))?;
        let fields = fields(body).ok_or(PagemapError::Field(at))?;
        let get = |n: u64| fields.iter().find(|(f, _)| *f == n).map(|(_, v)| *v);
        match head {
            None => {
                let id = get(1).ok_or(PagemapError::Missing {
                    at,
                    field: "pages_id",
                })?;
                head = Some(u32::try_from(id).map_err(|_| PagemapError::Field(at))?);
            }
            Some(_) => {
                let vaddr = get(1).ok_or(PagemapError::Missing { at, field: "vaddr" })?;
                let nr = get(2).ok_or(PagemapError::Missing {
                    at,
                    field: "nr_pages",
                })?;
                let nr_pages = u32::try_from(nr).map_err(|_| PagemapError::Field(at))?;
                let flags = match (get(4), get(3)) {
                    (Some(f), _) => f as u32,
                    (None, Some(1)) => PE_PARENT,
                    (None, _) => PE_PRESENT,
                };
                if flags & PE_LAZY != 0 && flags & (PE_PRESENT | PE_PARENT) == 0 {
                    return Err(PagemapError::Lazy(at));
                }
                let held = if flags & PE_PRESENT != 0 {
                    Held::Present
                } else if flags & PE_PARENT != 0 {
                    Held::Parent
                } else {
                    return Err(PagemapError::Missing { at, field: "flags" });
                };
                runs.push(Run {
                    vaddr,
                    nr_pages,
                    held,
                });
            }
        }
        at += 4 + len;
    }
    let pages_id = head.ok_or(PagemapError::Missing {
        at: 8,
        field: "pagemap_head",
    })?;
    Ok(Pagemap { pages_id, runs })
}

/// Encodes a pagemap image, every run with its flags (as CRIU 3 writes them; without
/// `PE_LAZY`, which only a lazy restore reads).
pub fn encode(map: &Pagemap) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + map.runs.len() * 20);
    out.extend_from_slice(&COMMON_MAGIC.to_le_bytes());
    out.extend_from_slice(&PAGEMAP_MAGIC.to_le_bytes());
    let mut record = |fields: &[(u64, u64)]| {
        let mut body = Vec::new();
        for &(n, v) in fields {
            varint(&mut body, n << 3);
            varint(&mut body, v);
        }
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
    };
    record(&[(1, u64::from(map.pages_id))]);
    for r in &map.runs {
        let flags = match r.held {
            Held::Present => PE_PRESENT,
            Held::Parent => PE_PARENT,
        };
        record(&[
            (1, r.vaddr),
            (2, u64::from(r.nr_pages)),
            (4, u64::from(flags)),
        ]);
    }
    out
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The varint fields of a protobuf message as (field number, value); fields of other wire
/// types are skipped. `None` when malformed.
fn fields(mut body: &[u8]) -> Option<Vec<(u64, u64)>> {
    fn read_varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = b.split_first()?;
            *b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let mut out = Vec::new();
    while !body.is_empty() {
        let key = read_varint(&mut body)?;
        let skip = match key & 7 {
            0 => {
                out.push((key >> 3, read_varint(&mut body)?));
                0
            }
            1 => 8,
            2 => usize::try_from(read_varint(&mut body)?).ok()?,
            5 => 4,
            _ => return None,
        };
        body = body.get(skip..)?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain_map() -> Pagemap {
        Pagemap {
            pages_id: 3,
            runs: vec![
                Run {
                    vaddr: 0x40_0000,
                    nr_pages: 5,
                    held: Held::Parent,
                },
                Run {
                    vaddr: 0x40_5000,
                    nr_pages: 1,
                    held: Held::Present,
                },
                Run {
                    vaddr: 0x7fff_f000_0000,
                    nr_pages: 300,
                    held: Held::Parent,
                },
            ],
        }
    }

    #[test]
    fn a_pagemap_reads_back_as_written() {
        let map = chain_map();
        let bytes = encode(&map);
        assert_eq!(decode(&bytes).unwrap(), map);
        assert_eq!(map.present_pages(), 1);
        assert_eq!(map.total_pages(), 306);
        assert!(map.uses_parent());
    }

    #[test]
    fn older_criu_in_parent_field_and_unknown_fields_are_understood() {
        // The two magics as CRIU writes them on x86-64 (`crit` shows "PAGEMAP").
        let mut bytes = vec![0x19, 0x43, 0x56, 0x54, 0x25, 0x40, 0x08, 0x56];
        // head: pages_id 7 and an unknown length-delimited field 9 ("ab").
        let head = [0x08, 7, 0x4a, 2, b'a', b'b'];
        bytes.extend_from_slice(&(head.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&head);
        // entry: vaddr 0x1000, nr_pages 2, in_parent true, no flags.
        let entry = [0x08, 0x80, 0x20, 0x10, 2, 0x18, 1];
        bytes.extend_from_slice(&(entry.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&entry);
        let map = decode(&bytes).unwrap();
        assert_eq!(map.pages_id, 7);
        assert_eq!(
            map.runs,
            [Run {
                vaddr: 0x1000,
                nr_pages: 2,
                held: Held::Parent
            }]
        );
    }

    #[test]
    fn damaged_images_are_refused_with_where() {
        let bytes = encode(&chain_map());
        assert!(matches!(
            decode(&bytes[..bytes.len() - 1]),
            Err(PagemapError::Truncated(_))
        ));
        let mut other = bytes.clone();
        other[4] ^= 1;
        assert!(matches!(decode(&other), Err(PagemapError::Magic(..))));
        let mut huge = bytes[..8].to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decode(&huge),
            Err(PagemapError::TooLarge {
                at: 8,
                len: u32::MAX as usize
            })
        );
        let mut lazy = bytes[..8].to_vec();
        for body in [&[0x08u8, 1][..], &[0x08, 1, 0x10, 1, 0x20, 2]] {
            lazy.extend_from_slice(&(body.len() as u32).to_le_bytes());
            lazy.extend_from_slice(body);
        }
        assert!(matches!(decode(&lazy), Err(PagemapError::Lazy(_))));
        // Present and lazy, as CRIU marks private anonymous memory: present.
        let mut present = bytes[..8].to_vec();
        for body in [&[0x08u8, 1][..], &[0x08, 1, 0x10, 1, 0x20, 6]] {
            present.extend_from_slice(&(body.len() as u32).to_le_bytes());
            present.extend_from_slice(body);
        }
        assert_eq!(decode(&present).unwrap().runs[0].held, Held::Present);
        // A varint that never ends.
        let mut endless = bytes[..8].to_vec();
        let body = [
            0x08u8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ];
        endless.extend_from_slice(&(body.len() as u32).to_le_bytes());
        endless.extend_from_slice(&body);
        assert!(matches!(decode(&endless), Err(PagemapError::Field(8))));
    }
}
