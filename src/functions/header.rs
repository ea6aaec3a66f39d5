//! `bam_header('path')`: the SAM header of a BAM file as a table, one row per header line.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableFunctionImpl, TableProvider};
use datafusion::common::{plan_err, DataFusionError, Result};
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;

use super::literal_str;
use crate::formats::read_sam_header;
use crate::io::store::object_store_for;

/// The `bam_header` table function.
#[derive(Debug, Default)]
pub struct BamHeaderFunction;

impl TableFunctionImpl for BamHeaderFunction {
    fn call(&self, args: &[Expr]) -> Result<Arc<dyn TableProvider>> {
        match args.iter().map(literal_str).collect::<Option<Vec<_>>>().as_deref() {
            Some([path]) => Ok(Arc::new(BamHeaderTable { path: path.to_string() })),
            _ => plan_err!("bam_header takes one argument, the path of a BAM file as a string literal"),
        }
    }
}

/// The header of one BAM file; read when the table is scanned.
#[derive(Debug)]
pub struct BamHeaderTable {
    path: String,
}

fn header_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("line_number", DataType::Int64, false),
        Field::new("record_type", DataType::Utf8, false),
        Field::new("line", DataType::Utf8, false),
    ]))
}

/// The header as SAM text lines (the text `samtools view -H` prints, with `@SQ` lines made from
/// the binary reference list when the text header has none).
pub async fn header_lines(state: &dyn Session, path: &str) -> Result<Vec<String>> {
    let url = ListingTableUrl::parse(path)?;
    let store = object_store_for(state.runtime_env(), &url, &HashMap::new()).await?;
    let location = url.prefix().clone();
    let header = read_sam_header(&store, &location).await?;
    let mut writer = noodles_sam::io::Writer::new(Vec::new());
    writer
        .write_header(&header)
        .map_err(|e| DataFusionError::Execution(format!("{location}: cannot format its header: {e}")))?;
    let text = String::from_utf8_lossy(writer.get_ref()).into_owned();
    Ok(text.lines().map(str::to_string).collect())
}

#[async_trait]
impl TableProvider for BamHeaderTable {
    fn schema(&self) -> SchemaRef {
        header_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let lines = header_lines(state, &self.path).await?;
        let record_types: Vec<&str> = lines.iter().map(|l| l.get(1..3).unwrap_or("")).collect();
        let batch = RecordBatch::try_new(
            header_schema(),
            vec![
                Arc::new(Int64Array::from_iter_values(1..=lines.len() as i64)),
                Arc::new(StringArray::from(record_types)),
                Arc::new(StringArray::from_iter_values(&lines)),
            ],
        )?;
        MemTable::try_new(header_schema(), vec![vec![batch]])?.scan(state, projection, filters, limit).await
    }
}
