//! Batches of the table's columns back to BAM records, compressed as BGZF blocks.
//!
//! Each row becomes a record's bytes straight from the Arrow arrays ([`record`](super::record)),
//! and a row that breaks BAM's rules fails with the reason and the row's `qname`.

use std::io::Write as _;
use std::sync::Arc;

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::{DataType, Schema};
use datafusion::common::{plan_err, DataFusionError, Result};
use noodles_bgzf as bgzf;
use noodles_sam as sam;
use sam::alignment::io::Write as _;

use crate::error::BamError;
use crate::formats::OutputKind;
use crate::schema::{
    col, fixed_column_type, int_width_of, IntWidth, TagKind, TagLayout, TagName, COLUMN_NAMES, SAM_TYPE_KEY,
};
use crate::write::record::{write_record, AlignmentContext, Columns, Scratch};

/// The columns a BAM record needs: SAM's eleven mandatory fields.
const REQUIRED: [usize; 11] = [
    col::QNAME,
    col::FLAG,
    col::RNAME,
    col::POS,
    col::MAPQ,
    col::CIGAR,
    col::RNEXT,
    col::PNEXT,
    col::TLEN,
    col::SEQ,
    col::QUAL,
];

/// Where each column of a record is in the rows to write, checked against the table's contract.
#[derive(Debug, Clone)]
pub struct RecordEncoder {
    header: Arc<sam::Header>,
    kind: OutputKind,
    /// Row column index of each [`col`] id, if present.
    index_of: [Option<usize>; col::COUNT],
    /// The `tags` struct's fields: name, SAM kind.
    tags: Vec<(TagName, TagKind)>,
    compression: bgzf::io::writer::CompressionLevel,
    /// Whether [`encode`](Self::encode) reports where each record lies, for an index.
    placements: bool,
}

/// A batch's records as the output's bytes (see [`OutputKind`]), with, when asked, each record's alignment context and its
/// end as a virtual position within the blocks (each record starts where the one before ends).
pub struct EncodedBatch {
    pub rows: u64,
    pub blocks: Vec<u8>,
    pub placements: Vec<(AlignmentContext, bgzf::VirtualPosition)>,
}

impl RecordEncoder {
    /// Checks that `schema` can make BAM records: every mandatory SAM field present (with a type
    /// that casts to the table's), nothing that has no place in a record (`endpos` is derived and
    /// ignored).
    ///
    /// `hints` types the `tags` fields that carry no `sam_type` metadata and whose Arrow type
    /// leaves the BAM type open (text, Int64, lists of Int64): a sample of the header's file, so
    /// that rows that went through polars, which drops field metadata, get their tags' types back.
    pub fn try_new(
        schema: &Schema,
        header: Arc<sam::Header>,
        compression: bgzf::io::writer::CompressionLevel,
        hints: &TagLayout,
    ) -> Result<Self> {
        let mut index_of = [None; col::COUNT];
        let mut tags = Vec::new();
        for (i, field) in schema.fields().iter().enumerate() {
            let Some(id) = COLUMN_NAMES.iter().position(|n| n == field.name()) else {
                return plan_err!(
                    "column {} has no place in a BAM record; a BAM output takes the table's columns ({})",
                    field.name(),
                    COLUMN_NAMES.join(", ")
                );
            };
            if id == col::TAGS {
                tags = tag_fields(field.data_type(), hints)?;
            } else {
                let expected = expected_type(id);
                if !arrow::compute::can_cast_types(field.data_type(), &expected) {
                    return plan_err!(
                        "column {} is {}, which does not convert to {expected}",
                        field.name(),
                        field.data_type()
                    );
                }
            }
            index_of[id] = Some(i);
        }
        let missing: Vec<&str> =
            REQUIRED.iter().filter(|&&id| index_of[id].is_none()).map(|&id| COLUMN_NAMES[id]).collect();
        if !missing.is_empty() {
            return plan_err!("a BAM record needs columns {}: select them too", missing.join(", "));
        }
        check_reference_names(&header)?;
        Ok(Self { header, kind: OutputKind::Bam, index_of, tags, compression, placements: false })
    }

    /// This encoder, writing `kind` of output.
    pub fn with_kind(self, kind: OutputKind) -> Self {
        Self { kind, ..self }
    }

    /// The `tags` struct's fields, each with the BAM type it is written as.
    pub fn tags(&self) -> &[(TagName, TagKind)] {
        &self.tags
    }

    pub fn kind(&self) -> OutputKind {
        self.kind
    }

    pub fn compression(&self) -> bgzf::io::writer::CompressionLevel {
        self.compression
    }

    /// This encoder, reporting each record's placement for an index.
    pub fn with_placements(self) -> Self {
        Self { placements: true, ..self }
    }

    pub fn header(&self) -> &sam::Header {
        &self.header
    }

