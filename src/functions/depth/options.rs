//! The options of `bam_depth`: one string of `key=value` words.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::Result;

use super::count::CountMode;
use crate::error::BamError;
use crate::options::{BamOptions, OPTIONS};

/// mosdepth's and samtools depth's default: unmapped, secondary, QC-fail and duplicate reads
/// are not counted.
pub const DEFAULT_EXCLUDE_FLAGS: u16 = 1796;

/// What `bam_depth` counts and how it sums it.
#[derive(Debug, Clone, PartialEq)]
pub struct DepthOptions {
    /// `mode`: `mosdepth` (default) or `samtools`.
    pub mode: CountMode,
    /// `count_deletions`: `D` operations count as covered (`samtools depth -J`).
    pub count_deletions: bool,
    /// `min_mapq`: reads below this mapping quality are not counted (255, unknown, always is).
    pub min_mapq: u8,
    /// `exclude_flags`: reads with any of these flag bits are not counted.
    pub exclude_flags: u16,
    /// `include_flags`: if not 0, only reads with at least one of these bits are counted.
    pub include_flags: u16,
    /// `window`: the mean depth per window of this many bases.
    pub window: Option<i64>,
    /// `regions`: the mean depth per interval of this BED file.
    pub bed: Option<String>,
    /// `thresholds`: the bases at or above each of these depths, per window or interval.
    pub thresholds: Arc<[i32]>,
    /// `max_span`: for a file without an index, counted in byte ranges on every core, how far
    /// (in bases) a read may reach past the first read of the range after it.
    pub max_span: i64,
    /// The options of the table read (`reference`, `skip_damaged`, `split`, `format`).
    pub table: BamOptions,
}

/// The default `max_span`: beyond the longest introns aligners allow by default and most long
/// reads, and little memory per byte range (docs/depth.md, "How it runs").
pub const DEFAULT_MAX_SPAN: i64 = 1 << 20;

impl Default for DepthOptions {
    fn default() -> Self {
        Self {
            mode: CountMode::Mosdepth,
            count_deletions: false,
            min_mapq: 0,
            exclude_flags: DEFAULT_EXCLUDE_FLAGS,
            include_flags: 0,
            window: None,
            bed: None,
            thresholds: Arc::from(Vec::new()),
            max_span: DEFAULT_MAX_SPAN,
            table: BamOptions::default(),
        }
    }
}

/// The keys `bam_depth` takes besides the table's options.
pub const DEPTH_KEYS: [&str; 9] = [
    "mode",
    "count_deletions",
    "min_mapq",
    "exclude_flags",
    "include_flags",
    "window",
    "regions",
    "thresholds",
    "max_span",
];

fn invalid(key: &str, reason: impl std::fmt::Display) -> datafusion::error::DataFusionError {
    BamError::invalid_option(key, reason).into()
}

fn number<T: TryFrom<u64>>(key: &str, value: &str) -> Result<T> {
    let parsed = match value.strip_prefix("0x").or_else(|| value.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => value.parse::<u64>(),
    };
    parsed
        .ok()
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| invalid(key, format!("{value:?} is not a number in range (decimal, or hex as 0x...)")))
}

