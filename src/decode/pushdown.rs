//! Predicate pushdown: which filters the decoder evaluates itself, which genomic regions they
//! confine the records to (for index use), and the evaluation on the fixed-size record fields.
//!
//! A filter is taken over (and reported to DataFusion as exact) when it only uses columns that
//! come from the fixed part of a record and its CIGAR: `flag`, `rname`, `pos`, `endpos`, `mapq`,
//! `rnext`, `pnext`, `tlen`, and only expression kinds with a fixed meaning. Such filters run on
//! a small batch of those columns before any name, sequence, quality or tag is decoded.

use std::sync::Arc;

use arrow::array::{Array, BooleanArray};
use arrow::datatypes::SchemaRef;
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{
    BinaryExpr, CastExpr, Column, InListExpr, IsNotNullExpr, IsNullExpr, Literal, NotExpr,
};
use datafusion::physical_expr::utils::{collect_columns, reassign_expr_columns, split_conjunction, split_disjunction};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::ColumnarValue;

use crate::bgzf::framing::FileContext;
use crate::decode::decoder::BatchDecoder;
use crate::options::region::{Region, RegionReference};
use crate::record::{RawRecord, RecordError};
use crate::schema::{col, TagLayout};

/// Columns the prefilter can produce without decoding variable-length fields (besides CIGAR).
const PREFILTER_COLUMNS: [usize; 8] =
    [col::FLAG, col::RNAME, col::POS, col::ENDPOS, col::MAPQ, col::RNEXT, col::PNEXT, col::TLEN];

/// Whether the decoder evaluates `expr` (over the file schema) exactly.
pub fn can_prefilter(expr: &Arc<dyn PhysicalExpr>, file_schema: &SchemaRef) -> bool {
    let columns_ok = collect_columns(expr)
        .iter()
        .all(|c| file_schema.index_of(c.name()).is_ok_and(|i| i == c.index() && PREFILTER_COLUMNS.contains(&i)));
    columns_ok && only_plain_nodes(expr)
}

/// Deterministic expression kinds whose value depends on nothing but the row.
fn only_plain_nodes(expr: &Arc<dyn PhysicalExpr>) -> bool {
    let plain = expr.is::<BinaryExpr>()
        || expr.is::<Column>()
        || expr.is::<Literal>()
        || expr.is::<InListExpr>()
        || expr.is::<IsNullExpr>()
        || expr.is::<IsNotNullExpr>()
        || expr.is::<NotExpr>()
        || expr.is::<CastExpr>();
    plain && expr.children().into_iter().all(only_plain_nodes)
}

/// Evaluates a pushed-down predicate on a batch of records, decoding only the columns it uses.
pub struct Prefilter {
    decoder: BatchDecoder,
    predicate: Arc<dyn PhysicalExpr>,
}

impl Prefilter {
    pub fn new(
        predicate: &Arc<dyn PhysicalExpr>,
        table_schema: &SchemaRef,
        layout: &TagLayout,
        file: &FileContext,
    ) -> Result<Self> {
        let mut projection: Vec<usize> = collect_columns(predicate).iter().map(|c| c.index()).collect();
        projection.sort_unstable();
        let decoder = BatchDecoder::new(table_schema, &projection, layout, file)?;
        let predicate = reassign_expr_columns(Arc::clone(predicate), decoder.schema())?;
        Ok(Self { decoder, predicate })
    }

    pub fn push(&mut self, record: &RawRecord<'_>) -> Result<(), RecordError> {
        self.decoder.push(record)
    }

    /// Which of the records pushed since the last call pass (a null result does not).
    pub fn evaluate(&mut self) -> Result<BooleanArray> {
        let batch = self.decoder.finish()?;
        let rows = batch.num_rows();
        let values = match self.predicate.evaluate(&batch)? {
            ColumnarValue::Array(a) => a,
            ColumnarValue::Scalar(s) => s.to_array_of_size(rows)?,
        };
        let mask = values.as_any().downcast_ref::<BooleanArray>().ok_or_else(|| {
            DataFusionError::Internal(format!("BAM prefilter returned {} instead of booleans", values.data_type()))
        })?;
        // Null means "not true": keep only the definite trues.
        Ok(match mask.nulls() {
            Some(nulls) => BooleanArray::new(mask.values() & nulls.inner(), None),
            None => mask.clone(),
        })
    }
}

/// Cross products above this many regions are not worth an index lookup.
const MAX_REGIONS: usize = 4096;

