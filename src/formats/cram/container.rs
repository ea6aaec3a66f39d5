//! CRAM files: the header, the containers (found by walking from the first, or named by a
//! `.crai`), and each container's records as BAM record bytes, which the BAM decoder turns into
//! columns exactly as it does for BAM files.
//!
//! The file definition, containers, slices, codecs, reference checks and the BAM encoding are
//! noodles' (`noodles-cram`, `noodles-bam`); this module only decides which containers a scan
//! reads and turns failures into errors that name the file and the container's byte offset.

use std::io::{self, BufRead, BufReader, Read};
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Once};

use datafusion::common::{DataFusionError, Result};
use noodles_cram as cram;
use noodles_fasta as fasta;
use noodles_sam as sam;
use noodles_sam::alignment::io::Write as _;
use noodles_sam::header::record::value::map::reference_sequence::tag::MD5_CHECKSUM;

use crate::bgzf::framing::FileContext;
use crate::bgzf::header::read_header_text;
use crate::error::BamError;
use crate::formats::cram::head::{check_checksums, parse_head, ContainerHead, ContainerSpan, HeadError};
use crate::io::ObjectBytes;
use crate::record::mismatches::append_md_nm;

/// The oldest CRAM major version read: noodles-cram 0.102 reads 3.0 and 3.1 (2.1 container
/// headers have no CRC32, which its reader requires).
const MIN_MAJOR_VERSION: u8 = 3;

/// The magic number a CRAM file starts with.
pub const CRAM_MAGIC: &[u8; 4] = b"CRAM";

/// The bytes read at once at a CRAM file's start: enough for most header containers, whose blocks'
/// checksums are then checked.
const HEADER_READ_BYTES: usize = 256 << 10;

/// The length of a CRAM file's definition (section 6): magic, version, and a 20-byte file id.
pub const FILE_DEFINITION_LEN: usize = 26;

/// An error about the CRAM file `path`.
pub fn cram_error(path: &str, what: impl std::fmt::Display) -> DataFusionError {
    BamError::damaged(path, "", what).into()
}

/// An error about the container of `path` that starts at byte `offset`.
pub fn container_error(path: &str, offset: u64, what: impl std::fmt::Display) -> DataFusionError {
    BamError::damaged(path, format!("in the container at byte {offset}"), what).into()
}

/// A reader that counts the bytes taken from it, so container offsets are known.
struct Counted<R> {
    inner: BufReader<R>,
    taken: u64,
}

impl<R: Read> Counted<R> {
    fn new(inner: BufReader<R>) -> Self {
        Self { inner, taken: 0 }
    }
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.taken += n as u64;
        Ok(n)
    }
}

/// A CRAM file's header and what decoding needs of it.
pub struct CramHeader {
    pub header: sam::Header,
    pub file: Arc<FileContext>,
    /// The byte offset of the first data container (after the file definition and header).
    pub first_container: u64,
}

