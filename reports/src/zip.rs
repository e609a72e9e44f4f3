//! A minimal ZIP writer (deflate, UTF-8 names, no ZIP64) for the report's CSV tables.
//!
//! Written here rather than taken from the `zip` crate: that crate's dependencies change
//! feature sets (zeroize, getrandom) shared with DataFusion's TLS stack, which forces a
//! rebuild of the whole tree (≈ 48 min on 2 cores) for ~70 lines of format. `flate2` and
//! `crc32fast` are already in the tree with the features used here.

use std::io::Write as _;

use flate2::Compression;
use flate2::write::DeflateEncoder;

/// General-purpose flag bit 11: the file name is UTF-8.
const UTF8_NAMES: u16 = 1 << 11;
const DEFLATE: u16 = 8;
/// Version 2.0: deflate.
const VERSION: u16 = 20;
/// MS-DOS date of 1980-01-01 (the format's epoch; the tables have no meaningful mtime).
const DOS_DATE: u16 = (1 << 5) | 1;

struct Entry {
    name: String,
    crc: u32,
    compressed: u32,
    size: u32,
    offset: u32,
}

/// Builds an archive in memory.
#[derive(Default)]
pub struct ZipWriter {
    out: Vec<u8>,
    entries: Vec<Entry>,
}

fn u32_len(n: usize, what: &str) -> Result<u32, String> {
    u32::try_from(n).map_err(|_| format!("{what} is over 4 GiB, which needs ZIP64"))
}

impl ZipWriter {
    /// Adds one file, deflated.
    pub fn add(&mut self, name: &str, data: &[u8]) -> Result<(), String> {
        let mut encoder = DeflateEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(data).map_err(|e| e.to_string())?;
        let deflated = encoder.finish().map_err(|e| e.to_string())?;
        let entry = Entry {
            name: name.to_string(),
            crc: crc32fast::hash(data),
            compressed: u32_len(deflated.len(), name)?,
            size: u32_len(data.len(), name)?,
            offset: u32_len(self.out.len(), "the archive")?,
        };
        let name_len = u16::try_from(name.len()).map_err(|_| "file name too long".to_string())?;
        let out = &mut self.out;
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        for v in [VERSION, UTF8_NAMES, DEFLATE, 0, DOS_DATE] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in [entry.crc, entry.compressed, entry.size] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&name_len.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&deflated);
        self.entries.push(entry);
        Ok(())
    }

    /// Writes the central directory; the archive's bytes.
    pub fn finish(mut self) -> Result<Vec<u8>, String> {
        let directory_start = u32_len(self.out.len(), "the archive")?;
        let out = &mut self.out;
        for entry in &self.entries {
            out.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
            for v in [VERSION, VERSION, UTF8_NAMES, DEFLATE, 0, DOS_DATE] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            for v in [entry.crc, entry.compressed, entry.size] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            // Name length, extra length, comment length, disk, internal attributes.
            for v in [entry.name.len() as u16, 0, 0, 0, 0] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&0u32.to_le_bytes()); // external attributes
            out.extend_from_slice(&entry.offset.to_le_bytes());
            out.extend_from_slice(entry.name.as_bytes());
        }
        let directory_size = u32_len(out.len(), "the archive")? - directory_start;
        let count = u16::try_from(self.entries.len()).map_err(|_| "too many files".to_string())?;
        out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
        for v in [0u16, 0, count, count] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&directory_size.to_le_bytes());
        out.extend_from_slice(&directory_start.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        Ok(self.out)
    }
}

/// Reads back the files of an archive this module wrote (for tests): `(name, data)`.
#[cfg(test)]
pub fn read(archive: &[u8]) -> Vec<(String, Vec<u8>)> {
    use std::io::Read as _;
    let u16_at = |i: usize| u16::from_le_bytes([archive[i], archive[i + 1]]) as usize;
    let u32_at = |i: usize| u32::from_le_bytes(archive[i..i + 4].try_into().unwrap()) as usize;
    let end = archive.len() - 22;
    assert_eq!(u32_at(end), 0x0605_4b50, "end of central directory");
    let (count, mut at) = (u16_at(end + 10), u32_at(end + 16));
    let mut files = Vec::new();
    for _ in 0..count {
        assert_eq!(u32_at(at), 0x0201_4b50, "central directory entry");
        let (crc, compressed, size) = (u32_at(at + 16), u32_at(at + 20), u32_at(at + 24));
        let name_len = u16_at(at + 28);
        let name = String::from_utf8(archive[at + 46..at + 46 + name_len].to_vec()).unwrap();
        let local = u32_at(at + 42);
        assert_eq!(u32_at(local), 0x0403_4b50, "local header");
        let data_at = local + 30 + u16_at(local + 26) + u16_at(local + 28);
        let mut data = Vec::new();
        flate2::read::DeflateDecoder::new(&archive[data_at..data_at + compressed])
            .read_to_end(&mut data)
            .unwrap();
        assert_eq!(data.len(), size);
        assert_eq!(crc32fast::hash(&data) as usize, crc, "crc of {name}");
        files.push((name, data));
        at += 46 + name_len;
    }
    files
}
