//! Reads a bbolt file: checks the meta pages, then walks bucket trees,
//! checking every page and element against the file's bounds before use.
//! Bad bytes are an error naming the page and what is wrong, never a panic.

use std::collections::HashSet;

use super::page::{
    type_name, u32_at, u64_at, Header, Meta, BUCKET_HEADER, ELEMENT, FLAG_BRANCH, FLAG_LEAF,
    HEADER, LEAF_BUCKET, MAX_PAGE_SIZE, MIN_PAGE_SIZE,
};
use crate::etcdfmt::error::EtcdFmtError;

/// Branch depth no sane tree reaches; bounds recursion on a damaged file.
const MAX_DEPTH: usize = 32;

/// A bbolt file in memory (usually a memory map of it).
pub struct Db<'f> {
    file: &'f [u8],
    page_size: usize,
    meta: Meta,
}

/// Where a bucket's entries live.
#[derive(Debug, Clone, Copy)]
pub enum Bucket<'f> {
    /// A tree rooted at this page.
    Tree(u64),
    /// An inline leaf page (the bytes after the bucket header).
    Inline(&'f [u8]),
}

/// One leaf element as read.
pub struct Entry<'f> {
    pub key: &'f [u8],
    pub value: &'f [u8],
    pub is_bucket: bool,
}

fn malformed(place: impl Into<String>, what: impl Into<String>) -> EtcdFmtError {
    EtcdFmtError::Malformed {
        place: place.into(),
        what: what.into(),
    }
}