/// Reads the file definition and the header container of the CRAM stream `inner`.
pub fn read_cram_header<R: Read>(path: &str, inner: R) -> Result<CramHeader> {
    let mut counted = Counted::new(BufReader::with_capacity(HEADER_READ_BYTES, inner));
    let head = counted.inner.fill_buf().map_err(|e| cram_error(path, format!("cannot read it: {e}")))?;
    if !head.starts_with(CRAM_MAGIC) {
        let what = match head {
            [] => "the file is empty: not a CRAM file",
            [0x1f, 0x8b, ..] => "not a CRAM file: it is gzip/BGZF-compressed (a BAM file? use STORED AS BAM)",
            _ => "not a CRAM file: it does not start with the CRAM magic number",
        };
        return Err(cram_error(path, what));
    }
    // Where the header container ends, by its own header (right after the file definition):
    // noodles reads a container cut short as one that ends early, and does not check the
    // header's CRC32.
    // CRAM 2 containers have no CRC32; that version is refused below.
    let checksummed = head.get(4).is_some_and(|&major| major >= MIN_MAJOR_VERSION);
    let header_start = head.get(FILE_DEFINITION_LEN..).filter(|_| checksummed);
    let header_end = match header_start.map(|b| parse_head(b, FILE_DEFINITION_LEN as u64)) {
        Some(Ok(container)) => {
            // Its blocks' CRC32s too (htslib reads every block of it; noodles only the first),
            // when the container is in the bytes read already.
            if let Some(bytes) = head.get(FILE_DEFINITION_LEN..container.end as usize) {
                check_checksums(&container, bytes)
                    .map_err(|what| cram_error(path, format!("invalid CRAM header container: {what}")))?;
            }
            Some(container)
        }
        Some(Err(HeadError::Invalid(what))) => {
            return Err(cram_error(path, format!("invalid CRAM header container: {what}")));
        }
        _ => None,
    };
    let mut reader = cram::io::Reader::new(&mut counted);
    let definition = catch_decode_panic(|| reader.read_file_definition())
        .map_err(|panicked| cram_error(path, format!("invalid CRAM file definition: {panicked}")))?
        .map_err(|e| cram_error(path, format!("invalid CRAM file definition: {e}")))?;
    let version = definition.version();
    if version.major() < MIN_MAJOR_VERSION {
        return Err(cram_error(
            path,
            format!(
                "CRAM {}.{} is not supported (noodles-cram 0.102 reads CRAM 3.0 and 3.1): convert it with \
                 samtools view -C --output-fmt-option version=3.0",
                version.major(),
                version.minor()
            ),
        ));
    }
    let read = catch_decode_panic(|| read_header_container(&mut reader))
        .map_err(|panicked| cram_error(path, format!("invalid CRAM header: {panicked}")))?;
    let header = read.map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => cram_error(path, "the file ends inside its header: it is truncated"),
        _ => cram_error(path, format!("invalid CRAM header: {e}")),
    })?;
    if let Some(expected) = header_end.filter(|h| counted.taken < h.end) {
        return Err(cram_error(
            path,
            format!(
                "the file ends at byte {}, inside its header container, which ends at byte {}: it is truncated",
                counted.taken, expected.end
            ),
        ));
    }
    let refs = header.reference_sequences();
    let file = Arc::new(FileContext {
        reference_names: refs.keys().map(|name| String::from_utf8_lossy(name).into_owned()).collect(),
        reference_lengths: refs.values().map(|r| usize::from(r.length()) as u64).collect(),
    });
    Ok(CramHeader { header, file, first_container: counted.taken })
}

/// Reads the header container's SAM header as htslib does: a bare `@CO` line, which noodles'
/// `read_file_header` refuses, is an empty comment (`bgzf::header::read_header_text`).
fn read_header_container<R: Read>(reader: &mut cram::io::Reader<R>) -> io::Result<sam::Header> {
    let mut header_reader = reader.header_reader();
    let mut container = header_reader.container_reader()?;
    let header = {
        let mut text = container.raw_sam_header_reader()?;
        let header = read_header_text(&mut text)?;
        text.discard_to_end()?;
        header
    };
    container.discard_to_end()?;
    Ok(header)
}

/// The reference sequences CRAM records are decoded against: option `reference`'s FASTA (local,
/// indexed by `.fai`; bgzipped with `.gzi` too), or none.
#[derive(Clone, Default)]
pub struct Reference {
    repository: fasta::Repository,
    /// The FASTA's path, if one was given.
    path: Option<String>,
}

impl Reference {
    /// Opens option `reference`'s FASTA; sequences are read when a container needs them.
    pub fn open(path: Option<&str>) -> Result<Self> {
        let Some(path) = path else { return Ok(Self::default()) };
        if url::Url::parse(path).is_ok_and(|u| u.scheme().len() > 1 && u.scheme() != "file") {
            return Err(DataFusionError::Plan(format!(
                "reference {path}: the reference FASTA must be a local file (download it first)"
            )));
        }
        let reader = fasta::io::indexed_reader::Builder::default().build_from_path(path).map_err(|e| {
            DataFusionError::Plan(format!(
                "reference {path}: cannot open it as an indexed FASTA ({e}); it needs {path}.fai (samtools faidx), \
                 and {path}.gzi too when bgzipped"
            ))
        })?;
        let repository = fasta::Repository::new(fasta::repository::adapters::IndexedReader::new(reader));
        Ok(Self { repository, path: Some(path.to_string()) })
    }

    /// The sequences, read on demand and cached (a clone shares the cache).
    pub fn repository(&self) -> fasta::Repository {
        self.repository.clone()
    }

    /// The FASTA's path, if one was given.
    pub fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }
}

impl std::fmt::Debug for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reference").field("path", &self.path).finish()
    }
}