impl DepthOptions {
    /// Parses `min_mapq=20 window=1000 thresholds=1,10,20 reference=ref.fa`: words separated by
    /// white space, each `key=value`. Keys other than [`DEPTH_KEYS`] are table options.
    pub fn parse(text: &str, table: BamOptions) -> Result<Self> {
        let mut options = Self { table, ..Self::default() };
        let mut table_keys = HashMap::new();
        for word in text.split_whitespace() {
            let Some((key, value)) = word.split_once('=') else {
                return Err(invalid(word, "options are key=value words, such as 'window=1000 min_mapq=20'"));
            };
            match key {
                "mode" => {
                    options.mode = match value {
                        "mosdepth" => CountMode::Mosdepth,
                        "samtools" => CountMode::Samtools,
                        _ => return Err(invalid(key, format!("{value:?} is neither mosdepth nor samtools"))),
                    }
                }
                "count_deletions" => {
                    options.count_deletions = match value {
                        "true" => true,
                        "false" => false,
                        _ => return Err(invalid(key, format!("{value:?} is neither true nor false"))),
                    }
                }
                "min_mapq" => options.min_mapq = number(key, value)?,
                "exclude_flags" => options.exclude_flags = number(key, value)?,
                "include_flags" => options.include_flags = number(key, value)?,
                "window" => {
                    let size: i64 = number(key, value)?;
                    if size == 0 {
                        return Err(invalid(key, "a window has at least one base"));
                    }
                    options.window = Some(size);
                }
                "regions" => options.bed = Some(value.to_string()),
                "max_span" => {
                    let span: u32 = number(key, value)?;
                    if span == 0 {
                        return Err(invalid(key, "a read spans at least one base"));
                    }
                    options.max_span = i64::from(span);
                }
                "thresholds" => {
                    let mut thresholds = value
                        .split(',')
                        .map(|t| number::<u32>(key, t)?.try_into().map_err(|_| invalid(key, t)))
                        .collect::<Result<Vec<i32>>>()?;
                    thresholds.sort_unstable();
                    thresholds.dedup();
                    options.thresholds = thresholds.into();
                }
                _ if OPTIONS.iter().any(|o| o.name == key) => {
                    table_keys.insert(key.to_string(), value.to_string());
                }
                _ => {
                    let table: Vec<&str> = OPTIONS.iter().map(|o| o.name).collect();
                    let reason = format!(
                        "unknown bam_depth option; valid options: {}, and the table options {}",
                        DEPTH_KEYS.join(", "),
                        table.join(", ")
                    );
                    return Err(invalid(key, reason));
                }
            }
        }
        options.table = options.table.with_map(&table_keys)?;
        if options.window.is_some() && options.bed.is_some() {
            return Err(invalid("window", "give either window or regions, not both"));
        }
        if !options.thresholds.is_empty() && options.window.is_none() && options.bed.is_none() {
            return Err(invalid(
                "thresholds",
                "thresholds are counted per window or per BED interval: give window or regions too",
            ));
        }
        Ok(options)
    }

    /// Whether the output is one row per window or interval rather than per run.
    pub fn binned(&self) -> bool {
        self.window.is_some() || self.bed.is_some()
    }

    /// Whether a read with `flag` and `mapq` (`None`: 255, unknown) is counted.
    pub fn counts(&self, flag: u16, mapq: Option<u8>) -> bool {
        flag & self.exclude_flags == 0
            && (self.include_flags == 0 || flag & self.include_flags != 0)
            && mapq.unwrap_or(255) >= self.min_mapq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_key() {
        let o = DepthOptions::parse(
            "mode=samtools count_deletions=true min_mapq=20 exclude_flags=0x400 include_flags=2 window=500 thresholds=10,1 \
             max_span=5000",
            BamOptions::default(),
        )
        .unwrap();
        assert_eq!(o.mode, CountMode::Samtools);
        assert!(o.count_deletions);
        assert_eq!((o.min_mapq, o.exclude_flags, o.include_flags, o.window), (20, 0x400, 2, Some(500)));
        assert_eq!(&o.thresholds[..], [1, 10]);
        assert_eq!(o.max_span, 5000);
        let o = DepthOptions::parse("regions=t.bed reference=ref.fa", BamOptions::default()).unwrap();
        assert_eq!(o.bed.as_deref(), Some("t.bed"));
        assert_eq!(o.table.reference.as_deref(), Some("ref.fa"));
        assert_eq!(DepthOptions::parse("", BamOptions::default()).unwrap(), DepthOptions::default());
    }

    #[test]
    fn bad_options_name_their_key() {
        for (text, key) in [
            ("mode=fast", "mode"),
            ("min_mapq=300", "min_mapq"),
            ("window=0", "window"),
            ("windows=10", "windows"),
            ("window", "window"),
            ("thresholds=1", "thresholds"),
            ("window=10 regions=x.bed", "window"),
            ("count_deletions=yes", "count_deletions"),
            ("max_span=0", "max_span"),
            ("max_span=-5", "max_span"),
        ] {
            let e = DepthOptions::parse(text, BamOptions::default()).unwrap_err();
            assert!(
                matches!(BamError::find(&e), Some(BamError::InvalidOption { key: k, .. }) if k == key),
                "{text}: {e}"
            );
        }
    }

    #[test]
    fn the_default_filter_is_mosdepths() {
        let o = DepthOptions::default();
        assert!(o.counts(0, Some(0)) && o.counts(0x800, None));
        for flag in [0x4, 0x100, 0x200, 0x400] {
            assert!(!o.counts(flag, Some(60)));
        }
        let o = DepthOptions { min_mapq: 30, include_flags: 0x40, ..DepthOptions::default() };
        assert!(o.counts(0x41, None) && !o.counts(0x41, Some(29)) && !o.counts(0x80, Some(60)));
    }
}
