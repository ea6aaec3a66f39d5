//! Table options, from Rust or from `CREATE EXTERNAL TABLE ... OPTIONS (...)`.

pub mod region;

use std::collections::HashMap;

use datafusion::common::Result;

use crate::error::BamError;

use crate::options::region::{parse_regions, Region};
use crate::schema::{parse_tag_name, TagKind, TagName};

/// Which aux tags become fields of the `tags` struct. Tags outside it go to `tags_extra`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TagSelection {
    /// Tags seen in the first records of the files (see [`BamOptions::tag_sample_records`]),
    /// typed by the SAM tags specification where it predefines the tag, else as observed.
    #[default]
    Auto,
    /// No struct fields: every aux field goes to `tags_extra`.
    None,
    /// Exactly these tags, in this order. A kind given as `TAG:TYPE` wins; otherwise the
    /// specification's type, else the type seen in the sample, else `Z`.
    List(Vec<(TagName, Option<TagKind>)>),
}

impl TagSelection {
    /// Parses `auto`, `none`, or a comma-separated list like `NM,MD,XS:i,ZB:B:f`.
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("auto") {
            return Ok(Self::Auto);
        }
        if s.eq_ignore_ascii_case("none") || s.is_empty() {
            return Ok(Self::None);
        }
        let mut list: Vec<(TagName, Option<TagKind>)> = Vec::new();
        for entry in s.split(',').map(str::trim) {
            let (name, kind) = match entry.split_once(':') {
                Some((name, ty)) => match TagKind::from_sam_type(ty) {
                    Some(kind) => (name, Some(kind)),
                    None => return invalid("tags", format!("invalid tag type in {entry:?}: expected one of A, Z, H, i, f, B:c, B:C, B:s, B:S, B:i, B:I, B:f")),
                },
                None => (entry, None),
            };
            let name = parse_tag_name(name)?;
            if list.iter().any(|(n, _)| *n == name) {
                return invalid("tags", format!("tag {entry:?} is listed twice"));
            }
            list.push((name, kind));
        }
        Ok(Self::List(list))
    }
}

/// The alignment format of a table's files: `STORED AS BAM`, `STORED AS CRAM` or `STORED AS
/// SAM`. All give the same columns, options and behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AlignmentFormat {
    #[default]
    Bam,
    Cram,
    /// SAM text, plain or BGZF-compressed (`.sam.gz`).
    Sam,
}

impl AlignmentFormat {
    /// The file extension, without its dot (`bam`, `cram`): what directories and globs list.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Bam => "bam",
            Self::Cram => "cram",
            Self::Sam => "sam",
        }
    }

    /// The name in `STORED AS` and in messages (`BAM`, `CRAM`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Bam => "BAM",
            Self::Cram => "CRAM",
            Self::Sam => "SAM",
        }
    }

    /// The format `STORED AS name` names, if it is one of these.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name().eq_ignore_ascii_case(name))
    }

    /// Every format.
    pub const ALL: [Self; 3] = [Self::Bam, Self::Cram, Self::Sam];

    /// The format a path's name suggests: `.cram` is CRAM, `.sam` and `.sam.gz` are SAM, the rest
    /// BAM (for the table functions and the Python helpers, which take paths).
    pub fn of_path(path: &str) -> Self {
        let path = path.to_ascii_lowercase();
        if path.ends_with(".cram") {
            Self::Cram
        } else if path.ends_with(".sam") || path.ends_with(".sam.gz") {
            Self::Sam
        } else {
            Self::Bam
        }
    }
}

/// The index `COPY ... STORED AS BAM` writes beside a coordinate-sorted output (option `index`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputIndex {
    #[default]
    None,
    /// `x.bam.bai`, as `samtools index` writes.
    Bai,
    /// `x.bam.csi`, as `samtools index -c` writes (for references longer than BAI allows).
    Csi,
    /// `x.cram.crai`, as `samtools index` writes for CRAM.
    Crai,
}

impl OutputIndex {
    /// The option's value for this index (`none`, `bai`, `csi`, `crai`).
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Bai => "bai",
            Self::Csi => "csi",
            Self::Crai => "crai",
        }
    }

    /// The index an option value names, in any case; an empty value is `none`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "" => Some(Self::None),
            name => [Self::None, Self::Bai, Self::Csi, Self::Crai].into_iter().find(|i| i.name() == name),
        }
    }
}

/// About what 10,000 short reads with a few tags take: long reads stop the sample there.
pub const DEFAULT_TAG_SAMPLE_BYTES: usize = 4 << 20;

/// BGZF's (and samtools') default compression level.
pub const DEFAULT_COMPRESSION_LEVEL: u8 = 6;