thread_local! {
    /// How deep this thread is in noodles-cram calls, whose panics on bad data become errors.
    static DECODING: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Installs a panic hook that stays silent for the panics of noodles-cram on bad data, which
/// this crate catches and reports as errors, and passes every other panic to the hook installed
/// before. A panic hook is the process's, so the library never installs one itself: an
/// application calls this once at start (the CLI and the Python module do). Without it, such
/// panics are still errors, and the default hook also prints them.
pub fn quiet_decode_panics() {
    static QUIET_HOOK: Once = Once::new();
    QUIET_HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if DECODING.with(|d| d.get()) == 0 {
                previous(info)
            }
        }));
    });
}

/// Runs `f`, turning a panic inside it into `Err(message)` (see [`quiet_decode_panics`]).
pub fn catch_decode_panic<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    DECODING.with(|d| d.set(d.get() + 1));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    DECODING.with(|d| d.set(d.get() - 1));
    result.map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown failure".to_string())
    })
}

/// MAPQ of unmapped reads, absent in CRAM (its `MQ` series is for mapped reads), is 0 as htslib
/// decodes it (noodles-cram 0.102 leaves it unset, 255). TLEN of mates resolved within a slice
/// is positive for the leftmost one, as the SAM specification and htslib have it (noodles-cram
/// 0.102 gives the sign by record order, `resolve_mates` in `io/reader/container/slice.rs`).
fn follow_htslib(record: &mut [u8]) {
    let i32_at = |b: &[u8], at: usize| i32::from_le_bytes(b[at..at + 4].try_into().expect("a fixed field"));
    let flag = u16::from_le_bytes([record[14], record[15]]);
    if flag & crate::record::FLAG_UNMAPPED != 0 && record[9] == 255 {
        record[9] = 0;
    }
    let (ref_id, pos, next_ref_id, next_pos, tlen) =
        (i32_at(record, 0), i32_at(record, 4), i32_at(record, 20), i32_at(record, 24), i32_at(record, 28));
    if tlen != 0 && ref_id == next_ref_id && pos != next_pos {
        let signed = if pos < next_pos { tlen.abs() } else { -tlen.abs() };
        record[28..32].copy_from_slice(&signed.to_le_bytes());
    }
}

/// The bases of reference sequence `id` of `header` in the FASTA, if it holds them.
fn reference_sequence(header: &CramHeader, reference: &Reference, id: i32) -> Option<Arc<fasta::record::Sequence>> {
    let name = header.file.reference_names.get(usize::try_from(id).ok()?)?;
    reference.repository.get(name.as_bytes())?.ok()
}

/// Where a record read from a CRAM file came from, for messages.
#[derive(Debug, Clone, Copy)]
pub struct CramPosition {
    /// The byte offset of the record's container.
    pub container: u64,
    /// The record's number in its container, from 0.
    pub record: usize,
}

impl std::fmt::Display for CramPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "record {} of the container at byte {}", self.record, self.container)
    }
}

/// Reads the containers of a CRAM file in order, from a given container on.
pub struct ContainerReader {
    path: String,
    base: u64,
    reader: cram::io::Reader<Counted<Box<dyn Read + Send>>>,
    container: cram::io::reader::Container,
    /// The header of the container read last.
    head: Option<ContainerHead>,
}

impl ContainerReader {
    /// A reader whose first container starts at byte `offset` of `bytes`.
    pub fn at(path: &str, bytes: &ObjectBytes, offset: u64) -> Result<Self> {
        let counted = Counted::new(BufReader::with_capacity(1 << 20, bytes.open_at(offset)?));
        Ok(Self {
            path: path.to_string(),
            base: offset,
            reader: cram::io::Reader::new(counted),
            container: Default::default(),
            head: None,
        })
    }

    /// The offset the next container starts at.
    pub fn position(&self) -> u64 {
        self.base + self.reader.get_ref().taken
    }

    /// The header of the container at this reader's position, from the bytes it has streamed
    /// already, when they hold it whole and it ends within the file's `size`; otherwise `None`
    /// ([`read_head`](crate::formats::cram::head::read_head) reads it, or says why it cannot).
    pub fn buffered_head(&mut self, size: u64) -> Option<ContainerHead> {
        let at = self.position();
        let buffered = self.reader.get_mut().inner.fill_buf().ok()?;
        parse_head(buffered, at).ok().filter(|head| head.end <= size)
    }

