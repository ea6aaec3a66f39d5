//! Table functions: `bam_header(path)`, `bam_region(path, region, ...)` and
//! `bam_depth(path [, region] [, options])`.

pub mod depth;
pub mod header;
pub mod region;

use datafusion::common::ScalarValue;
use datafusion::logical_expr::Expr;

/// The text of a string literal argument.
fn literal_str(e: &Expr) -> Option<&str> {
    match e {
        Expr::Literal(
            ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)),
            _,
        ) => Some(s),
        _ => None,
    }
}
