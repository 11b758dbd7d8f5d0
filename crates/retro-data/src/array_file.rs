//! Our own binary arrays: a 128-byte versioned header, then the elements in little-endian row-major order, read back
//! through a memory map.
//!
//! Header layout (every field little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `RETROARR` |
//! | 8 | 4 | format version (1) |
//! | 12 | 4 | element type code ([`DType`]) |
//! | 16 | 4 | number of dimensions (1..=4) |
//! | 20 | 4 | reserved (0) |
//! | 24 | 32 | shape, four u64 (unused dimensions are 1) |
//! | 56 | 24 | kind: what the array holds, NUL-padded ASCII, e.g. `chunk-tokens` |
//! | 80 | 48 | reserved (0) |
//!
//! Opening checks the magic, the version, the element type, the kind and the file length, so that a truncated,
//! foreign or mismatched file is a one-line error instead of garbage (llm.c checks its files the same way).

use crate::atomic_write::{commit_temporary, temporary_path};
use anyhow::{bail, Context, Result};
use memmap2::Mmap;
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

pub const MAGIC: &[u8; 8] = b"RETROARR";
pub const FORMAT_VERSION: u32 = 1;
pub const HEADER_BYTES: usize = 128;
const KIND_BYTES: usize = 24;

/// Element types an array file can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    U16 = 1,
    U32 = 2,
    I64 = 3,
    F32 = 4,
    F16 = 5,
    U64 = 6,
}

impl DType {
    fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            1 => Self::U16,
            2 => Self::U32,
            3 => Self::I64,
            4 => Self::F32,
            5 => Self::F16,
            6 => Self::U64,
            _ => return None,
        })
    }

    pub fn size(self) -> usize {
        match self {
            Self::U16 | Self::F16 => 2,
            Self::U32 | Self::F32 => 4,
            Self::I64 | Self::U64 => 8,
        }
    }
}

/// A plain-old-data element type. Implemented only for types where every bit pattern is a valid value.
///
/// # Safety
/// Implementors must be `Copy`, have no padding and accept any bit pattern.
pub unsafe trait Element: Copy + Send + Sync + 'static {
    const DTYPE: DType;
}
unsafe impl Element for u16 {
    const DTYPE: DType = DType::U16;
}
unsafe impl Element for u32 {
    const DTYPE: DType = DType::U32;
}
unsafe impl Element for i64 {
    const DTYPE: DType = DType::I64;
}
unsafe impl Element for f32 {
    const DTYPE: DType = DType::F32;
}
unsafe impl Element for half::f16 {
    const DTYPE: DType = DType::F16;
}
unsafe impl Element for u64 {
    const DTYPE: DType = DType::U64;
}

fn as_bytes<T: Element>(values: &[T]) -> &[u8] {
    // Safety: `Element` types are plain old data without padding.
    unsafe {
        std::slice::from_raw_parts(values.as_ptr() as *const u8, std::mem::size_of_val(values))
    }
}

fn header(kind: &str, dtype: DType, shape: &[usize]) -> [u8; HEADER_BYTES] {
    assert!(
        !shape.is_empty() && shape.len() <= 4,
        "array files have 1 to 4 dimensions"
    );
    assert!(
        kind.len() <= KIND_BYTES && kind.is_ascii(),
        "array kind must be short ASCII"
    );
    let mut h = [0u8; HEADER_BYTES];
    h[0..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(dtype as u32).to_le_bytes());
    h[16..20].copy_from_slice(&(shape.len() as u32).to_le_bytes());
    for i in 0..4 {
        let dim = shape.get(i).copied().unwrap_or(1) as u64;
        h[24 + 8 * i..32 + 8 * i].copy_from_slice(&dim.to_le_bytes());
    }
    h[56..56 + kind.len()].copy_from_slice(kind.as_bytes());
    h
}

/// Writes a whole array atomically.
pub fn write_array<T: Element>(
    path: &Path,
    kind: &str,
    shape: &[usize],
    values: &[T],
) -> Result<()> {
    assert_eq!(
        shape.iter().product::<usize>(),
        values.len(),
        "shape does not match values"
    );
    let mut writer = ArrayWriter::<T>::create(path, kind, &shape[1..])?;
    writer.push(values)?;
    writer.finish()
}

/// Streams rows into an array file whose first dimension is unknown until the end.
///
/// Rows go to `NAME.tmp`; [`ArrayWriter::finish`] writes the final shape into the header and renames the file, so an
/// interrupted writer leaves no file under the final name.
pub struct ArrayWriter<T: Element> {
    path: PathBuf,
    kind: String,
    row_shape: Vec<usize>,
    row_len: usize,
    n_values: usize,
    out: BufWriter<File>,
    _marker: PhantomData<T>,
}

impl<T: Element> ArrayWriter<T> {
    /// `row_shape` is the shape of one row (empty for a 1-d array).
    pub fn create(path: &Path, kind: &str, row_shape: &[usize]) -> Result<Self> {
        let tmp = temporary_path(path);
        let file =
            File::create(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let mut shape = vec![0];
        shape.extend_from_slice(row_shape);
        out.write_all(&header(kind, T::DTYPE, &shape))?;
        Ok(Self {
            path: path.to_path_buf(),
            kind: kind.to_string(),
            row_shape: row_shape.to_vec(),
            row_len: row_shape.iter().product(),
            n_values: 0,
            out,
            _marker: PhantomData,
        })
    }

    /// Appends whole rows (`values.len()` must be a multiple of the row length).
    pub fn push(&mut self, values: &[T]) -> Result<()> {
        assert_eq!(
            values.len() % self.row_len.max(1),
            0,
            "partial row pushed to {}",
            self.path.display()
        );
        self.out
            .write_all(as_bytes(values))
            .with_context(|| format!("{}: write failed", temporary_path(&self.path).display()))?;
        self.n_values += values.len();
        Ok(())
    }

    pub fn rows_written(&self) -> usize {
        self.n_values / self.row_len.max(1)
    }

    /// Writes the final shape, syncs and renames the file into place.
    pub fn finish(mut self) -> Result<()> {
        let mut shape = vec![self.rows_written()];
        shape.extend_from_slice(&self.row_shape);
        self.out.flush()?;
        let mut file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&header(&self.kind, T::DTYPE, &shape))?;
        file.sync_all()?;
        drop(file);
        commit_temporary(&self.path)
    }
}