impl<'f> Db<'f> {
    /// Checks the two meta pages and keeps the valid one with the higher
    /// transaction id (bbolt's rule), after checking its page size and that
    /// the file holds every page it claims.
    pub fn open(file: &'f [u8]) -> Result<Db<'f>, EtcdFmtError> {
        if file.len() < HEADER + super::page::META_LEN {
            return Err(EtcdFmtError::NotASnapshot(format!(
                "{} bytes is too short for a bbolt file",
                file.len()
            )));
        }
        let meta0 = Meta::decode(&file[HEADER..]);
        // Meta 1 sits one page in; meta 0 names the page size, else try
        // the usual ones.
        let sizes: Vec<usize> = match &meta0 {
            Ok(m) => vec![m.page_size as usize],
            Err(_) => vec![4096, 8192, 16384, 65536],
        };
        let meta1 = sizes.iter().find_map(|&ps| {
            file.get(ps + HEADER..)
                .and_then(|b| Meta::decode(b).ok())
                .filter(|m| m.page_size as usize == ps)
        });
        let meta = match (meta0, meta1) {
            (Ok(a), Some(b)) => {
                if b.txid > a.txid {
                    b
                } else {
                    a
                }
            }
            (Ok(a), None) => a,
            (Err(_), Some(b)) => b,
            (Err(why), None) => {
                return Err(EtcdFmtError::NotASnapshot(format!(
                    "page 0 is not a bbolt meta page ({why}) and page 1 is none either"
                )))
            }
        };
        let page_size = meta.page_size as usize;
        if !(MIN_PAGE_SIZE..=MAX_PAGE_SIZE).contains(&page_size) || !page_size.is_power_of_two() {
            return Err(malformed("meta", format!("page size {page_size}")));
        }
        let pages = (file.len() / page_size) as u64;
        if meta.high_water > pages {
            return Err(EtcdFmtError::Truncated(format!(
                "the database has {} pages of {page_size} bytes, the file holds only {pages} \
                 ({} bytes)",
                meta.high_water,
                file.len()
            )));
        }
        if meta.root < 2 || meta.root >= meta.high_water {
            return Err(malformed(
                "meta",
                format!("root page {} outside 2..{}", meta.root, meta.high_water),
            ));
        }
        Ok(Db {
            file,
            page_size,
            meta,
        })
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    pub fn page_size(&self) -> usize {
        self.page_size
    }

    /// The top-level buckets (bbolt's root bucket).
    pub fn root(&self) -> Bucket<'f> {
        Bucket::Tree(self.meta.root)
    }

    /// The bytes of page `id` with its overflow, after checking it lies
    /// inside the database and names itself.
    fn page(&self, id: u64) -> Result<(Header, &'f [u8]), EtcdFmtError> {
        let place = || format!("page {id}");
        if id < 2 || id >= self.meta.high_water {
            return Err(malformed(
                place(),
                format!("outside the database (pages 2..{})", self.meta.high_water),
            ));
        }
        let start = id as usize * self.page_size;
        let header = Header::read(&self.file[start..]);
        if header.id != id {
            return Err(malformed(
                place(),
                format!("header says page {}", header.id),
            ));
        }
        let span = 1 + u64::from(header.overflow);
        if id + span > self.meta.high_water {
            return Err(malformed(
                place(),
                format!(
                    "{} overflow pages run past the database's end",
                    header.overflow
                ),
            ));
        }
        let bytes = &self.file[start..start + span as usize * self.page_size];
        Ok((header, bytes))
    }

    /// Visits a bucket's entries in key order.
    pub fn for_each(
        &self,
        bucket: Bucket<'f>,
        f: &mut dyn FnMut(Entry<'f>) -> Result<(), EtcdFmtError>,
    ) -> Result<(), EtcdFmtError> {
        match bucket {
            Bucket::Inline(page) => {
                if page.len() < HEADER {
                    return Err(malformed("inline bucket", "shorter than a page header"));
                }
                let header = Header::read(page);
                if header.flags != FLAG_LEAF {
                    return Err(malformed(
                        "inline bucket",
                        format!("a {} page, expected a leaf", type_name(header.flags)),
                    ));
                }
                leaf_entries("inline bucket", header, page, f)
            }
            Bucket::Tree(root) => {
                let mut seen = HashSet::new();
                self.walk(root, 0, &mut seen, f)
            }
        }
    }

    fn walk(
        &self,
        id: u64,
        depth: usize,
        seen: &mut HashSet<u64>,
        f: &mut dyn FnMut(Entry<'f>) -> Result<(), EtcdFmtError>,
    ) -> Result<(), EtcdFmtError> {
        if depth > MAX_DEPTH {
            return Err(malformed(
                format!("page {id}"),
                "tree deeper than 32 levels",
            ));
        }
        if !seen.insert(id) {
            return Err(malformed(format!("page {id}"), "reached twice in one tree"));
        }
        let (header, bytes) = self.page(id)?;
        let place = format!("page {id}");
        match header.flags {
            FLAG_LEAF => leaf_entries(&place, header, bytes, f),
            FLAG_BRANCH => {
                let count = header.count as usize;
                if count == 0 {
                    return Err(malformed(place, "branch page with no children"));
                }
                elements_fit(&place, count, bytes.len())?;
                for i in 0..count {
                    let at = HEADER + i * ELEMENT;
                    let pos = u32_at(bytes, at) as usize;
                    let ksize = u32_at(bytes, at + 4) as usize;
                    let child = u64_at(bytes, at + 8);
                    span(&place, i, at, pos, ksize, bytes.len())?;
                    self.walk(child, depth + 1, seen, f)?;
                }
                Ok(())
            }
            other => Err(malformed(
                place,
                format!(
                    "a {} page where a bucket's tree needs a branch or leaf",
                    type_name(other)
                ),
            )),
        }
    }
}

fn elements_fit(place: &str, count: usize, len: usize) -> Result<(), EtcdFmtError> {
    if HEADER + count * ELEMENT > len {
        return Err(malformed(
            place,
            format!("{count} elements do not fit in {len} bytes"),
        ));
    }
    Ok(())
}

/// Checks that element `i` at `at` points inside the page; the key's start.
fn span(
    place: &str,
    i: usize,
    at: usize,
    pos: usize,
    len: usize,
    page_len: usize,
) -> Result<usize, EtcdFmtError> {
    let start = at.checked_add(pos);
    match start.and_then(|s| s.checked_add(len)) {
        Some(end) if end <= page_len => Ok(at + pos),
        _ => Err(malformed(
            place,
            format!("element {i} ({len} bytes at +{pos}) runs past the page's end"),
        )),
    }
}

fn leaf_entries<'f>(
    place: &str,
    header: Header,
    bytes: &'f [u8],
    f: &mut dyn FnMut(Entry<'f>) -> Result<(), EtcdFmtError>,
) -> Result<(), EtcdFmtError> {
    let count = header.count as usize;
    elements_fit(place, count, bytes.len())?;
    for i in 0..count {
        let at = HEADER + i * ELEMENT;
        let flags = u32_at(bytes, at);
        let pos = u32_at(bytes, at + 4) as usize;
        let ksize = u32_at(bytes, at + 8) as usize;
        let vsize = u32_at(bytes, at + 12) as usize;
        let start = span(place, i, at, pos, ksize + vsize, bytes.len())?;
        if flags & !LEAF_BUCKET != 0 {
            return Err(malformed(
                place,
                format!("element {i} has unknown flags {flags:#x}"),
            ));
        }
        f(Entry {
            key: &bytes[start..start + ksize],
            value: &bytes[start + ksize..start + ksize + vsize],
            is_bucket: flags & LEAF_BUCKET != 0,
        })?;
    }
    Ok(())
}

/// The bucket a bucket entry's value names.
pub fn bucket_of<'f>(name: &[u8], value: &'f [u8]) -> Result<Bucket<'f>, EtcdFmtError> {
    let place = || format!("bucket {:?}", String::from_utf8_lossy(name));
    if value.len() < BUCKET_HEADER {
        return Err(malformed(place(), "bucket header shorter than 16 bytes"));
    }
    match u64_at(value, 0) {
        0 => Ok(Bucket::Inline(&value[BUCKET_HEADER..])),
        root => Ok(Bucket::Tree(root)),
    }
}
