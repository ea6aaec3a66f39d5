//! SAM text files: the header, and each record line as BAM record bytes, which the BAM decoder
//! turns into columns exactly as it does for BAM files. Parsing and the BAM encoding are noodles'
//! (`noodles-sam`, `noodles-bam`).

use std::io::{self, BufRead, Read};
use std::sync::Arc;

use datafusion::common::{DataFusionError, Result};
use noodles_bgzf as bgzf;
use noodles_sam as sam;
use noodles_sam::alignment::io::Write as _;

use crate::bgzf::framing::{absolute, show_virtual, FileContext, FileReader};
use crate::bgzf::header::read_header_text;
use crate::error::BamError;
use crate::io::ObjectBytes;

/// An error about the SAM file `path`.
pub fn sam_error(path: &str, what: impl std::fmt::Display) -> DataFusionError {
    BamError::damaged(path, "", what).into()
}

/// A SAM file's lines, plain or BGZF-compressed (`.sam.gz`), with the position of each line.
pub struct SamLines {
    reader: LineReader,
    /// Where the next line starts: its text offset in plain SAM, its virtual position (as a
    /// `u64`) in BGZF-compressed SAM.
    pub offset: u64,
}

enum LineReader {
    Plain(io::BufReader<Box<dyn Read + Send>>),
    /// A BGZF reader started at file byte `base`.
    Bgzf {
        reader: FileReader,
        base: u64,
    },
}

impl SamLines {
    /// The lines of the SAM file `bytes` from its start, plain or BGZF-compressed (told apart by
    /// its first bytes).
    pub fn open(path: &str, bytes: &ObjectBytes) -> Result<Self> {
        let mut first = io::BufReader::new(bytes.open_at(0)?);
        let head = first.fill_buf().map_err(|e| sam_error(path, format!("cannot read it: {e}")))?;
        let gzip = is_gzip(head);
        Ok(Self::from_start(Box::new(first), gzip))
    }

    /// The lines of a SAM file's stream `inner` from its start: BGZF-compressed when
    /// `compressed`.
    pub fn from_start(inner: Box<dyn Read + Send>, compressed: bool) -> Self {
        match compressed {
            true => Self::bgzf(bgzf::io::Reader::new(inner), 0),
            false => Self::plain(inner, 0),
        }
    }

    /// The lines of plain SAM text from the stream `inner`, which starts at text offset `offset`.
    pub fn plain(inner: Box<dyn Read + Send>, offset: u64) -> Self {
        Self { reader: LineReader::Plain(io::BufReader::with_capacity(1 << 20, inner)), offset }
    }

    /// The lines of BGZF-compressed SAM from `reader`, whose positions are relative to file
    /// byte `base`.
    pub fn bgzf(reader: FileReader, base: u64) -> Self {
        let offset = u64::from(absolute(base, reader.virtual_position()));
        Self { reader: LineReader::Bgzf { reader, base }, offset }
    }

    /// Whether the positions are virtual positions (BGZF-compressed SAM).
    pub fn is_bgzf(&self) -> bool {
        matches!(self.reader, LineReader::Bgzf { .. })
    }

    /// The position `at` (an [`offset`](Self::offset) of these lines) as messages show it.
    pub fn show(&self, at: u64) -> String {
        show_position(self.is_bgzf(), at)
    }

    /// Reads the next line (with its newline, if any) into `line`; `false` at the end.
    pub fn next_line(&mut self, path: &str, line: &mut Vec<u8>) -> Result<bool> {
        line.clear();
        let at = self.offset;
        let read = match &mut self.reader {
            LineReader::Plain(reader) => reader.read_until(b'\n', line).inspect(|&n| self.offset += n as u64),
            LineReader::Bgzf { reader, base } => reader.read_until(b'\n', line).inspect(|_| {
                // Where the next line starts; (next block, 0) when this one ended a block.
                self.offset = u64::from(absolute(*base, reader.virtual_position()));
            }),
        };
        let n = read.map_err(|e| {
            let at = show_position(self.is_bgzf(), at);
            match e.kind() {
                io::ErrorKind::UnexpectedEof => {
                    sam_error(path, format!("the file ends inside a BGZF block, in the line at {at}: it is truncated"))
                }
                _ => sam_error(path, format!("cannot read it at {at}: {e}")),
            }
        })?;
        Ok(n > 0)
    }

    /// Whether the next line starts with `@` (a header line).
    fn at_header_line(&mut self) -> io::Result<bool> {
        let head = match &mut self.reader {
            LineReader::Plain(reader) => reader.fill_buf()?,
            LineReader::Bgzf { reader, .. } => reader.fill_buf()?,
        };
        Ok(head.first() == Some(&b'@'))
    }
}

/// A line position as messages show it: a text byte offset, or a virtual offset for BGZF data.
pub fn show_position(bgzf: bool, at: u64) -> String {
    match bgzf {
        true => show_virtual(bgzf::VirtualPosition::from(at)),
        false => format!("text byte {at}"),
    }
}

/// Whether a file's first bytes are gzip (BGZF) data.
pub fn is_gzip(head: &[u8]) -> bool {
    head.starts_with(&[0x1f, 0x8b])
}

/// A SAM file's header and what decoding needs of it.
pub struct SamHeader {
    pub header: sam::Header,
    pub file: Arc<FileContext>,
    /// Where the first record line starts (a [`SamLines::offset`]).
    pub header_end: u64,
    /// Whether the file is BGZF-compressed (its positions are virtual positions).
    pub bgzf: bool,
}

