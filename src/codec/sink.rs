//! `COPY ... STORED AS BAM` (or SAM, CRAM) as bytes: the `DataSinkExec` of a [`BamSink`], so
//! that a cluster writes alignment files as one process does. The input plan travels as the
//! node's child; the sink as its file sink configuration (datafusion-proto's message), the
//! output header as SAM text, and the encoder's settings.

use std::sync::Arc;

use datafusion::common::{internal_err, not_impl_err, DataFusionError, Result};
use datafusion::datasource::file_format::write::get_writer_schema;
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::datasource::physical_plan::{FileSink, FileSinkConfig};
use datafusion::datasource::sink::DataSinkExec;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::protobuf;
use noodles_bgzf::io::writer::CompressionLevel;
use prost::Message;

use crate::bgzf::header::read_header_text;
use crate::codec::scan::BamOptionsNode;
use crate::datasource::file_format::BamFormatFactory;
use crate::formats::cram::container::Reference;
use crate::formats::OutputKind;
use crate::options::OutputIndex;
use crate::schema::{IntWidth, TagKind, TagLayout, TagName};
use crate::write::encode::RecordEncoder;
use crate::write::sink::BamSink;

#[derive(Clone, PartialEq, Message)]
pub(super) struct SinkNode {
    #[prost(message, optional, tag = "1")]
    config: Option<protobuf::FileSinkConfig>,
    /// The output's header, as SAM text.
    #[prost(string, tag = "2")]
    header: String,
    #[prost(uint32, tag = "3")]
    compression_level: u32,
    /// `bam`, `sam`, `sam.gz` or `cram`.
    #[prost(string, tag = "4")]
    kind: String,
    /// `none`, `bai` or `csi`.
    #[prost(string, tag = "5")]
    index: String,
    #[prost(string, optional, tag = "6")]
    reference: Option<String>,
    /// The encoder's `tags` fields as `NAME\tSAM_TYPE[\tWIDTH]`: what the plan resolved, hints
    /// from the header's file included, so that they are not sampled again.
    #[prost(string, repeated, tag = "7")]
    tags: Vec<String>,
}

/// The sink node of `exec`, if it writes through a [`BamSink`]. Its sort requirement is not
/// carried: the plan is optimized already, so its input is sorted as the requirement asked.
pub(super) fn encode_sink(exec: &DataSinkExec) -> Result<Option<SinkNode>> {
    let Some(sink) = exec.sink().downcast_ref::<BamSink>() else {
        return not_impl_err!("the BAM codecs serialize alignment outputs only, not {:?}", exec.sink());
    };
    let encoder = sink.encoder();
    let mut header = noodles_sam::io::Writer::new(Vec::new());
    header
        .write_header(encoder.header())
        .map_err(|e| DataFusionError::Internal(format!("cannot serialize a BAM output's header: {e}")))?;
    let kind = match encoder.kind() {
        OutputKind::Bam => "bam",
        OutputKind::Sam { bgzf: false } => "sam",
        OutputKind::Sam { bgzf: true } => "sam.gz",
        OutputKind::Cram => "cram",
    };
    let index = sink.index().name();
    Ok(Some(SinkNode {
        config: Some(sink.config().try_into()?),
        header: String::from_utf8_lossy(header.get_ref()).into_owned(),
        compression_level: u32::from(encoder.compression().get()),
        kind: kind.to_string(),
        index: index.to_string(),
        reference: sink.reference().path().map(str::to_string),
        tags: encoder.tags().iter().map(|(name, kind)| tag_text(*name, *kind)).collect(),
    }))
}