    /// Reads the container `head` describes whole (without decoding it); the reader is at its
    /// offset.
    pub fn read(&mut self, head: &ContainerHead) -> Result<()> {
        let at = head.offset;
        self.head = None;
        let (reader, container) = (&mut self.reader, &mut self.container);
        let read = catch_decode_panic(|| reader.read_container(container))
            .map_err(|panicked| container_error(&self.path, at, format!("invalid container: {panicked}")))?;
        match read {
            Ok(_) if self.position() == head.end => {
                self.head = Some(*head);
                Ok(())
            }
            Ok(_) => Err(container_error(
                &self.path,
                at,
                format!(
                    "invalid container: its header says it ends at byte {}, its blocks at {}",
                    head.end,
                    self.position()
                ),
            )),
            Err(e) => Err(container_error(&self.path, at, format!("invalid container: {e}"))),
        }
    }

    /// Decodes the container read last, appending each record's BAM encoding (without its
    /// `block_size`) to `data` and its end to `ends`.
    pub fn decode_into(
        &self,
        header: &CramHeader,
        reference: &Reference,
        encoder: &mut noodles_bam::io::Writer<Vec<u8>>,
        data: &mut Vec<u8>,
        ends: &mut Vec<usize>,
    ) -> Result<()> {
        let head = self.head.as_ref().expect("a container was read");
        let (path, offset) = (self.path.as_str(), head.offset);
        let n_ref = header.file.reference_names.len();
        let decoded = catch_decode_panic(|| -> io::Result<()> {
            let compression_header = self.container.compression_header()?;
            for slice in self.container.slices() {
                let slice = slice?;
                let (core, external) = slice.decode_blocks()?;
                let records =
                    |repository| slice.records(repository, &header.header, &compression_header, &core, &external);
                // A slice that decodes without the FASTA does not depend on it (no reference-based
                // compression, or an embedded reference): htslib regenerates MD and NM only for
                // the others.
                let (records, regenerate) = match &reference.path {
                    Some(_) => match catch_decode_panic(|| records(fasta::Repository::default())) {
                        Ok(Ok(records)) => (records, false),
                        _ => (records(reference.repository.clone())?, true),
                    },
                    None => (records(reference.repository.clone())?, false),
                };
                let mut sequence: Option<(i32, Arc<fasta::record::Sequence>)> = None;
                for record in &records {
                    encoder.get_mut().clear();
                    encoder.write_alignment_record(&header.header, record)?;
                    let from = data.len();
                    data.extend_from_slice(&encoder.get_ref()[4..]);
                    follow_htslib(&mut data[from..]);
                    if regenerate {
                        let id = i32::from_le_bytes(data[from..from + 4].try_into().expect("a 4-byte refID"));
                        if sequence.as_ref().is_none_or(|(loaded, _)| *loaded != id) {
                            sequence = reference_sequence(header, reference, id).map(|s| (id, s));
                        }
                        if let Some((_, bases)) = &sequence {
                            append_md_nm(data, from, n_ref, (**bases).as_ref());
                        }
                    }
                    ends.push(data.len());
                }
            }
            Ok(())
        });
        let failure = match decoded {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e.to_string(),
            Err(panicked) => panicked,
        };
        if let Some(missing) = missing_reference(path, head, header, reference) {
            return Err(missing.into());
        }
        Err(container_error(path, offset, format!("cannot decode its records: {failure}")))
    }
}

/// Why decoding the container `head` of the CRAM file `path` failed for want of a reference
/// sequence, if it did: the sequence it is aligned to is not in the reference FASTA, or none was
/// given.
pub fn missing_reference(
    path: &str,
    head: &ContainerHead,
    header: &CramHeader,
    reference: &Reference,
) -> Option<BamError> {
    let ContainerSpan::On { id, .. } = head.span else { return None };
    let (name, map) = header.header.reference_sequences().get_index(id)?;
    let md5 = map.other_fields().get(&MD5_CHECKSUM).map(|m| m.to_string());
    let shown = md5.as_deref().unwrap_or("not in the header");
    let needed = format!("its records are compressed against reference sequence {name} (M5 {shown})");
    let at = format!("in the container at byte {}", head.offset);
    let reason = match &reference.path {
        None => format!(
            "{needed}, and no reference was given: name the FASTA with OPTIONS ('reference' 'path/to/ref.fa') ({at})"
        ),
        Some(fasta) if !matches!(reference.repository.get(name), Some(Ok(_))) => {
            format!("{needed}, which the reference FASTA {fasta} does not hold ({at})")
        }
        Some(_) => return None,
    };
    Some(BamError::MissingReference { file: path.to_string(), sequence: name.to_string(), md5, reason })
}