/// Reads the header lines (`@...`) at the start of `lines`, leaving it at the first record.
pub fn read_sam_text_header(path: &str, lines: &mut SamLines) -> Result<SamHeader> {
    let mut text = Vec::new();
    let mut line = Vec::new();
    while lines.at_header_line().map_err(|e| sam_error(path, format!("cannot read it: {e}")))? {
        lines.next_line(path, &mut line)?;
        text.extend_from_slice(&line);
    }
    let header = read_header_text(&text[..]).map_err(|e| sam_error(path, format!("invalid SAM header: {e}")))?;
    let refs = header.reference_sequences();
    let file = Arc::new(FileContext {
        reference_names: refs.keys().map(|name| String::from_utf8_lossy(name).into_owned()).collect(),
        reference_lengths: refs.values().map(|r| usize::from(r.length()) as u64).collect(),
    });
    Ok(SamHeader { header, file, header_end: lines.offset, bgzf: lines.is_bgzf() })
}

/// Encodes SAM record lines as BAM records, with noodles' parser and encoder.
pub struct LineEncoder {
    writer: noodles_bam::io::Writer<Vec<u8>>,
    record: sam::Record,
    record_buf: sam::alignment::RecordBuf,
}

impl Default for LineEncoder {
    fn default() -> Self {
        Self {
            writer: noodles_bam::io::Writer::from(Vec::new()),
            record: sam::Record::default(),
            record_buf: sam::alignment::RecordBuf::default(),
        }
    }
}

/// Refuses a SEQ the SAM specification does not allow (`\*|[A-Za-z=.]+`, section 1.4), which
/// noodles would encode as `N`s: a NUL or a tab inside the field is damage, not a base.
fn check_sequence(sequence: &[u8]) -> io::Result<()> {
    match sequence.iter().find(|&&b| !(b.is_ascii_alphabetic() || b == b'=' || b == b'.')) {
        Some(&b) if sequence != b"*" => {
            Err(io::Error::new(io::ErrorKind::InvalidData, format!("SEQ holds byte {b:#04x}, which is not a base")))
        }
        _ => Ok(()),
    }
}

/// Refuses a tag name that is not two printable characters, as htslib's parser does ("invalid
/// aux tag id"). htslib takes names the SAM specification forbids (`A!`, `0X`; htslib-test's
/// `auxf#values.sam` has them), and so does this. Where noodles' lazy record cannot go on (an
/// empty `B` array, see [`LineEncoder::encode`]), the check stops; the encoder reports the rest.
fn check_tags(record: &sam::Record) -> io::Result<()> {
    for field in record.data().iter() {
        let Ok((tag, _)) = field else { break };
        let [a, b] = *tag.as_ref();
        if !(a.is_ascii_graphic() && b.is_ascii_graphic()) {
            let name = String::from_utf8_lossy(&[a, b]).into_owned();
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("tag {name:?} is not two printable characters"),
            ));
        }
    }
    Ok(())
}

impl LineEncoder {
    /// Appends the BAM encoding (without its `block_size`) of the record `line` to `data`.
    pub fn encode(&mut self, header: &sam::Header, line: &[u8], data: &mut Vec<u8>) -> io::Result<()> {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        self.writer.get_mut().clear();
        sam::io::Reader::new(line).read_record(&mut self.record)?;
        check_sequence(self.record.sequence().as_ref())?;
        check_tags(&self.record)?;
        if self.writer.write_alignment_record(header, &self.record).is_err() {
            // noodles' lazy record (0.93, `record/data/field/value/array.rs`) rejects an empty `B`
            // array followed by another field; its eager record reads such lines.
            self.writer.get_mut().clear();
            sam::io::Reader::new(line).read_record_buf(header, &mut self.record_buf)?;
            self.writer.write_alignment_record(header, &self.record_buf)?;
        }
        data.extend_from_slice(&self.writer.get_ref()[4..]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes an unmapped record's SAM line with `seq` and `tags` (tab-separated fields).
    fn encode_unmapped(seq: &str, tags: &str) -> std::io::Result<()> {
        let line = format!("r\t4\t*\t0\t0\t*\t*\t0\t0\t{seq}\t*{tags}\n");
        LineEncoder::default().encode(&sam::Header::default(), line.as_bytes(), &mut Vec::new())
    }

    #[test]
    fn a_sequence_must_be_bases() {
        let encode = |seq: &str| encode_unmapped(seq, "");
        for good in ["ACGTN", "acgt=.", "*"] {
            assert!(encode(good).is_ok(), "{good}");
        }
        for bad in ["AC\0GT", "AC GT", "AC1GT"] {
            let e = encode(bad).unwrap_err();
            assert!(e.to_string().contains("not a base"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_tag_name_must_be_two_printable_characters() {
        let encode = |tag: &str| encode_unmapped("ACGT", &format!("\t{tag}:i:1"));
        for good in ["NM", "X0", "ab", "A!", "0X"] {
            assert!(encode(good).is_ok(), "{good}");
        }
        for bad in ["\u{1}1", "A\u{7f}"] {
            let e = encode(bad).unwrap_err();
            assert!(e.to_string().contains("is not two printable characters"), "{bad}: {e:?}");
        }
    }
}