    /// The header as the output's bytes: for BAM and `.sam.gz`, BGZF blocks ending a block so
    /// that the records start in a new one; nothing for CRAM, whose writer writes it.
    pub fn header_blocks(&self, path: &str) -> Result<Vec<u8>> {
        let failed =
            |e: std::io::Error| DataFusionError::Execution(format!("output {path}: cannot write the header: {e}"));
        match self.kind {
            OutputKind::Bam => {
                let mut raw = noodles_bam::io::Writer::from(Vec::new());
                raw.write_header(&self.header).map_err(failed)?;
                Ok(self.compress(path, raw.get_ref(), &[])?.0)
            }
            OutputKind::Sam { bgzf } => {
                let mut text = sam::io::Writer::new(Vec::new());
                text.write_header(&self.header).map_err(failed)?;
                match bgzf {
                    true => Ok(self.compress(path, text.get_ref(), &[])?.0),
                    false => Ok(text.into_inner()),
                }
            }
            OutputKind::Cram => Ok(Vec::new()),
        }
    }

    /// Encodes `batch` (rows `first_row..` of the output, counted from 0) as BGZF blocks.
    pub fn encode(&self, path: &str, batch: &RecordBatch, first_row: u64) -> Result<EncodedBatch> {
        let columns = Columns::of(batch, &self.index_of, &self.tags)?;
        let mut scratch = Scratch::default();
        let mut raw = Vec::with_capacity(batch.num_rows() * 512);
        let mut contexts = Vec::new();
        let mut ends = Vec::new();
        for row in 0..batch.num_rows() {
            let context =
                write_record(&mut raw, &columns, &self.tags, &self.header, row, &mut scratch).map_err(|reason| {
                    let qname = if columns.qname.is_valid(row) { columns.qname.value(row) } else { "*" };
                    let (output, row) = (path.to_string(), first_row + row as u64 + 1);
                    DataFusionError::from(BamError::InvalidRow { output, row, qname: qname.to_string(), reason })
                })?;
            if self.placements {
                contexts.push(context);
                ends.push(raw.len());
            }
        }
        let (blocks, record_ends) = match self.kind {
            OutputKind::Bam => self.compress(path, &raw, &ends)?,
            OutputKind::Sam { bgzf } => {
                let text = self.sam_text(path, &raw, first_row)?;
                match bgzf {
                    true => self.compress(path, &text, &[])?,
                    false => (text, Vec::new()),
                }
            }
            OutputKind::Cram => (raw, Vec::new()),
        };
        Ok(EncodedBatch {
            rows: batch.num_rows() as u64,
            blocks,
            placements: contexts.into_iter().zip(record_ends).collect(),
        })
    }

    /// BAM record bytes (rows `first_row..` of the output, counted from 0) as SAM lines, by
    /// noodles' SAM writer.
    fn sam_text(&self, path: &str, raw: &[u8], first_row: u64) -> Result<Vec<u8>> {
        let failed = |e: std::io::Error| DataFusionError::Execution(format!("SAM output {path}: {e}"));
        let mut records = noodles_bam::io::Reader::from(raw);
        let mut record = noodles_bam::Record::default();
        let mut text = sam::io::Writer::new(Vec::with_capacity(raw.len() * 2));
        let mut row = first_row;
        while records.read_record(&mut record).map_err(failed)? != 0 {
            row += 1;
            if let Err(e) = text.write_alignment_record(&self.header, &record) {
                let qname = record.name().map_or("*".into(), |n| String::from_utf8_lossy(n).into_owned());
                let reason = match forbidden_in_sam(&record) {
                    Some(what) => format!("{what}, which SAM text cannot hold (BAM output can)"),
                    None => format!("noodles' SAM writer refuses it: {e}"),
                };
                return Err(BamError::InvalidRow { output: path.to_string(), row, qname, reason }.into());
            }
        }
        Ok(text.into_inner())
    }

    /// `data` as BGZF blocks, and the virtual positions (within them) of the offsets `ends`.
    fn compress(&self, path: &str, data: &[u8], ends: &[usize]) -> Result<(Vec<u8>, Vec<bgzf::VirtualPosition>)> {
        let mut writer = bgzf::io::writer::Builder::default()
            .set_compression_level(self.compression)
            .build_from_writer(Vec::with_capacity(data.len() / 3 + 64));
        let mut positions = Vec::with_capacity(ends.len());
        let mut written = 0;
        let compressed = ends
            .iter()
            .chain(std::iter::once(&data.len()))
            .try_for_each(|&end| {
                writer.write_all(&data[written..end])?;
                written = end;
                positions.push(writer.virtual_position());
                Ok(())
            })
            // `flush` ends the last block without the end-of-file marker, which only the file's end gets.
            .and_then(|()| writer.flush());
        compressed.map_err(|e: std::io::Error| {
            DataFusionError::Execution(format!("output {path}: BGZF compression failed: {e}"))
        })?;
        positions.pop();
        Ok((writer.into_inner(), positions))
    }
}