/// Options of a BAM table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BamOptions {
    /// Option `tags`: `auto` (default), `none`, or a list such as `NM,MD,AS`.
    pub tags: TagSelection,
    /// Option `tag_sample_records`: how many records (over all files) `auto` inspects.
    pub tag_sample_records: usize,
    /// Option `tag_sample_bytes`: how many bytes of records (uncompressed, over all files) `auto`
    /// inspects at most, so that a file of long reads is sampled as quickly as one of short
    /// reads. At least one record is read.
    pub tag_sample_bytes: usize,
    /// Option `split`: whether a file may be split into byte ranges decoded in parallel.
    pub split: bool,
    /// Option `region`: only records overlapping these regions (samtools syntax, separated by
    /// spaces, e.g. `chr1:100-200 chr2`); empty means every record.
    pub regions: Vec<Region>,
    /// Option `skip_damaged`: skip damaged records and unreadable stretches of a file, counting
    /// them (`EXPLAIN ANALYZE`, warnings), instead of failing the query.
    pub skip_damaged: bool,
    /// Option `header`, for `COPY ... STORED AS BAM`: the BAM file whose header the output takes
    /// (by default, the header of the BAM table the query reads).
    pub header: Option<String>,
    /// Option `compression_level`, for `COPY ... STORED AS BAM`: BGZF's level, 0 (stored) to 9.
    pub compression_level: u8,
    /// Option `index`, for `COPY ... STORED AS BAM`: `bai` or `csi` writes that index beside the
    /// output, which must then be coordinate-sorted.
    pub index: OutputIndex,
    /// The files' format: set by `STORED AS` (or [`with_format`](Self::with_format)), not an option.
    pub format: AlignmentFormat,
    /// Option `reference`, for CRAM: the FASTA file (with its `.fai`; or bgzipped, with `.fai` and
    /// `.gzi`) the records were compressed against. CRAMs with embedded references or without
    /// reference-based compression need none.
    pub reference: Option<String>,
}

impl Default for BamOptions {
    fn default() -> Self {
        Self {
            tags: TagSelection::Auto,
            tag_sample_records: 10_000,
            tag_sample_bytes: DEFAULT_TAG_SAMPLE_BYTES,
            split: true,
            regions: Vec::new(),
            skip_damaged: false,
            header: None,
            compression_level: DEFAULT_COMPRESSION_LEVEL,
            index: OutputIndex::None,
            format: AlignmentFormat::Bam,
            reference: None,
        }
    }
}

/// Whether an `OPTIONS` key belongs to the BAM format: `format.`-prefixed (as DataFusion passes
/// them) or without a namespace. Keys of another namespace (`aws.region`, ...) configure the
/// object store.
pub fn is_format_option(key: &str) -> bool {
    key.starts_with("format.") || !key.contains('.')
}

/// One table option, declared once: its `OPTIONS` key, its default as it would be written, what
/// it does, and how its value is set. [`OPTIONS`] lists them all; the parser, the error for an
/// unknown key and the option table of `docs/options.md` (checked by a test) come from it.
pub struct OptionSpec {
    pub name: &'static str,
    /// The default, written as a value of the option (`None`: unset).
    pub default: Option<&'static str>,
    /// Where the option applies, if not to every table (`COPY ... STORED AS BAM`, CRAM).
    pub scope: &'static str,
    pub doc: &'static str,
    set: fn(&mut BamOptions, &str) -> Result<()>,
}

