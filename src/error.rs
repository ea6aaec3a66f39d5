//! The errors of this crate, as one public enum.
//!
//! See [`BamError`].

use std::fmt;

use datafusion::error::DataFusionError;

/// What went wrong, with where.
///
/// DataFusion's API returns [`DataFusionError`], so a [`BamError`] travels inside
/// [`DataFusionError::External`]. A caller finds it again with [`BamError::find`], which looks
/// through DataFusion's wrappers (`Context`, `Shared`, `External`), and `match`es on it:
///
/// ```no_run
/// use datafusion::prelude::SessionContext;
/// use datafusion_bam::{BamError, BamOptions, BamSessionExt};
///
/// # async fn run() {
/// let ctx = SessionContext::new();
/// match ctx.register_bam("reads", "missing.bam", BamOptions::default()).await {
///     Err(e) => match BamError::find(&e) {
///         Some(BamError::NotFound { location, .. }) => eprintln!("no such file: {location}"),
///         Some(other) => eprintln!("cannot read it: {other}"),
///         None => eprintln!("{e}"),
///     },
///     Ok(()) => {}
/// }
/// # }
/// ```
///
/// Every message names the location as the user wrote it, and where it can, the byte, virtual
/// offset (`compressed:uncompressed`) or row. The errors of object_store and noodles stay
/// reachable through [`std::error::Error::source`].
#[derive(Debug)]
#[non_exhaustive]
pub enum BamError {
    /// A file, index, reference or directory does not exist (or is empty of files).
    NotFound {
        location: String,
        /// What was not found there: `not found`, or `no .bam files there` for a directory.
        detail: String,
        /// object_store's error, when the store said so.
        source: Option<object_store::Error>,
    },
    /// An object store refused or failed a request for `location` (credentials, network).
    Store { location: String, source: object_store::Error },
    /// A table, COPY or function option has a value that cannot be used.
    InvalidOption { key: String, reason: String },
    /// A file's bytes are not what its format says. `at` says where, as a phrase (`at virtual
    /// offset 0:1234, i.e. BGZF block at byte 0`, `in the container at byte 5422`), or is empty.
    Damaged {
        file: String,
        at: String,
        reason: String,
        /// The parser's own error (noodles, I/O), when there is one.
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A CRAM file's records are compressed against a reference that was not given, or that
    /// lacks the sequence, or whose sequence differs (its MD5).
    MissingReference { file: String, sequence: String, md5: Option<String>, reason: String },
    /// Something valid that this crate does not do.
    Unsupported { what: String },
    /// A file that must be coordinate-sorted is not: `record` names the first record out of
    /// order and where it is, `reason` what it follows.
    Unsorted { file: String, record: String, reason: String },
    /// A row that cannot be written as an alignment record: `row` counts from 1 in what the
    /// writer of `output` received.
    InvalidRow { output: String, row: u64, qname: String, reason: String },
}

impl BamError {
    /// A [`BamError::Damaged`] without a source error.
    pub fn damaged(file: impl fmt::Display, at: impl fmt::Display, reason: impl fmt::Display) -> Self {
        Self::Damaged { file: file.to_string(), at: at.to_string(), reason: reason.to_string(), source: None }
    }

    /// A [`BamError::InvalidOption`].
    pub fn invalid_option(key: impl fmt::Display, reason: impl fmt::Display) -> Self {
        Self::InvalidOption { key: key.to_string(), reason: reason.to_string() }
    }

    /// A [`BamError::NotFound`] saying `not found`.
    pub fn not_found(location: impl fmt::Display, source: Option<object_store::Error>) -> Self {
        Self::NotFound { location: location.to_string(), detail: "not found".to_string(), source }
    }

    /// The error of an object-store request for `location`: [`BamError::NotFound`] when the
    /// store says the object does not exist, else [`BamError::Store`].
    pub fn store(location: impl fmt::Display, source: object_store::Error) -> Self {
        let location = location.to_string();
        match source {
            object_store::Error::NotFound { .. } => Self::not_found(location, Some(source)),
            source => Self::Store { location, source },
        }
    }

    /// The message to show a user for `error`: its [`BamError`]'s, without DataFusion's
    /// `External error: ` prefix, when it has one; else DataFusion's.
    pub fn message_of(error: &DataFusionError) -> String {
        Self::find(error).map_or_else(|| error.to_string(), ToString::to_string)
    }

    /// The [`BamError`] inside `error`, looking through DataFusion's wrappers.
    pub fn find(error: &DataFusionError) -> Option<&BamError> {
        match error {
            DataFusionError::External(e) => e.downcast_ref::<BamError>(),
            DataFusionError::Context(_, inner) => Self::find(inner),
            DataFusionError::Shared(inner) => Self::find(inner),
            DataFusionError::ArrowError(e, _) => match e.as_ref() {
                arrow::error::ArrowError::ExternalError(inner) => {
                    inner.downcast_ref::<DataFusionError>().and_then(Self::find).or_else(|| inner.downcast_ref())
                }
                _ => None,
            },
            _ => None,
        }
    }
}

impl fmt::Display for BamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotFound { location, detail, source: Some(source) } => write!(f, "{location}: {detail} ({source})"),
            Self::NotFound { location, detail, source: None } => write!(f, "{location}: {detail}"),
            Self::Store { location, source } => write!(f, "{location}: {source}"),
            Self::InvalidOption { key, reason } => write!(f, "option {key}: {reason}"),
            Self::Damaged { file, at, reason, .. } if at.is_empty() => write!(f, "{file}: {reason}"),
            Self::Damaged { file, at, reason, .. } => write!(f, "{file}: {reason} ({at})"),
            Self::MissingReference { file, reason, .. } => write!(f, "{file}: {reason}"),
            Self::Unsupported { what } => write!(f, "not supported: {what}"),
            Self::Unsorted { file, record, reason } => {
                write!(f, "{file}: not coordinate-sorted: record {record} {reason} (sort it with samtools sort)")
            }
            Self::InvalidRow { output, row, qname, reason } => {
                write!(f, "{output}: row {row} (qname {qname}) cannot be a record: {reason}")
            }
        }
    }
}

impl std::error::Error for BamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::NotFound { source: Some(source), .. } | Self::Store { source, .. } => Some(source),
            Self::Damaged { source: Some(source), .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

impl From<BamError> for DataFusionError {
    fn from(error: BamError) -> Self {
        DataFusionError::External(Box::new(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn found_through_datafusion_wrappers() {
        let inner: DataFusionError = BamError::invalid_option("region", "no reference chrZZ").into();
        let wrapped = DataFusionError::Context("planning".into(), Box::new(inner));
        let shared = DataFusionError::Shared(std::sync::Arc::new(wrapped));
        assert!(matches!(BamError::find(&shared), Some(BamError::InvalidOption { key, .. }) if key == "region"));
        assert!(BamError::find(&DataFusionError::Plan("other".into())).is_none());
        assert_eq!(BamError::message_of(&shared), "option region: no reference chrZZ");
        assert_eq!(BamError::message_of(&DataFusionError::Plan("other".into())), "Error during planning: other");
    }

    #[test]
    fn a_store_not_found_is_not_found_and_keeps_its_source() {
        let source = object_store::Error::NotFound { path: "x.bam".into(), source: "gone".into() };
        let error = BamError::store("s3://bucket/x.bam", source);
        assert!(matches!(&error, BamError::NotFound { location, .. } if location == "s3://bucket/x.bam"));
        assert!(std::error::Error::source(&error).is_some());
    }
}