/// The regions that hold every record for which `expr` holds, or `None` when it does not
/// confine records to some references (then no index helps).
pub fn regions(expr: &Arc<dyn PhysicalExpr>) -> Option<Vec<Region>> {
    let found = region_list(expr)?;
    found.iter().all(|r| r.reference != RegionReference::Any).then_some(found)
}

/// Like [`regions`], but `Any`-reference regions allowed; `None` means "everything".
fn region_list(expr: &Arc<dyn PhysicalExpr>) -> Option<Vec<Region>> {
    let conjuncts = split_conjunction(expr);
    if conjuncts.len() > 1 {
        let mut acc: Option<Vec<Region>> = None;
        for c in conjuncts {
            let Some(next) = region_list(c) else { continue };
            acc = Some(match acc {
                None => next,
                Some(prev) => {
                    if prev.len() * next.len() > MAX_REGIONS {
                        return None;
                    }
                    prev.iter().flat_map(|a| next.iter().filter_map(|b| a.intersect(b))).collect()
                }
            });
        }
        return acc;
    }
    let disjuncts = split_disjunction(expr);
    if disjuncts.len() > 1 {
        let mut all = Vec::new();
        for d in disjuncts {
            all.extend(region_list(d)?);
        }
        return (all.len() <= MAX_REGIONS).then_some(all);
    }
    leaf_regions(expr)
}

/// The regions of one comparison, `IN` list or `IS NULL`.
fn leaf_regions(expr: &Arc<dyn PhysicalExpr>) -> Option<Vec<Region>> {
    if let Some(is_null) = expr.downcast_ref::<IsNullExpr>() {
        return (column_index(is_null.arg()) == Some(col::RNAME))
            .then(|| vec![Region::whole(RegionReference::Unplaced)]);
    }
    if let Some(list) = expr.downcast_ref::<InListExpr>() {
        if list.negated() || column_index(list.expr()) != Some(col::RNAME) {
            return None;
        }
        return list.list().iter().map(|e| literal_str(e).map(|s| Region::whole(RegionReference::Named(s)))).collect();
    }
    let binary = expr.downcast_ref::<BinaryExpr>()?;
    let (column, op, value) = match (column_index(binary.left()), column_index(binary.right())) {
        (Some(c), None) => (c, *binary.op(), binary.right()),
        (None, Some(c)) => (c, binary.op().swap()?, binary.left()),
        _ => return None,
    };
    if column == col::RNAME {
        return (op == Operator::Eq)
            .then(|| literal_str(value).map(|s| vec![Region::whole(RegionReference::Named(s))]))?;
    }
    let n = literal_i64(value)?;
    let at_least =
        |v: i64| Some(vec![Region { reference: RegionReference::Any, start: v.max(1) as u64, end: u64::MAX }]);
    let at_most = |v: i64| {
        if v < 1 {
            Some(vec![])
        } else {
            Some(vec![Region { reference: RegionReference::Any, start: 1, end: v as u64 }])
        }
    };
    match (column, op) {
        // pos >= n implies endpos >= n: the record overlaps [n, ..).
        (col::POS | col::ENDPOS, Operator::GtEq) => at_least(n),
        (col::POS | col::ENDPOS, Operator::Gt) => at_least(n.saturating_add(1)),
        // endpos <= n implies pos <= n.
        (col::POS | col::ENDPOS, Operator::LtEq) => at_most(n),
        (col::POS | col::ENDPOS, Operator::Lt) => at_most(n.saturating_sub(1)),
        (col::POS, Operator::Eq) if n < 1 => Some(vec![]),
        (col::POS, Operator::Eq) => {
            Some(vec![Region { reference: RegionReference::Any, start: n as u64, end: n as u64 }])
        }
        _ => None,
    }
}

fn column_index(expr: &Arc<dyn PhysicalExpr>) -> Option<usize> {
    expr.downcast_ref::<Column>().map(|c| c.index())
}

fn literal_value(expr: &Arc<dyn PhysicalExpr>) -> Option<&ScalarValue> {
    if let Some(lit) = expr.downcast_ref::<Literal>() {
        return Some(lit.value());
    }
    // A cast literal keeps its value for our purposes (numbers and strings only).
    expr.downcast_ref::<CastExpr>().and_then(|c| literal_value(c.expr()))
}

fn literal_str(expr: &Arc<dyn PhysicalExpr>) -> Option<String> {
    literal_value(expr)?.try_as_str().flatten().map(str::to_string)
}

fn literal_i64(expr: &Arc<dyn PhysicalExpr>) -> Option<i64> {
    match literal_value(expr)?.cast_to(&arrow::datatypes::DataType::Int64).ok()? {
        ScalarValue::Int64(Some(v)) => Some(v),
        _ => None,
    }
}

