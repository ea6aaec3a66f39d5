//! The DataFusion glue, split as `datafusion-datasource-csv` and `-parquet` are: the
//! [`FileFormat`](datafusion::datasource::file_format::FileFormat) and its factory, the
//! [`FileSource`](datafusion::datasource::physical_plan::FileSource) and its opener, listing
//! tables, the `STORED AS` table factory.

pub mod file_format;
pub mod listing;
pub mod opener;
pub mod source;
pub mod table;
