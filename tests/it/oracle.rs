//! samtools as the oracle: its `view` output and the provider's rows, both turned into the same
//! canonical form (SAM text fields, tags as a sorted multiset of typed values).

use std::path::{Path, PathBuf};
use std::process::Command;

use arrow::array::{Array, AsArray, RecordBatch, StructArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float32Type, Int64Type};
use datafusion_bam::SAM_TYPE_KEY;

/// A tag value. Integers compare regardless of their BAM width (`samtools view` prints every
/// width as `i`); floats compare at the 6 significant digits samtools prints.
#[derive(Debug, Clone)]
pub enum TagValue {
    Char(String),
    Str(String),
    Hex(String),
    Int(i64),
    Float(String),
    /// A `B` array of integers with its subtype letter (the `tags` struct keeps it in the field's
    /// `sam_type`, README).
    IntArray(Vec<i64>, char),
    FloatArray(Vec<String>),
}

impl TagValue {
    fn key(&self) -> (u8, &str, i64, &[i64], &[String], char) {
        match self {
            Self::Char(s) => (0, s, 0, &[], &[], ' '),
            Self::Str(s) => (1, s, 0, &[], &[], ' '),
            Self::Hex(s) => (2, s, 0, &[], &[], ' '),
            Self::Int(v) => (3, "", *v, &[], &[], ' '),
            Self::Float(s) => (4, s, 0, &[], &[], ' '),
            Self::IntArray(v, subtype) => (5, "", 0, v, &[], *subtype),
            Self::FloatArray(v) => (6, "", 0, &[], v, ' '),
        }
    }
}

impl PartialEq for TagValue {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for TagValue {}

impl PartialOrd for TagValue {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for TagValue {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

fn float6(v: f32) -> String {
    format!("{:.5e}", v)
}

/// The SAM columns of a row, in SAM order, as the table's columns hold them.
pub const SAM_COLUMNS: [&str; 11] =
    ["qname", "flag", "rname", "pos", "mapq", "cigar", "rnext", "pnext", "tlen", "seq", "qual"];

/// What `samtools view` prints for a null in each of [`SAM_COLUMNS`] (`None`: never null).
const SAM_PLACEHOLDERS: [Option<&str>; 11] =
    [Some("*"), None, Some("*"), Some("0"), Some("255"), Some("*"), Some("*"), Some("0"), None, Some("*"), Some("*")];

/// One record in canonical form.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Row {
    /// QNAME FLAG RNAME POS MAPQ CIGAR RNEXT PNEXT TLEN SEQ QUAL as the README promises the
    /// columns: `None` where samtools prints a placeholder (`*`, POS/PNEXT 0, MAPQ 255), and
    /// RNEXT `=` resolved to RNAME.
    pub fields: Vec<Option<String>>,
    pub tags: Vec<(String, TagValue)>,
}

impl Row {
    /// Field `i` of [`SAM_COLUMNS`] as `samtools view` prints it.
    pub fn sam_field(&self, i: usize) -> &str {
        self.fields[i].as_deref().or(SAM_PLACEHOLDERS[i]).expect("a never-null column is null")
    }
}

/// The checkout under test: the crate's directory, or the workspace root above it for the CLI
/// crate's tests. Read at run time, not compile time: a build cache shared between checkouts
/// must not send the tests to another checkout's files.
pub fn repo_root() -> PathBuf {
    let manifest =
        std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest
        .ancestors()
        .find(|dir| dir.join("tests/data/sample.bam").exists())
        .unwrap_or_else(|| panic!("no tests/data/sample.bam at or above {}", manifest.display()))
        .to_path_buf()
}

pub fn data(name: &str) -> PathBuf {
    repo_root().join("tests/data").join(name)
}

/// Which index a copy of a test file gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexKind {
    Bai,
    Csi,
    None,
}

/// A copy of test file `name` in `dir` (under a name telling the index kind), indexed by
/// samtools as asked, the index written after the copy so it is the newer file.
pub fn indexed_copy(dir: &Path, name: &str, kind: IndexKind) -> PathBuf {
    let path = dir.join(format!("{kind:?}_{name}").to_lowercase());
    std::fs::copy(data(name), &path).unwrap();
    let p = path.to_str().unwrap();
    match kind {
        IndexKind::Bai => {
            samtools(&["index", p]);
        }
        IndexKind::Csi => {
            samtools(&["index", "-c", p]);
        }
        IndexKind::None => {}
    }
    path
}

/// A seeded pseudo-random generator (a 64-bit linear congruential one): each call gives a
/// number below its argument, the same sequence for the same seed.
pub fn seeded_below(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut state = seed;
    move |m| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) % m
    }
}