/// Every table option, in the order the docs list them.
pub const OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        name: "tags",
        default: Some("auto"),
        scope: "",
        doc: "`auto`: the tags seen in the first records of the files, typed by the SAM tags specification where it \
              predefines the tag (`NM` is always an integer), else as observed. `none` (or `''`): no `tags` column, \
              every aux field in `tags_extra`. A list such as `NM,MD,AS` or `XS:i,ZB:B:f`: exactly these fields, typed \
              as given, else by the specification, else as sampled, else `Z`",
        set: |o, v| {
            o.tags = TagSelection::parse(v)?;
            Ok(())
        },
    },
    OptionSpec {
        name: "tag_sample_records",
        default: Some("10000"),
        scope: "",
        doc: "how many records, over all files, `auto` inspects at most",
        set: |o, v| {
            o.tag_sample_records = parse_count("tag_sample_records", v)?;
            Ok(())
        },
    },
    OptionSpec {
        name: "tag_sample_bytes",
        default: Some("4194304"),
        scope: "",
        doc: "how many bytes of records (uncompressed, over all files) `auto` inspects at most, so that long reads \
              are sampled as quickly as short ones; at least one record is read",
        set: |o, v| {
            o.tag_sample_bytes = parse_count("tag_sample_bytes", v)?;
            Ok(())
        },
    },
    OptionSpec {
        name: "split",
        default: Some("true"),
        scope: "",
        doc: "whether files may be split into byte ranges decoded in parallel ([scanning](scanning.md))",
        set: |o, v| {
            o.split = parse_bool("split", v)?;
            Ok(())
        },
    },
    OptionSpec {
        name: "region",
        default: None,
        scope: "",
        doc: "only records overlapping these regions, in samtools syntax, separated by spaces: \
              `'chr1:100000-200000 chr2 *'`; a reference no file has is an error ([scanning](scanning.md))",
        set: |o, v| {
            o.regions = parse_regions(v)?;
            Ok(())
        },
    },
    OptionSpec {
        name: "skip_damaged",
        default: Some("false"),
        scope: "",
        doc: "skip damaged records and unreadable stretches instead of failing ([errors](errors.md))",
        set: |o, v| {
            o.skip_damaged = parse_bool("skip_damaged", v)?;
            Ok(())
        },
    },
    OptionSpec {
        name: "reference",
        default: None,
        scope: "`STORED AS CRAM`",
        doc: "the FASTA (with `.fai`; bgzipped with `.gzi` too) the records were compressed against \
              ([CRAM](formats.md))",
        set: |o, v| {
            o.reference = Some(v.to_string()).filter(|v| !v.trim().is_empty());
            Ok(())
        },
    },
    OptionSpec {
        name: "header",
        default: None,
        scope: "`COPY ... STORED AS BAM`",
        doc: "the BAM, CRAM or SAM file whose header the output takes; by default the query's files' \
              ([writing](writing.md))",
        set: |o, v| {
            o.header = Some(v.to_string());
            Ok(())
        },
    },
    OptionSpec {
        name: "compression_level",
        default: Some("6"),
        scope: "`COPY ... STORED AS BAM`",
        doc: "BGZF compression level, 0 (stored) to 9, as `samtools view -l`",
        set: |o, v| {
            o.compression_level = match v.trim().parse() {
                Ok(level @ 0..=9) => level,
                _ => return invalid("compression_level", format!("must be a whole number from 0 to 9, got {v:?}")),
            };
            Ok(())
        },
    },
    OptionSpec {
        name: "index",
        default: Some("none"),
        scope: "`COPY ... STORED AS BAM` or `CRAM`",
        doc: "`bai` or `csi` writes `out.bam.bai` (or `.csi`) beside a coordinate-sorted BAM output, as \
              `samtools index` (`-c`) would; `crai`, `out.cram.crai` beside a coordinate-sorted local CRAM output",
        set: |o, v| {
            o.index = match OutputIndex::from_name(v) {
                Some(index) => index,
                None => return invalid("index", format!("must be bai, csi, crai or none, got {v:?}")),
            };
            Ok(())
        },
    },
];

/// A [`BamError::InvalidOption`] as a `Result`.
fn invalid<T>(key: &str, reason: String) -> Result<T> {
    Err(BamError::invalid_option(key, reason).into())
}

fn parse_count(option: &str, value: &str) -> Result<usize> {
    value.trim().parse().or_else(|_| invalid(option, format!("must be a whole number, got {value:?}")))
}

fn parse_bool(option: &str, value: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => invalid(option, format!("must be true or false, got {value:?}")),
    }
}

impl BamOptions {
    pub fn with_split(mut self, split: bool) -> Self {
        self.split = split;
        self
    }

    pub fn with_tags(mut self, tags: TagSelection) -> Self {
        self.tags = tags;
        self
    }

    pub fn with_skip_damaged(mut self, skip: bool) -> Self {
        self.skip_damaged = skip;
        self
    }

    /// The header of a BAM output: that of the BAM file at `location`.
    pub fn with_header(mut self, location: impl Into<String>) -> Self {
        self.header = Some(location.into());
        self
    }

    /// The files' format (BAM by default).
    pub fn with_format(mut self, format: AlignmentFormat) -> Self {
        self.format = format;
        self
    }

    /// The reference FASTA of CRAM files (option `reference`).
    pub fn with_reference(mut self, path: impl Into<String>) -> Self {
        self.reference = Some(path.into());
        self
    }

    /// Only records overlapping `regions` (see [`parse_regions`]).
    pub fn with_regions(mut self, regions: Vec<Region>) -> Self {
        self.regions = regions;
        self
    }

    /// Reads `OPTIONS (...)` of `CREATE EXTERNAL TABLE`. DataFusion prefixes the keys with
    /// `format.`; both spellings are accepted. Unknown keys are an error, not silently ignored.
    pub fn from_map(map: &HashMap<String, String>) -> Result<Self> {
        Self::default().with_map(map)
    }