/// The `DataSinkExec` of a [`SinkNode`] over its one input.
pub(super) fn decode_sink(node: SinkNode, inputs: &[Arc<dyn ExecutionPlan>]) -> Result<Arc<dyn ExecutionPlan>> {
    let [input] = inputs else { return internal_err!("a BAM output node has {} inputs, not 1", inputs.len()) };
    let Some(config) = node.config.as_ref() else {
        return internal_err!("a serialized BAM output has no sink configuration");
    };
    let config = FileSinkConfig::try_from(config)?;
    let header = read_header_text(node.header.as_bytes())
        .map_err(|e| DataFusionError::Internal(format!("a serialized BAM output's header does not parse: {e}")))?;
    let level = u8::try_from(node.compression_level).ok().and_then(CompressionLevel::new);
    let Some(level) = level else { return internal_err!("invalid compression level {}", node.compression_level) };
    let kind = match node.kind.as_str() {
        "bam" => OutputKind::Bam,
        "sam" => OutputKind::Sam { bgzf: false },
        "sam.gz" => OutputKind::Sam { bgzf: true },
        "cram" => OutputKind::Cram,
        other => return internal_err!("unknown output kind {other:?}"),
    };
    let index = index_of_name(&node.index)?;
    // The files' columns: without `PARTITIONED BY` columns, as when the plan was made.
    let hints = TagLayout { tags: node.tags.iter().map(|t| tag_of_text(t)).collect::<Result<_>>()? };
    let encoder = RecordEncoder::try_new(&get_writer_schema(&config), Arc::new(header), level, &hints)?.with_kind(kind);
    let reference = Reference::open(node.reference.as_deref())?;
    let sink = BamSink::new(config, encoder, index, reference);
    Ok(Arc::new(DataSinkExec::new(Arc::clone(input), Arc::new(sink), None)))
}

/// A `STORED AS BAM` (SAM, CRAM) file format of a logical plan: the format and its options. A
/// COPY's own `OPTIONS` travel in the plan beside it.
#[derive(Clone, PartialEq, Message)]
struct FormatNode {
    #[prost(message, optional, tag = "1")]
    options: Option<BamOptionsNode>,
    #[prost(string, optional, tag = "2")]
    header: Option<String>,
    #[prost(uint32, tag = "3")]
    compression_level: u32,
    #[prost(string, tag = "4")]
    index: String,
}

pub(super) fn encode_format(factory: Arc<dyn FileFormatFactory>, buf: &mut Vec<u8>) -> Result<()> {
    let Some(factory) = factory.downcast_ref::<BamFormatFactory>() else {
        return not_impl_err!("the BAM codecs serialize STORED AS BAM, CRAM and SAM only");
    };
    let options = factory.options();
    let node = FormatNode {
        options: Some(BamOptionsNode::new(options)),
        header: options.header.clone(),
        compression_level: u32::from(options.compression_level),
        index: options.index.name().to_string(),
    };
    node.encode(buf).map_err(|e| super::encode_error("file format", e))
}

pub(super) fn decode_format(buf: &[u8]) -> Result<Arc<dyn FileFormatFactory>> {
    let node = FormatNode::decode(buf).map_err(|e| super::decode_error("file format", e))?;
    let mut options = node.options.unwrap_or_default().options()?;
    options.header = node.header;
    options.compression_level = u8::try_from(node.compression_level)
        .map_err(|_| DataFusionError::Internal(format!("invalid compression level {}", node.compression_level)))?;
    options.index = index_of_name(&node.index)?;
    Ok(Arc::new(BamFormatFactory::new(options)))
}

fn index_of_name(name: &str) -> Result<OutputIndex> {
    OutputIndex::from_name(name)
        .ok_or_else(|| DataFusionError::Internal(format!("a serialized BAM output has unknown index {name:?}")))
}

fn tag_text(name: TagName, kind: TagKind) -> String {
    let name = String::from_utf8_lossy(&name);
    match kind {
        TagKind::Int(width) => format!("{name}\t{}\t{}", kind.sam_type(), width.metadata_value()),
        _ => format!("{name}\t{}", kind.sam_type()),
    }
}

fn tag_of_text(text: &str) -> Result<(TagName, TagKind)> {
    let invalid = || DataFusionError::Internal(format!("a serialized BAM output has an invalid tag field {text:?}"));
    let mut parts = text.split('\t');
    let name = match parts.next().map(str::as_bytes) {
        Some(&[a, b]) => [a, b],
        _ => return Err(invalid()),
    };
    let kind = parts.next().and_then(TagKind::from_sam_type).ok_or_else(invalid)?;
    let width = parts.next().map(|w| IntWidth::from_metadata_value(w).ok_or_else(invalid)).transpose()?;
    Ok((name, kind.with_width_of(width.map(TagKind::Int))))
}
