//! Parquet writer settings suited to the table's columns. The CLI and the Python package make
//! them the defaults of `COPY ... STORED AS PARQUET`; a statement's own `OPTIONS` override them.
//!
//! ```
//! use datafusion::prelude::SessionContext;
//! use datafusion_bam::set_parquet_column_defaults;
//!
//! let ctx = SessionContext::new();
//! set_parquet_column_defaults(&mut ctx.state_ref().write().table_options_mut().parquet).unwrap();
//! ```

use datafusion::common::config::{ConfigField, TableParquetOptions};
use datafusion::error::Result;

use crate::schema::{col, COLUMN_NAMES};

/// Columns whose values rarely repeat from one row to the next: the writer builds a dictionary
/// for each of their pages, finds it too large and falls back to plain encoding, so trying costs
/// CPU and saves no bytes. (Tag columns such as `tags.MD` are left out: a COPY's OPTIONS could
/// not turn them back on, because DataFusion 55 lowercases option keys, `parse_options_map` in
/// datafusion-sql's `statement.rs`.)
const RARELY_REPEATED: [usize; 8] =
    [col::QNAME, col::SEQ, col::QUAL, col::CIGAR, col::POS, col::ENDPOS, col::PNEXT, col::TLEN];

/// Columns whose minimum and maximum no reader prunes by (bases, qualities), while computing them
/// compares long strings on every page.
const NO_STATISTICS: [usize; 2] = [col::SEQ, col::QUAL];

/// The settings as `(key, value)` pairs of [`TableParquetOptions`], in the form that
/// `COPY ... OPTIONS ('format.<key>' '<value>')` takes.
pub fn parquet_column_options() -> Vec<(String, &'static str)> {
    let no_dictionary =
        RARELY_REPEATED.iter().map(|&id| (format!("dictionary_enabled::{}", COLUMN_NAMES[id]), "false"));
    let no_statistics = NO_STATISTICS.iter().map(|&id| (format!("statistics_enabled::{}", COLUMN_NAMES[id]), "none"));
    no_dictionary.chain(no_statistics).collect()
}

/// Sets [`parquet_column_options`] in `options`, such as a session's
/// `table_options_mut().parquet`, the defaults every `COPY ... STORED AS PARQUET` of the session
/// starts from.
pub fn set_parquet_column_defaults(options: &mut TableParquetOptions) -> Result<()> {
    for (key, value) in parquet_column_options() {
        options.set(&key, value)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_name_columns_of_the_table() {
        let mut options = TableParquetOptions::default();
        set_parquet_column_defaults(&mut options).unwrap();
        let columns = &options.column_specific_options;
        assert_eq!(columns["seq"].dictionary_enabled, Some(false));
        assert_eq!(columns["seq"].statistics_enabled.as_deref(), Some("none"));
        assert_eq!(columns["qname"].statistics_enabled, None);
        assert!(!columns.contains_key("rname") && !columns.contains_key("flag"));
        for column in columns.keys() {
            // Lowercase, so a COPY's OPTIONS can name them to override.
            assert!(COLUMN_NAMES.contains(&column.as_str()) && *column == column.to_lowercase(), "{column}");
        }
    }
}
