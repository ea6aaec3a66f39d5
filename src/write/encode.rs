//! Rows of the table's columns back to BAM records, compressed as BGZF blocks.
//!
//! Each row is written as a SAM line that noodles parses and encodes to BAM, so BAM's rules
//! (reference ids from the header, bins, CIGARs of more than 65535 operations moved to `CG`, a
//! sequence as long as its CIGAR, valid names and tags) are noodles' own, and a row that breaks
//! them fails with noodles' reason and the row's `qname`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, PrimitiveArray, RecordBatch, StringArray, StructArray};
use arrow::compute::cast;
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Float32Type, Int32Type, Int64Type, Schema, UInt16Type, UInt8Type,
};
use datafusion::common::{plan_err, DataFusionError, Result};
use noodles_bgzf as bgzf;
use noodles_core::Position;
use noodles_sam as sam;
use sam::alignment::io::Write as _;

use crate::error::BamError;
use crate::schema::{col, fixed_column_type, TagKind, TagName, COLUMN_NAMES, SAM_TYPE_KEY};

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

/// BAM's MAPQ for "unavailable", which the table shows as null.
const MAPQ_UNAVAILABLE: u8 = 255;

/// Where each column of a record is in the rows to write, checked against the table's contract.
#[derive(Debug, Clone)]
pub struct RecordEncoder {
    header: Arc<sam::Header>,
    /// Row column index of each [`col`] id, if present.
    index_of: [Option<usize>; col::COUNT],
    /// The `tags` struct's fields: name, SAM kind.
    tags: Vec<(TagName, TagKind)>,
    compression: bgzf::io::writer::CompressionLevel,
    /// Whether [`encode`](Self::encode) reports where each record lies, for an index.
    placements: bool,
}

/// Where a record lies in the reference, as an index needs it: reference id, start, end, and
/// whether it is mapped; `None` for a record without a position.
pub type AlignmentContext = Option<(usize, Position, Position, bool)>;

/// A batch's records as BGZF blocks, with, when asked, each record's alignment context and its
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
    pub fn try_new(
        schema: &Schema,
        header: Arc<sam::Header>,
        compression: bgzf::io::writer::CompressionLevel,
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
                tags = tag_fields(field.data_type())?;
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
        Ok(Self { header, index_of, tags, compression, placements: false })
    }

    /// This encoder, reporting each record's placement for an index.
    pub fn with_placements(self) -> Self {
        Self { placements: true, ..self }
    }

    pub fn header(&self) -> &sam::Header {
        &self.header
    }

    /// The header as BGZF blocks, ending a block so that the records start in a new one.
    pub fn header_blocks(&self, path: &str) -> Result<Vec<u8>> {
        let mut raw = noodles_bam::io::Writer::from(Vec::new());
        raw.write_header(&self.header)
            .map_err(|e| DataFusionError::Execution(format!("BAM output {path}: cannot write the header: {e}")))?;
        Ok(self.compress(path, raw.get_ref(), &[])?.0)
    }

    /// Encodes `batch` (rows `first_row..` of the output, counted from 0) as BGZF blocks.
    pub fn encode(&self, path: &str, batch: &RecordBatch, first_row: u64) -> Result<EncodedBatch> {
        let columns = Columns::of(self, batch)?;
        let mut line = String::new();
        let mut empty_arrays = String::new();
        let mut record = sam::Record::default();
        let mut record_buf = sam::alignment::RecordBuf::default();
        let mut raw = noodles_bam::io::Writer::from(Vec::with_capacity(batch.num_rows() * 512));
        let mut contexts = Vec::new();
        let mut ends = Vec::new();
        for row in 0..batch.num_rows() {
            let failed = |what: String| {
                let qname = if columns.qname.is_valid(row) { columns.qname.value(row) } else { "*" };
                let (output, row) = (path.to_string(), first_row + row as u64 + 1);
                DataFusionError::from(BamError::InvalidRow { output, row, qname: qname.to_string(), reason: what })
            };
            line.clear();
            empty_arrays.clear();
            columns.sam_line(self, row, &mut line, &mut empty_arrays).map_err(failed)?;
            // noodles' lazy SAM record (0.93, `record/data/field/value/array.rs`) rejects an
            // empty `B` array followed by another field, so empty arrays go last; with two of
            // them, its eager record (which rejects duplicate tags instead) parses the line.
            line.push_str(&empty_arrays);
            let mut reader = sam::io::Reader::new(line.as_bytes());
            let parsed: &dyn sam::alignment::Record = if empty_arrays.matches('\t').count() > 1 {
                reader
                    .read_record_buf(&self.header, &mut record_buf)
                    .map_err(|e| failed(format!("invalid field: {e}")))?;
                &record_buf
            } else {
                reader.read_record(&mut record).map_err(|e| failed(format!("invalid field: {e}")))?;
                &record
            };
            raw.write_alignment_record(&self.header, parsed).map_err(|e| failed(e.to_string()))?;
            if self.placements {
                contexts.push(alignment_context(&self.header, parsed).map_err(|e| failed(e.to_string()))?);
                ends.push(raw.get_ref().len());
            }
        }
        let (blocks, record_ends) = self.compress(path, raw.get_ref(), &ends)?;
        Ok(EncodedBatch {
            rows: batch.num_rows() as u64,
            blocks,
            placements: contexts.into_iter().zip(record_ends).collect(),
        })
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
            DataFusionError::Execution(format!("BAM output {path}: BGZF compression failed: {e}"))
        })?;
        positions.pop();
        Ok((writer.into_inner(), positions))
    }
}

