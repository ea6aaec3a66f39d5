//! `bam_depth` as bytes: its table (the call's literal arguments) and its plan (each piece, with
//! their files' references, and the BED intervals), so that an executor reads no header or BED
//! file again.

use std::sync::Arc;

use datafusion::common::{internal_err, Result};
use datafusion::physical_plan::ExecutionPlan;
use prost::Message;

use crate::functions::depth::exec::{BedIntervals, DepthExec, Piece, References, Span};
use crate::functions::depth::{DepthArgs, DepthTable};

/// A call's literal arguments.
#[derive(Clone, PartialEq, Message)]
pub(super) struct DepthArgsNode {
    #[prost(string, tag = "1")]
    location: String,
    #[prost(string, optional, tag = "2")]
    region: Option<String>,
    #[prost(string, tag = "3")]
    options: String,
}

#[derive(Clone, PartialEq, Message)]
struct SpanNode {
    #[prost(uint64, tag = "1")]
    tid: u64,
    #[prost(int64, tag = "2")]
    start: i64,
    #[prost(int64, tag = "3")]
    end: i64,
}

#[derive(Clone, PartialEq, Message)]
struct PieceNode {
    #[prost(string, tag = "1")]
    file: String,
    #[prost(string, repeated, tag = "2")]
    names: Vec<String>,
    #[prost(int64, repeated, tag = "3")]
    lengths: Vec<i64>,
    #[prost(message, repeated, tag = "4")]
    spans: Vec<SpanNode>,
    #[prost(bool, tag = "5")]
    regioned: bool,
}

#[derive(Clone, PartialEq, Message)]
struct IntervalNode {
    #[prost(string, tag = "1")]
    chrom: String,
    #[prost(int64, tag = "2")]
    start: i64,
    #[prost(int64, tag = "3")]
    end: i64,
    #[prost(string, optional, tag = "4")]
    name: Option<String>,
}

/// A [`DepthExec`]; its inputs (the scans) travel as the plan's children.
#[derive(Clone, PartialEq, Message)]
pub(super) struct DepthExecNode {
    #[prost(message, optional, tag = "1")]
    args: Option<DepthArgsNode>,
    #[prost(message, optional, tag = "2")]
    piece: Option<PieceNode>,
    #[prost(bool, tag = "3")]
    has_bed: bool,
    #[prost(message, repeated, tag = "4")]
    bed: Vec<IntervalNode>,
}

pub(super) fn encode_args(args: &DepthArgs) -> DepthArgsNode {
    DepthArgsNode { location: args.location.clone(), region: args.region.clone(), options: args.options.clone() }
}

fn decode_args(node: DepthArgsNode) -> DepthArgs {
    DepthArgs { location: node.location, region: node.region, options: node.options }
}

pub(super) fn decode_table(node: DepthArgsNode) -> Result<DepthTable> {
    DepthTable::new(decode_args(node))
}

pub(super) fn encode_exec(exec: &DepthExec) -> DepthExecNode {
    let p = exec.piece();
    let piece = PieceNode {
        file: p.file.to_string(),
        names: p.references.names.clone(),
        lengths: p.references.lengths.clone(),
        spans: p.spans.iter().map(|s| SpanNode { tid: s.tid as u64, start: s.start, end: s.end }).collect(),
        regioned: p.regioned,
    };
    let bed = exec.bed().map(|bed| {
        bed.iter()
            .flat_map(|(chrom, intervals)| {
                intervals.iter().map(move |(start, end, name)| IntervalNode {
                    chrom: chrom.clone(),
                    start: *start,
                    end: *end,
                    name: name.as_deref().map(str::to_string),
                })
            })
            .collect()
    });
    DepthExecNode {
        args: Some(encode_args(exec.args())),
        piece: Some(piece),
        has_bed: bed.is_some(),
        bed: bed.unwrap_or_default(),
    }
}

pub(super) fn decode_exec(node: DepthExecNode, inputs: &[Arc<dyn ExecutionPlan>]) -> Result<DepthExec> {
    let args = decode_args(node.args.unwrap_or_default());
    let (options, cohort) = (args.options()?, args.cohort()?);
    let p = node.piece.unwrap_or_default();
    let piece = Piece {
        file: p.file.into(),
        references: Arc::new(References::new(p.names, p.lengths)),
        spans: p.spans.iter().map(|s| Span { tid: s.tid as usize, start: s.start, end: s.end }).collect(),
        regioned: p.regioned,
    };
    if inputs.is_empty() {
        return internal_err!("a serialized bam_depth plan has no input");
    }
    let bed = node.has_bed.then(|| {
        let mut bed = BedIntervals::new();
        for i in node.bed {
            bed.entry(i.chrom).or_default().push((i.start, i.end, i.name.map(Into::into)));
        }
        Arc::new(bed)
    });
    DepthExec::new(Arc::new(args), piece, inputs.to_vec(), Arc::new(options), bed, cohort)
}