/// A read-only, memory-mapped array file, checked on open.
pub struct Array<T: Element> {
    mmap: Mmap,
    shape: Vec<usize>,
    path: PathBuf,
    _marker: PhantomData<T>,
}

impl<T: Element> Array<T> {
    /// Opens `path`, checking that it is a retro array of element type `T` holding `kind`.
    pub fn open(path: &Path, kind: &str) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
        // Safety: the file is opened read-only and our writers only ever replace files by rename.
        let mmap = unsafe { Mmap::map(&file) }
            .with_context(|| format!("{}: cannot map", path.display()))?;
        let shape = check_header(&mmap, path, kind, T::DTYPE)?;
        Ok(Self {
            mmap,
            shape,
            path: path.to_path_buf(),
            _marker: PhantomData,
        })
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of rows (the first dimension).
    pub fn n_rows(&self) -> usize {
        self.shape[0]
    }

    /// Elements per row.
    pub fn row_len(&self) -> usize {
        self.shape[1..].iter().product()
    }

    pub fn as_slice(&self) -> &[T] {
        let n: usize = self.shape.iter().product();
        let bytes = &self.mmap[HEADER_BYTES..HEADER_BYTES + n * T::DTYPE.size()];
        // Safety: the length was checked on open, the map is page-aligned and the header keeps 128-byte alignment.
        unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const T, n) }
    }

    pub fn row(&self, i: usize) -> &[T] {
        let len = self.row_len();
        &self.as_slice()[i * len..(i + 1) * len]
    }

    pub fn rows(&self, range: std::ops::Range<usize>) -> &[T] {
        let len = self.row_len();
        &self.as_slice()[range.start * len..range.end * len]
    }
}

fn check_header(bytes: &[u8], path: &Path, kind: &str, dtype: DType) -> Result<Vec<usize>> {
    let name = path.display();
    if bytes.len() < HEADER_BYTES || &bytes[0..8] != MAGIC {
        bail!("{name}: not a retro array file (bad magic); the file is foreign or corrupt");
    }
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
    let version = u32_at(8);
    if version != FORMAT_VERSION {
        bail!("{name}: array format version {version}, this build reads version {FORMAT_VERSION}; rebuild the file with this version of retro");
    }
    let found_kind = String::from_utf8_lossy(&bytes[56..56 + KIND_BYTES])
        .trim_end_matches('\0')
        .to_string();
    if found_kind != kind {
        bail!("{name}: holds {found_kind:?}, expected {kind:?}");
    }
    let found_dtype = DType::from_code(u32_at(12));
    if found_dtype != Some(dtype) {
        bail!("{name}: element type {found_dtype:?}, expected {dtype:?}");
    }
    let ndim = u32_at(16) as usize;
    if !(1..=4).contains(&ndim) {
        bail!("{name}: corrupt header ({ndim} dimensions)");
    }
    let shape: Vec<usize> = (0..ndim).map(|i| u64_at(24 + 8 * i) as usize).collect();
    let expected = shape
        .iter()
        .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d))
        .and_then(|n| n.checked_add(HEADER_BYTES));
    if expected != Some(bytes.len()) {
        bail!(
            "{name}: truncated or corrupt: header says shape {shape:?} ({} bytes), file has {} bytes",
            expected.map_or("overflow".to_string(), |n| n.to_string()),
            bytes.len()
        );
    }
    Ok(shape)
}

/// Reads only the shape of an array file, checking its header.
pub fn read_shape(path: &Path, kind: &str, dtype: DType) -> Result<Vec<usize>> {
    let file = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mmap =
        unsafe { Mmap::map(&file) }.with_context(|| format!("{}: cannot map", path.display()))?;
    check_header(&mmap, path, kind, dtype)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_checks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.bin");
        write_array::<u16>(&path, "test-kind", &[2, 3], &[1, 2, 3, 4, 5, 6]).unwrap();
        let a = Array::<u16>::open(&path, "test-kind").unwrap();
        assert_eq!(a.shape(), &[2, 3]);
        assert_eq!(a.row(1), &[4, 5, 6]);

        let err = Array::<u32>::open(&path, "test-kind")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("element type"), "{err}");
        let err = Array::<u16>::open(&path, "other")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("expected \"other\""), "{err}");

        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 2]).unwrap();
        let err = Array::<u16>::open(&path, "test-kind")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("truncated"), "{err}");

        std::fs::write(&path, b"{\"json\": true}").unwrap();
        let err = Array::<u16>::open(&path, "test-kind")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("bad magic"), "{err}");
    }

    #[test]
    fn unfinished_writer_leaves_no_final_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.bin");
        let mut w = ArrayWriter::<u32>::create(&path, "k", &[2]).unwrap();
        w.push(&[1, 2, 3, 4]).unwrap();
        drop(w);
        assert!(!path.exists());
        let mut w = ArrayWriter::<u32>::create(&path, "k", &[2]).unwrap();
        w.push(&[1, 2, 3, 4]).unwrap();
        w.finish().unwrap();
        assert_eq!(Array::<u32>::open(&path, "k").unwrap().shape(), &[2, 2]);
    }
}