/// What of `record`'s aux fields the SAM specification forbids though BAM holds it (htslib writes
/// both; htslib-test's `auxf#values.sam` has each): a tag name outside `[A-Za-z][A-Za-z0-9]`, or
/// hex (`H`) with other than `0-9A-F`.
fn forbidden_in_sam(record: &noodles_bam::Record) -> Option<String> {
    use noodles_sam::alignment::record::data::field::Value;
    for field in record.data().iter() {
        let Ok((tag, value)) = field else { continue };
        let [a, b] = *tag.as_ref();
        if !(a.is_ascii_alphabetic() && b.is_ascii_alphanumeric()) {
            return Some(format!("tag {:?}: its name is not [A-Za-z][A-Za-z0-9]", String::from_utf8_lossy(&[a, b])));
        }
        if let Value::Hex(hex) = value {
            if !hex.iter().all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(c)) {
                return Some(format!("tag {}:H:{hex}: hex other than 0-9A-F", String::from_utf8_lossy(&[a, b])));
            }
        }
    }
    None
}

/// Checks that noodles' header writer takes every reference name, naming the first it refuses:
/// htslib writes names the SAM specification forbids (htslib-test's `colons.bam` has
/// `chr1,chr3`), and noodles, like Picard, refuses them.
fn check_reference_names(header: &sam::Header) -> Result<()> {
    for (name, reference) in header.reference_sequences() {
        let one = sam::Header::builder().add_reference_sequence(name.clone(), reference.clone()).build();
        if sam::io::Writer::new(Vec::new()).write_header(&one).is_err() {
            return plan_err!(
                "the output's header cannot hold reference sequence {:?}: the SAM specification \
                 forbids its name (section 1.2.1), and BAM writers refuse it; rename it in option header's file",
                String::from_utf8_lossy(name)
            );
        }
    }
    Ok(())
}

/// The type a column of the table has, which a written column is cast to.
fn expected_type(id: usize) -> DataType {
    fixed_column_type(id).0
}

/// The BAM integer type of the same width and sign as an Arrow integer type, if one exists.
fn bam_int_type(data_type: &DataType) -> Option<u8> {
    Some(match data_type {
        DataType::Int8 => b'c',
        DataType::UInt8 => b'C',
        DataType::Int16 => b's',
        DataType::UInt16 => b'S',
        DataType::Int32 => b'i',
        DataType::UInt32 => b'I',
        _ => return None,
    })
}

/// The fields of a `tags` struct, typed by their `sam_type` and `bam_int_type` metadata or, for a
/// struct built without it (in SQL, or by polars, which drops field metadata), by their Arrow
/// type: an integer type of BAM's widths keeps its width, a wider one gets htslib's rule.
fn tag_fields(data_type: &DataType, hints: &TagLayout) -> Result<Vec<(TagName, TagKind)>> {
    let DataType::Struct(fields) = data_type else {
        return plan_err!("column tags is {data_type}, not a struct of tag fields");
    };
    fields
        .iter()
        .map(|f| {
            let name = match f.name().as_bytes() {
                &[a, b] => [a, b],
                _ => return plan_err!("tags field {:?} is not a two-character SAM tag name", f.name()),
            };
            let by_metadata = f.metadata().get(SAM_TYPE_KEY).and_then(|t| TagKind::from_sam_type(t));
            let by_metadata = by_metadata.map(|kind| kind.with_width_of(int_width_of(f).map(TagKind::Int)));
            // An Arrow integer of a BAM width is a chosen width; other types leave it to hints.
            let open = match f.data_type() {
                DataType::List(item) => bam_int_type(item.data_type()).is_none(),
                t => bam_int_type(t).is_none(),
            };
            let hint = hints.tags.iter().find(|(tag, _)| *tag == name).map(|(_, kind)| *kind).filter(|_| open);
            let by_type = match f.data_type() {
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Some(TagKind::String),
                t if t.is_integer() => Some(TagKind::Int(match bam_int_type(t) {
                    Some(letter) => IntWidth::Fixed(letter),
                    None => IntWidth::Smallest,
                })),
                DataType::Float16 | DataType::Float32 | DataType::Float64 => Some(TagKind::Float),
                DataType::List(item) if item.data_type().is_integer() => {
                    Some(TagKind::IntArray(bam_int_type(item.data_type()).unwrap_or(b'i')))
                }
                DataType::List(item) if item.data_type().is_floating() => Some(TagKind::FloatArray),
                _ => None,
            };
            let by_hint = hint.filter(|h| by_type.is_some_and(|t| same_class(*h, t)));
            match by_metadata.or(by_hint).or(by_type) {
                Some(kind) if arrow::compute::can_cast_types(f.data_type(), &kind.data_type()) => Ok((name, kind)),
                _ => plan_err!("tags field {} ({}) has no SAM type", f.name(), f.data_type()),
            }
        })
        .collect()
}

/// Whether two kinds hold the same Arrow values: text, integers, integer arrays, floats, float
/// arrays.
fn same_class(a: TagKind, b: TagKind) -> bool {
    let class = |k: TagKind| match k {
        TagKind::Char | TagKind::String | TagKind::Hex => 0,
        TagKind::Int(_) => 1,
        TagKind::IntArray(_) => 2,
        TagKind::Float => 3,
        TagKind::FloatArray => 4,
    };
    class(a) == class(b)
}