/// A record's alignment context, as noodles' own BAM indexer (`noodles_bam::fs::index`) takes it.
fn alignment_context(header: &sam::Header, record: &dyn sam::alignment::Record) -> std::io::Result<AlignmentContext> {
    match (
        record.reference_sequence_id(header).transpose()?,
        record.alignment_start().transpose()?,
        record.alignment_end().transpose()?,
    ) {
        (Some(id), Some(start), Some(end)) => Ok(Some((id, start, end, !record.flags()?.is_unmapped()))),
        _ => Ok(None),
    }
}

/// The type a column of the table has, which a written column is cast to.
fn expected_type(id: usize) -> DataType {
    fixed_column_type(id).0
}

/// The fields of a `tags` struct, typed by their `sam_type` metadata or, for a struct built in
/// SQL without it, by their Arrow type.
fn tag_fields(data_type: &DataType) -> Result<Vec<(TagName, TagKind)>> {
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
            let by_type = match f.data_type() {
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Some(TagKind::String),
                t if t.is_integer() => Some(TagKind::Int),
                DataType::Float16 | DataType::Float32 | DataType::Float64 => Some(TagKind::Float),
                DataType::List(item) if item.data_type().is_integer() => Some(TagKind::IntArray(b'i')),
                DataType::List(item) if item.data_type().is_floating() => Some(TagKind::FloatArray),
                _ => None,
            };
            match by_metadata.or(by_type) {
                Some(kind) if arrow::compute::can_cast_types(f.data_type(), &kind.data_type()) => Ok((name, kind)),
                _ => plan_err!("tags field {} ({}) has no SAM type", f.name(), f.data_type()),
            }
        })
        .collect()
}

/// One batch's columns, cast to the table's types.
struct Columns {
    qname: StringArray,
    flag: ArrayRef,
    rname: StringArray,
    pos: ArrayRef,
    mapq: ArrayRef,
    cigar: StringArray,
    rnext: StringArray,
    pnext: ArrayRef,
    tlen: ArrayRef,
    seq: StringArray,
    qual: StringArray,
    tags: Option<StructArray>,
    tags_extra: Option<StringArray>,
}

impl Columns {
    fn of(encoder: &RecordEncoder, batch: &RecordBatch) -> Result<Self> {
        let get = |id: usize| -> Result<Option<ArrayRef>> {
            encoder.index_of[id].map(|i| cast(batch.column(i), &expected_type(id))).transpose().map_err(Into::into)
        };
        let required = |id: usize| -> Result<ArrayRef> {
            get(id)?.ok_or_else(|| DataFusionError::Internal(format!("column {} was checked", COLUMN_NAMES[id])))
        };
        let text = |id: usize| -> Result<StringArray> { Ok(required(id)?.as_string::<i32>().clone()) };
        let tags = match encoder.index_of[col::TAGS] {
            None => None,
            Some(i) => {
                let fields = encoder.tags.iter().map(|(name, kind)| {
                    arrow::datatypes::Field::new(String::from_utf8_lossy(name), kind.data_type(), true)
                });
                let target = DataType::Struct(fields.collect());
                Some(cast(batch.column(i), &target)?.as_struct().clone())
            }
        };
        Ok(Self {
            qname: text(col::QNAME)?,
            flag: required(col::FLAG)?,
            rname: text(col::RNAME)?,
            pos: required(col::POS)?,
            mapq: required(col::MAPQ)?,
            cigar: text(col::CIGAR)?,
            rnext: text(col::RNEXT)?,
            pnext: required(col::PNEXT)?,
            tlen: required(col::TLEN)?,
            seq: text(col::SEQ)?,
            qual: text(col::QUAL)?,
            tags,
            tags_extra: get(col::TAGS_EXTRA)?.map(|a| a.as_string::<i32>().clone()),
        })
    }