/// The predicate of `regions` (any of them) over the file schema. Built from typed parts (the
/// `rname` column is Utf8, `pos` and `endpos` Int64 in every BAM schema), so it cannot fail.
pub fn region_predicate(regions: &[Region], file_schema: &SchemaRef) -> Arc<dyn PhysicalExpr> {
    use datafusion::physical_expr::expressions::{in_list, lit};
    let column = |i: usize| -> Arc<dyn PhysicalExpr> { Arc::new(Column::new(file_schema.field(i).name(), i)) };
    let compare = |i: usize, op: Operator, value: Arc<dyn PhysicalExpr>| -> Arc<dyn PhysicalExpr> {
        Arc::new(BinaryExpr::new(column(i), op, value))
    };
    let mut disjuncts = Vec::new();
    // Whole references are one `IN` list, evaluated with a hash set rather than one comparison
    // per reference (a piece of a many-contig assembly names hundreds; BENCHMARKS.md, "Depth").
    let whole: Vec<Arc<dyn PhysicalExpr>> = regions
        .iter()
        .filter(|r| r.start <= 1 && r.end == u64::MAX)
        .filter_map(|r| match &r.reference {
            RegionReference::Named(name) => Some(lit(name.as_str())),
            _ => None,
        })
        .collect();
    let listed = whole.len() > 1;
    if listed {
        let list = in_list(column(col::RNAME), whole, &false, file_schema);
        disjuncts.push(list.expect("a Utf8 column and Utf8 literals make an IN list"));
    }
    for region in regions {
        let whole_named = region.start <= 1 && region.end == u64::MAX;
        if listed && whole_named && matches!(region.reference, RegionReference::Named(_)) {
            continue; // in the list above
        }
        let mut parts: Vec<Arc<dyn PhysicalExpr>> = Vec::new();
        match &region.reference {
            RegionReference::Any => {}
            RegionReference::Named(name) => parts.push(compare(col::RNAME, Operator::Eq, lit(name.as_str()))),
            RegionReference::Unplaced => parts.push(Arc::new(IsNullExpr::new(column(col::RNAME)))),
        }
        if region.end != u64::MAX {
            parts.push(compare(col::POS, Operator::LtEq, lit(region.end as i64)));
        }
        if region.start > 1 {
            parts.push(compare(col::ENDPOS, Operator::GtEq, lit(region.start as i64)));
        }
        let all =
            parts.into_iter().reduce(|a, b| Arc::new(BinaryExpr::new(a, Operator::And, b)) as Arc<dyn PhysicalExpr>);
        disjuncts.push(all.unwrap_or_else(|| lit(true)));
    }
    any_of(disjuncts).unwrap_or_else(|| lit(false))
}

/// The disjunction of `exprs` as a balanced tree: a chain of thousands of regions (one per
/// contig of an assembly) would be as deep, and its evaluation and planning recurse that deep.
fn any_of(mut exprs: Vec<Arc<dyn PhysicalExpr>>) -> Option<Arc<dyn PhysicalExpr>> {
    if exprs.len() <= 1 {
        return exprs.pop();
    }
    let right = exprs.split_off(exprs.len() / 2);
    let (left, right) = (any_of(exprs)?, any_of(right)?);
    Some(Arc::new(BinaryExpr::new(left, Operator::Or, right)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::region::parse_regions;
    use crate::schema::bam_schema;

    #[test]
    fn region_predicates_give_their_regions_back() {
        let schema = bam_schema(&TagLayout::default());
        for text in ["chr1 chr2 chr3:5-10", "chr1", "chr1:1-5 chr2:3-4", "chrA chrB chrC chrD *"] {
            let regions = parse_regions(text).unwrap();
            let predicate = region_predicate(&regions, &schema);
            let mut back = super::regions(&predicate).unwrap();
            let mut expected = regions.clone();
            back.sort_by_key(|r| r.to_string());
            expected.sort_by_key(|r| r.to_string());
            assert_eq!(back, expected, "{text}");
        }
        // Many whole references are one IN list, not a comparison each.
        let many: Vec<Region> = (0..500).map(|i| Region::whole(RegionReference::Named(format!("contig{i}")))).collect();
        let predicate = region_predicate(&many, &schema);
        assert!(predicate.downcast_ref::<InListExpr>().is_some(), "{predicate}");
        assert_eq!(super::regions(&predicate).unwrap().len(), 500);
    }
}