    /// These options with the format keys of `map` set over them, key by key: options `map` does
    /// not name keep their values (as DataFusion's CSV options merge).
    pub fn with_map(mut self, map: &HashMap<String, String>) -> Result<Self> {
        for (key, value) in map {
            if !is_format_option(key) {
                continue;
            }
            let name = key.strip_prefix("format.").unwrap_or(key);
            let Some(option) = OPTIONS.iter().find(|o| o.name == name) else {
                let names: Vec<&str> = OPTIONS.iter().map(|o| o.name).collect();
                let reason =
                    format!("unknown {} table option; valid options: {}", self.format.name(), names.join(", "));
                return invalid(name, reason);
            };
            (option.set)(&mut self, value)?;
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_defaults_are_the_defaults() {
        // Options declared without a default are unset (`None` or empty) by default.
        for option in OPTIONS {
            let Some(default) = option.default else { continue };
            let mut set = BamOptions::default();
            (option.set)(&mut set, default).unwrap();
            assert_eq!(set, BamOptions::default(), "option {}", option.name);
        }
        let unset = BamOptions::default();
        assert!(unset.regions.is_empty() && unset.reference.is_none() && unset.header.is_none());
    }

    /// The option table of `docs/options.md`, made from [`OPTIONS`].
    fn options_markdown() -> String {
        let mut table = String::from("| option | default | applies to | meaning |\n|---|---|---|---|\n");
        for option in OPTIONS {
            let default = option.default.map_or("none".to_string(), |d| format!("`{d}`"));
            let scope = if option.scope.is_empty() { "every table" } else { option.scope };
            table.push_str(&format!("| `{}` | {default} | {scope} | {} |\n", option.name, option.doc));
        }
        table
    }

    #[test]
    fn docs_list_every_option_as_declared() {
        let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/options.md")).unwrap();
        assert!(docs.contains(&options_markdown()), "docs/options.md: paste this table:\n{}", options_markdown());
    }

    #[test]
    fn bad_values_are_invalid_option_errors() {
        for (key, value) in [("split", "maybe"), ("compression_level", "10"), ("index", "tbi"), ("nope", "1")] {
            let err = BamOptions::from_map(&HashMap::from([(key.to_string(), value.to_string())])).unwrap_err();
            match BamError::find(&err) {
                Some(BamError::InvalidOption { key: k, .. }) => assert_eq!(k, key),
                other => panic!("{key}: {other:?}"),
            }
        }
    }

    #[test]
    fn parses_tag_lists() {
        assert_eq!(TagSelection::parse("AUTO").unwrap(), TagSelection::Auto);
        assert_eq!(TagSelection::parse("none").unwrap(), TagSelection::None);
        assert_eq!(
            TagSelection::parse("NM, XS:i,ZB:B:f").unwrap(),
            TagSelection::List(vec![
                (*b"NM", None),
                (*b"XS", Some(TagKind::Int(Default::default()))),
                (*b"ZB", Some(TagKind::FloatArray)),
            ])
        );
        assert!(TagSelection::parse("NM,NM").is_err());
        assert!(TagSelection::parse("NM:q").is_err());
        assert!(TagSelection::parse("N").is_err());
    }

    #[test]
    fn reads_prefixed_option_keys() {
        let map = HashMap::from([
            ("format.tags".to_string(), "NM".to_string()),
            ("tag_sample_records".to_string(), "5".to_string()),
        ]);
        let o = BamOptions::from_map(&map).unwrap();
        assert_eq!(o.tags, TagSelection::List(vec![(*b"NM", None)]));
        assert_eq!(o.tag_sample_records, 5);
        let store = HashMap::from([("aws.region".to_string(), "us-east-1".to_string())]);
        assert_eq!(
            BamOptions::from_map(&store).unwrap(),
            BamOptions::default(),
            "object-store keys are not the format's"
        );
        let bad = HashMap::from([("format.tagz".to_string(), "NM".to_string())]);
        let err = BamOptions::from_map(&bad).unwrap_err().to_string();
        assert!(err.contains("tagz"), "{err}");
    }

    #[test]
    fn options_merge_key_by_key() {
        let base = BamOptions::default().with_split(false).with_tags(TagSelection::parse("NM").unwrap());
        let map = HashMap::from([("format.skip_damaged".to_string(), "true".to_string())]);
        let merged = base.clone().with_map(&map).unwrap();
        assert_eq!(merged, base.with_skip_damaged(true));
        for name in OPTIONS.iter().map(|o| o.name) {
            let err = BamOptions::from_map(&HashMap::from([("nope".to_string(), "x".to_string())])).unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
    }
}