    /// Row `row` as a SAM line, nulls written as SAM's "absent" values; aux fields that are empty
    /// arrays go to `empty_arrays` instead.
    fn sam_line(
        &self,
        encoder: &RecordEncoder,
        row: usize,
        line: &mut String,
        empty_arrays: &mut String,
    ) -> Result<(), String> {
        let references = encoder.header.reference_sequences();
        let reference = |column: &StringArray, name: &str| -> Result<Option<String>, String> {
            if column.is_null(row) {
                return Ok(None);
            }
            let value = column.value(row);
            match references.contains_key(value.as_bytes()) {
                true => Ok(Some(value.to_string())),
                false => Err(format!("{name} {value} is not a reference sequence of the output's header")),
            }
        };
        let flag = self.flag.as_primitive::<UInt16Type>();
        if flag.is_null(row) {
            return Err("flag is null".into());
        }
        let rname = reference(&self.rname, "rname")?;
        let rnext = reference(&self.rnext, "rnext")?;
        let mapq = self.mapq.as_primitive::<UInt8Type>();
        let int64 = |a: &ArrayRef| value_or(a.as_primitive::<Int64Type>(), row, 0);
        let tlen = self.tlen.as_primitive::<Int32Type>();
        write!(
            line,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            text_field(&self.qname, row, "qname")?,
            flag.value(row),
            rname.as_deref().unwrap_or("*"),
            int64(&self.pos),
            value_or(mapq, row, MAPQ_UNAVAILABLE),
            text_field(&self.cigar, row, "cigar")?,
            rnext.as_deref().unwrap_or("*"),
            int64(&self.pnext),
            value_or(tlen, row, 0),
            text_field(&self.seq, row, "seq")?,
            text_field(&self.qual, row, "qual")?,
        )
        .expect("writing to a String cannot fail");
        if let Some(tags) = &self.tags {
            for ((name, kind), column) in encoder.tags.iter().zip(tags.columns()) {
                if column.is_valid(row) {
                    let is_empty_array = matches!(kind, TagKind::IntArray(_) | TagKind::FloatArray)
                        && column.as_list::<i32>().value_length(row) == 0;
                    let out = if is_empty_array { &mut *empty_arrays } else { &mut *line };
                    write_tag(out, *name, *kind, column, row)?;
                }
            }
        }
        if let Some(extra) = self.tags_extra.as_ref().filter(|c| c.is_valid(row)) {
            let fields = extra.value(row);
            if fields.contains(['\n', '\r']) {
                return Err("tags_extra holds a line break".into());
            }
            for field in fields.split('\t').filter(|f| !f.is_empty()) {
                let is_empty_array = field.len() == "XX:B:c".len() && field.get(2..5) == Some(":B:");
                let out = if is_empty_array { &mut *empty_arrays } else { &mut *line };
                out.push('\t');
                out.push_str(field);
            }
        }
        Ok(())
    }
}

/// A number of a row, or SAM's value for "absent" when it is null.
fn value_or<T: ArrowPrimitiveType>(array: &PrimitiveArray<T>, row: usize, null: T::Native) -> T::Native {
    if array.is_valid(row) {
        array.value(row)
    } else {
        null
    }
}

/// A text column's SAM field: `*` for null; no tab or line break, which would move the fields.
fn text_field<'a>(column: &'a StringArray, row: usize, name: &str) -> Result<&'a str, String> {
    if column.is_null(row) {
        return Ok("*");
    }
    let value = column.value(row);
    match value.contains(['\t', '\n', '\r']) {
        true => Err(format!("{name} holds a tab or line break")),
        false => Ok(value),
    }
}

/// Appends `\tTAG:TYPE:VALUE` for a non-null struct field.
fn write_tag(line: &mut String, name: TagName, kind: TagKind, column: &ArrayRef, row: usize) -> Result<(), String> {
    let tag = String::from_utf8_lossy(&name);
    // Arrays are `TAG:B:C,1,2`: their SAM type already holds the subtype's colon.
    match kind {
        TagKind::IntArray(_) | TagKind::FloatArray => write!(line, "\t{tag}:{}", kind.sam_type()),
        _ => write!(line, "\t{tag}:{}:", kind.sam_type()),
    }
    .expect("writing to a String cannot fail");
    match kind {
        TagKind::Char | TagKind::String | TagKind::Hex => {
            let value = column.as_string::<i32>().value(row);
            if value.contains(['\t', '\n', '\r']) {
                return Err(format!("tag {tag} holds a tab or line break"));
            }
            line.push_str(value);
        }
        TagKind::Int => {
            let _ = write!(line, "{}", column.as_primitive::<Int64Type>().value(row));
        }
        TagKind::Float => {
            let _ = write!(line, "{}", column.as_primitive::<Float32Type>().value(row));
        }
        TagKind::IntArray(_) | TagKind::FloatArray => {
            let items = column.as_list::<i32>().value(row);
            if items.null_count() > 0 {
                return Err(format!("tag {tag} is an array with a null item"));
            }
            match kind {
                TagKind::FloatArray => items.as_primitive::<Float32Type>().values().iter().for_each(|v| {
                    let _ = write!(line, ",{v}");
                }),
                _ => items.as_primitive::<Int64Type>().values().iter().for_each(|v| {
                    let _ = write!(line, ",{v}");
                }),
            }
        }
    }
    Ok(())
}