/// `samtools view -c ARGS`: the number of records it counts.
pub fn samtools_count(args: &[&str]) -> i64 {
    let mut all = vec!["view", "-c"];
    all.extend_from_slice(args);
    samtools(&all).trim().parse().unwrap()
}

/// `samtools view -c PATH EXTRA`.
pub fn samtools_count_of(path: &Path, extra: &[&str]) -> i64 {
    let mut args = vec![path.to_str().unwrap()];
    args.extend_from_slice(extra);
    samtools_count(&args)
}

pub fn samtools(args: &[&str]) -> String {
    let out = Command::new("samtools")
        .args(args)
        .output()
        .expect("samtools must be installed: it is the oracle of these tests (apt-get install samtools)");
    assert!(out.status.success(), "samtools {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("samtools prints UTF-8")
}

/// The tag, type and value of a `TAG:TYPE:VALUE` field, by position: a BAM tag name is any two
/// bytes, `:` too.
fn split_tag(field: &str) -> (&str, &str, &str) {
    let tag_end = field.char_indices().nth(2).map_or(field.len(), |(i, _)| i);
    let (tag, rest) = field.split_at(tag_end);
    let mut parts = rest.strip_prefix(':').unwrap_or_else(|| panic!("{field}: not TAG:TYPE:VALUE")).splitn(2, ':');
    (tag, parts.next().unwrap(), parts.next().unwrap_or(""))
}

/// Parses one `TAG:TYPE:VALUE` field as samtools prints it.
pub fn parse_sam_tag(field: &str) -> (String, TagValue) {
    let (tag, ty, value) = split_tag(field);
    let float = |x: &str| float6(x.parse().unwrap_or_else(|e| panic!("{field}: float {x:?}: {e}")));
    let v = match ty {
        "A" => TagValue::Char(value.into()),
        "Z" => TagValue::Str(value.into()),
        "H" => TagValue::Hex(value.into()),
        "i" => TagValue::Int(value.parse().unwrap()),
        "f" => TagValue::Float(float(value)),
        "B" => {
            let mut items = value.split(',');
            let sub = items.next().unwrap();
            if sub == "f" {
                TagValue::FloatArray(items.map(float).collect())
            } else {
                assert!(matches!(sub, "c" | "C" | "s" | "S" | "i" | "I"), "{field}: B subtype {sub:?}");
                TagValue::IntArray(items.map(|x| x.parse().unwrap()).collect(), sub.chars().next().unwrap())
            }
        }
        other => panic!("unknown SAM tag type {other} in {field}"),
    };
    (tag.to_string(), v)
}

/// Parses one field of `tags_extra`, which the README promises in samtools' syntax with floats
/// in their shortest exact form (checked here) and `B` arrays with their own subtype.
fn parse_extra_tag(field: &str) -> (String, TagValue) {
    let (_, ty, value) = split_tag(field);
    let floats: Vec<&str> = match (ty, value.strip_prefix("f,")) {
        ("f", _) => vec![value],
        ("B", Some(items)) => items.split(',').collect(),
        _ => vec![],
    };
    for text in floats {
        let v: f32 = text.parse().unwrap_or_else(|e| panic!("tags_extra {field}: float {text:?}: {e}"));
        assert_eq!(v.to_string(), text, "tags_extra {field}: a float not in its shortest exact form");
    }
    parse_sam_tag(field)
}

/// `samtools view` of a file (optionally a region or filter arguments), canonicalised.
pub fn samtools_rows(path: &Path, extra: &[&str]) -> Vec<Row> {
    let mut args = vec!["view", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    sam_rows(&samtools(&args))
}

/// What `samtools view` makes of a file that may be damaged: the rows it printed (before it
/// failed, if it did), unless it printed what is not SAM (bytes that are not UTF-8, which no SAM
/// field may hold, or a tag field of another shape), and its error. A warning alone, such as a missing end-of-file block, is
/// not an error.
pub struct SamtoolsRead {
    pub rows: Option<Vec<Row>>,
    pub error: Option<String>,
}

/// `samtools view` (with `extra` arguments) of a file that may be damaged.
pub fn samtools_read(path: &Path, extra: &[&str]) -> SamtoolsRead {
    let out = Command::new("samtools").arg("view").arg(path).args(extra).output().expect("samtools must be installed");
    // A line cut short when samtools stopped is not a record it printed.
    let rows = String::from_utf8(out.stdout).ok().and_then(|text| {
        let complete: String = text.lines().filter(|l| l.split('\t').count() >= 11).map(|l| format!("{l}\n")).collect();
        complete.lines().flat_map(|l| l.split('\t').skip(11)).all(is_sam_tag).then(|| sam_rows(&complete))
    });
    let error = (!out.status.success()).then(|| String::from_utf8_lossy(&out.stderr).trim().to_string());
    SamtoolsRead { rows, error }
}

/// Whether `field` has the shape of a SAM tag field: `TG:T:VALUE`, with a type SAM has.
fn is_sam_tag(field: &str) -> bool {
    let b = field.as_bytes();
    b.len() >= 5 && b[2] == b':' && b"AZHifB".contains(&b[3]) && b[4] == b':'
}

/// SAM records (no header) canonicalised.
fn sam_rows(sam: &str) -> Vec<Row> {
    sam.lines()
        .map(|line| {
            let cols: Vec<&str> = line.split('\t').collect();
            let mut fields: Vec<Option<String>> = cols[..11]
                .iter()
                .zip(SAM_PLACEHOLDERS)
                .map(|(text, null)| (Some(*text) != null).then(|| text.to_string()))
                .collect();
            if cols[6] == "=" {
                fields[6] = fields[2].clone();
            }
            let mut tags: Vec<_> = cols[11..].iter().map(|t| parse_sam_tag(t)).collect();
            tags.sort();
            Row { fields, tags }
        })
        .collect()
}

/// Any column as text (read-back Parquet has Utf8View strings, for example).
fn utf8(col: &dyn Array) -> arrow::array::StringArray {
    cast(col, &DataType::Utf8).unwrap().as_string::<i32>().clone()
}

fn strings(batch: &RecordBatch, name: &str) -> Vec<Option<String>> {
    let col = utf8(batch.column_by_name(name).unwrap_or_else(|| panic!("no column {name}")));
    col.iter().map(|v| v.map(str::to_string)).collect()
}

/// The tag fields of a `tags` struct: name, SAM type, and the column (text cast to Utf8 once).
fn tag_columns(tags: &StructArray) -> Vec<(String, String, arrow::array::ArrayRef)> {
    tags.fields()
        .iter()
        .zip(tags.columns())
        .map(|(field, col)| {
            let ty = field.metadata().get(SAM_TYPE_KEY).expect("tag fields carry their SAM type").clone();
            let col =
                if matches!(ty.as_str(), "A" | "Z" | "H") { std::sync::Arc::new(utf8(col)) as _ } else { col.clone() };
            (field.name().clone(), ty, col)
        })
        .collect()
}

fn tag_values(columns: &[(String, String, arrow::array::ArrayRef)], row: usize) -> Vec<(String, TagValue)> {
    let mut out = Vec::new();
    for (name, ty, col) in columns {
        if col.is_null(row) {
            continue;
        }
        let v = match ty.as_str() {
            "A" => TagValue::Char(col.as_string::<i32>().value(row).into()),
            "Z" => TagValue::Str(col.as_string::<i32>().value(row).into()),
            "H" => TagValue::Hex(col.as_string::<i32>().value(row).into()),
            "i" => TagValue::Int(col.as_primitive::<Int64Type>().value(row)),
            "f" => TagValue::Float(float6(col.as_primitive::<Float32Type>().value(row))),
            "B:c" | "B:C" | "B:s" | "B:S" | "B:i" | "B:I" => TagValue::IntArray(
                col.as_list::<i32>().value(row).as_primitive::<Int64Type>().values().to_vec(),
                ty.chars().nth(2).unwrap(),
            ),
            "B:f" => TagValue::FloatArray(
                col.as_list::<i32>()
                    .value(row)
                    .as_primitive::<Float32Type>()
                    .values()
                    .iter()
                    .map(|v| float6(*v))
                    .collect(),
            ),
            other => panic!("unexpected sam_type {other}"),
        };
        out.push((name.clone(), v));
    }
    out
}

/// The provider's rows (all columns of `SELECT *`), canonicalised. A table without tag fields
/// has no `tags` column (README).
pub fn table_rows(batches: &[RecordBatch]) -> Vec<Row> {
    let mut rows = Vec::new();
    for b in batches {
        let cols: Vec<Vec<Option<String>>> = SAM_COLUMNS.iter().map(|name| strings(b, name)).collect();
        for (i, null) in SAM_PLACEHOLDERS.iter().enumerate() {
            assert!(null.is_some() || cols[i].iter().all(Option::is_some), "{} has a null", SAM_COLUMNS[i]);
        }
        let tags = b.column_by_name("tags").map(|c| tag_columns(c.as_struct())).unwrap_or_default();
        if let Some(c) = b.column_by_name("tags") {
            assert!(!c.as_struct().fields().is_empty(), "a tags struct without fields");
        }
        let extra = utf8(b.column_by_name("tags_extra").expect("every table has tags_extra"));
        for i in 0..b.num_rows() {
            let mut t = tag_values(&tags, i);
            if !extra.is_null(i) {
                assert!(!extra.value(i).is_empty(), "tags_extra is null, never empty");
                t.extend(extra.value(i).split('\t').map(parse_extra_tag));
            }
            t.sort();
            rows.push(Row { fields: cols.iter().map(|c| c[i].clone()).collect(), tags: t });
        }
    }
    rows
}

/// samtools' endpos from the SAM text of a record: POS plus the reference span of the CIGAR
/// (M, D, N, =, X), or POS when unmapped or without a CIGAR; none without a position. Computed
/// from the text, apart from the provider's binary decoding.
pub fn endpos_from_text(row: &Row) -> Option<i64> {
    let flag: u16 = row.sam_field(1).parse().unwrap();
    let pos: i64 = row.sam_field(3).parse().unwrap();
    if pos == 0 {
        return None;
    }
    let cigar = row.sam_field(5);
    if flag & 4 != 0 || cigar == "*" {
        return Some(pos);
    }
    let (mut span, mut n) = (0i64, 0i64);
    for c in cigar.chars() {
        if let Some(d) = c.to_digit(10) {
            n = n * 10 + i64::from(d);
        } else {
            if "MDN=X".contains(c) {
                span += n;
            }
            n = 0;
        }
    }
    Some(pos + span - 1)
}

/// The value of a counter in `EXPLAIN ANALYZE` output (summed over partitions by DataFusion;
/// `name=1.69 K` is 1690).
pub fn plan_metric(plan: &str, name: &str) -> u64 {
    let at = plan.find(&format!("{name}=")).unwrap_or_else(|| panic!("no {name} in\n{plan}"));
    let text: String = plan[at + name.len() + 1..].chars().take_while(|c| *c != ',' && *c != ']').collect();
    let (number, scale) = match text.trim().split_once(' ') {
        Some((n, "K")) => (n, 1e3),
        Some((n, "M")) => (n, 1e6),
        _ => (text.trim(), 1.0),
    };
    (number.parse::<f64>().unwrap_or_else(|_| panic!("{name}={text}")) * scale) as u64
}

/// Runs `sql` on `ctx`: the rows it returns, and the records each of the scan's `partitions`
/// read (from the scan's `records_read` metric).
pub async fn records_read_per_partition(
    ctx: &datafusion::prelude::SessionContext,
    sql: &str,
    partitions: usize,
) -> (usize, Vec<usize>) {
    let plan = ctx.sql(sql).await.unwrap().create_physical_plan().await.unwrap();
    let batches = datafusion::physical_plan::collect(std::sync::Arc::clone(&plan), ctx.task_ctx()).await.unwrap();
    let rows = batches.iter().map(|b| b.num_rows()).sum();
    let mut nodes = vec![plan];
    let scan = loop {
        let node = nodes.pop().expect("a DataSourceExec in the plan");
        if node.name() == "DataSourceExec" {
            break node;
        }
        nodes.extend(node.children().into_iter().cloned());
    };
    let mut read = vec![0usize; partitions];
    for metric in scan.metrics().unwrap().iter().filter(|m| m.value().name() == "records_read") {
        read[metric.partition().expect("per partition")] += metric.value().as_usize();
    }
    (rows, read)
}

/// The `index` note of each file in `ctx`'s file metadata cache (what became of its index search).
pub fn cached_index_notes(ctx: &datafusion::prelude::SessionContext) -> Vec<String> {
    let cache = ctx.runtime_env().cache_manager.get_file_metadata_cache();
    cache
        .list_entries()
        .values()
        .map(|e| e.value.file_metadata.extra_info().remove("index").unwrap_or_default())
        .collect()
}
