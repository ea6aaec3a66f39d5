//! `datafusion-bam`: the DataFusion CLI with BAM support (feature `cli`).
//!
//! Result printing, the line editor, history and the `\` commands are `datafusion-cli`'s; the
//! prompt loop is this binary's own, so every statement runs as with `-c`: BAM table options, a
//! progress line for long scans, warnings after the statement, outputs of a failed or interrupted
//! `COPY` removed, and a stop at the first failing statement with a non-zero exit status (also
//! for `-f` files, which `datafusion-cli` would carry on through).

mod convert;
mod output_guard;

use std::io::IsTerminal;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use std::collections::HashMap;

use datafusion::datasource::listing::ListingTableUrl;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::parser::{DFParser, Statement};
use datafusion_bam::{
    object_store_for, progress, set_parquet_column_defaults, store_options, warnings, AlignmentFormat, BamError,
    BamOptions, BamSessionExt,
};

use crate::convert::{convert_each, Outcome, OutputFormat};
use crate::output_guard::OutputGuard;
use datafusion_cli::catalog::DynamicObjectStoreCatalog;
use datafusion_cli::command::{Command, OutputFormat as FormatCommand};
use datafusion_cli::exec;
use datafusion_cli::helper::CliHelper;
use datafusion_cli::object_storage::instrumented::InstrumentedObjectStoreRegistry;
use datafusion_cli::print_format::PrintFormat;
use datafusion_cli::print_options::{MaxRows, PrintOptions};
use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use rustyline::Editor;

// Decoding and the Parquet writer allocate many short-lived buffers on every core; mimalloc
// (already built for datafusion-cli) serves them faster than glibc (docs/benchmarks-history.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc's `mi_option_t` (`mimalloc.h`, v2 and v3); the Rust
/// bindings name only some of the options.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed memory stays with the process before mimalloc gives it back to the kernel.
/// With its default a COPY gave back and faulted in its batch buffers again all the time
/// (docs/benchmarks-history.md, "Kernel time of a COPY: mimalloc's purge delay").
const PURGE_DELAY_MS: std::ffi::c_long = 10_000;

/// Turns transparent huge pages off for this process, unless `MIMALLOC_ALLOW_THP` is set.
///
/// mimalloc v3 asks for them on its arenas (`madvise(MADV_HUGEPAGE)`, reserved before `main`
/// runs, so its own `allow_thp` option cannot be given a default here), and a COPY then spent
/// much of its kernel time zeroing huge pages on first touch (docs/benchmarks-history.md, "Kernel
/// time of a COPY: transparent huge pages"). `PR_SET_THP_DISABLE` applies at every later page fault.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: integer arguments only; failure (an old kernel) leaves the pages as they were.
        unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    }
}

#[derive(Debug, Parser)]
#[command(version, about = "SQL over BAM files with Apache DataFusion (CREATE EXTERNAL TABLE ... STORED AS BAM)")]
struct Args {
    /// SQL to run; repeatable, run in the order given (after any -f files). Stops at the first error.
    #[arg(short = 'c', long = "command")]
    command: Vec<String>,

    /// File of SQL statements (each ending with `;` at the end of a line); repeatable.
    #[arg(short = 'f', long = "file")]
    file: Vec<PathBuf>,

    /// Output format of query results.
    #[arg(long, value_enum, default_value_t = PrintFormat::Automatic)]
    format: PrintFormat,

    /// Print only results: no timing, no progress.
    #[arg(short, long)]
    quiet: bool,

    /// Most rows shown in `table` format (a number, or `inf`).
    #[arg(long, default_value = "40")]
    maxrows: MaxRows,

    /// Rows per batch (DataFusion's `datafusion.execution.batch_size`).
    #[arg(short = 'b', long)]
    batch_size: Option<usize>,

    /// Memory for query execution, such as 4G or 512M, shared fairly among the operators that
    /// can spill: sorts and joins beyond it spill to disk (in TMPDIR). Default: no limit.
    #[arg(short = 'm', long)]
    memory_limit: Option<String>,

    #[command(subcommand)]
    action: Option<Action>,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Converts BAM files one by one to OUTPUT_DIR/<name>.parquet (or .arrow). Each output appears
    /// only when complete, so a rerun after a failure or Ctrl-C skips the files already done.
    /// Files named `.cram`, `.sam` or `.sam.gz` are read as CRAM and SAM.
    Convert {
        /// The BAM, CRAM or SAM files.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Where the outputs go (created if missing).
        #[arg(short = 'd', long)]
        output_dir: PathBuf,
        /// Output format: parquet or arrow.
        #[arg(long, default_value = "parquet")]
        to: String,
        /// A table option as KEY=VALUE, as in OPTIONS (...): tags=NM,MD  skip_damaged=true
        /// region=chr1:1-100000  split=false. Repeatable.
        #[arg(short = 'o', long = "option")]
        options: Vec<String>,
    },
}

fn main() -> ExitCode {
    // A default only: mimalloc reads MIMALLOC_PURGE_DELAY when the process loads, and
    // `mi_option_set_default` leaves an option set from the environment as it is.
    // SAFETY: an integer option, set before this program starts any thread.
    unsafe { libmimalloc_sys::mi_option_set_default(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    no_transparent_huge_pages();
    datafusion_bam::quiet_decode_panics();
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(run(args)) {
        Ok(()) => 0,
        Err(DataFusionError::External(e)) if e.is::<Interrupted>() => {
            eprintln!("Interrupted");
            EXIT_INTERRUPTED
        }
        Err(e) => {
            eprintln!("Error: {}", BamError::message_of(&e));
            1
        }
    };
    // A failed or stopped statement can leave header loads and scans running on blocking
    // threads, inside requests to an object store. Nothing they do is needed any more, and a
    // runtime shutdown would wait for them, so the process ends without one.
    let _ = std::io::Write::flush(&mut std::io::stdout());
    std::process::exit(code)
}

const PARQUET_COMPRESSION_ENV: &str = "DATAFUSION_EXECUTION_PARQUET_COMPRESSION";

async fn run(args: Args) -> Result<()> {
    // information_schema as in datafusion-cli: `SHOW ALL`, `SHOW TABLES`, `SHOW <setting>`.
    let mut config = SessionConfig::from_env()?.with_information_schema(true);
    // zstd level 1 writes files about as small as DataFusion's default level 3, faster
    // (docs/benchmarks-history.md, "Parquet writer settings"). `SET` or the environment overrides it.
    if std::env::var_os(PARQUET_COMPRESSION_ENV).is_none() {
        config.options_mut().execution.parquet.compression = Some("zstd(1)".to_string());
    }
    if let Some(n) = args.batch_size {
        if n == 0 {
            return Err(DataFusionError::Configuration("batch size must be greater than 0".into()));
        }
        config = config.with_batch_size(n);
    }
    let registry = Arc::new(InstrumentedObjectStoreRegistry::new());
    let mut runtime = RuntimeEnvBuilder::new().with_object_store_registry(registry.clone());
    if let Some(limit) = &args.memory_limit {
        let bytes = SessionContext::parse_capacity_limit("--memory-limit", limit)
            .map_err(|e| DataFusionError::Configuration(format!("--memory-limit {limit}: {e}")))?;
        // A fair pool, not `SET datafusion.runtime.memory_limit`'s greedy one, and one sort
        // for all partitions: DataFusion 55's sort frees its merge reserve before a spill's merge
        // (apache/datafusion#24739), and another partition's sort can take it, failing the query
        // at random (docs/writing.md, "Sorted output").
        let pool = TrackConsumersPool::new(FairSpillPool::new(bytes), NonZeroUsize::new(5).expect("not zero"));
        runtime = runtime.with_memory_pool(Arc::new(pool));
        config = config.set_bool("datafusion.optimizer.repartition_sorts", false);
    }
    let ctx = SessionContext::new_with_config_rt(config, runtime.build_arc()?).enable_url_table();
    ctx.enable_bam()?;
    // Per-column Parquet defaults (no dictionaries for names, bases, qualities...) make a COPY
    // faster and its files smaller (docs/benchmarks-history.md, "Per-column dictionary
    // encoding"). A COPY's OPTIONS override them.
    set_parquet_column_defaults(&mut ctx.state_ref().write().table_options_mut().parquet)?;
    // As in datafusion-cli: `s3://...` and `https://...` locations register their stores on use.
    ctx.register_catalog_list(Arc::new(DynamicObjectStoreCatalog::new(
        ctx.state().catalog_list().clone(),
        ctx.state_weak_ref(),
    )));

    let mut print_options = PrintOptions {
        format: args.format,
        quiet: args.quiet,
        maxrows: args.maxrows,
        color: false,
        instrumented_registry: registry,
    };
    let _progress = (!args.quiet && std::io::stderr().is_terminal()).then(ProgressLine::start);

    if let Some(Action::Convert { inputs, output_dir, to, options }) = args.action {
        let outcome = tokio::select! {
            outcome = convert(&ctx, &inputs, &output_dir, &to, &options, args.quiet) => outcome,
            _ = tokio::signal::ctrl_c() => Err(DataFusionError::External(Box::new(Interrupted))),
        };
        show_warnings(0);
        return outcome;
    }

    if args.command.is_empty() && args.file.is_empty() {
        return repl(&ctx, &mut print_options).await;
    }
    let mut statements = Vec::new();
    for path in &args.file {
        statements.extend(read_statements(path)?);
    }
    statements.extend(args.command);
    let mut warned = warnings::cursor();
    for sql in statements {
        let outcome = run_input(&ctx, &sql, &print_options).await;
        warned = show_warnings(warned);
        outcome?;
    }
    Ok(())
}

/// Runs one input of SQL (one or more statements) and stops it at Ctrl-C. When it fails or is
/// stopped, the local `COPY` outputs it created are removed, so nothing half-written remains.
async fn run_input(ctx: &SessionContext, sql: &str, print_options: &PrintOptions) -> Result<()> {
    begin_statement();
    let guard = OutputGuard::before(sql);
    let outcome = tokio::select! {
        outcome = execute(ctx, sql, print_options) => outcome,
        _ = tokio::signal::ctrl_c() => Err(DataFusionError::External(Box::new(Interrupted))),
    };
    if outcome.is_err() {
        for removed in guard.failed() {
            eprintln!("removed {} written by the failed statement", removed.display());
        }
    }
    outcome
}

/// Executes and prints as datafusion-cli does, except `CREATE EXTERNAL TABLE ... STORED AS BAM`
/// and `COPY ... STORED AS BAM`, which run through [`run_bam_statement`]: datafusion-cli rejects
/// options of a format it does not know (it checks `OPTIONS` against the built-in formats'
/// options, `exec.rs`, `register_object_store_and_config_extensions`) and parses locations itself,
/// before the BAM table factory could report what is wrong with them.
async fn execute(ctx: &SessionContext, sql: &str, print_options: &PrintOptions) -> Result<()> {
    let statements = match DFParser::parse_sql(sql) {
        Ok(statements) if statements.iter().any(is_bam_statement) => statements,
        // Unparsable SQL gets datafusion-cli's error.
        _ => return exec::exec_from_commands(ctx, vec![sql.to_string()], print_options).await,
    };
    for statement in statements {
        if is_bam_statement(&statement) {
            run_bam_statement(ctx, statement, print_options).await?;
        } else {
            exec::exec_from_commands(ctx, vec![statement.to_string()], print_options).await?;
        }
    }
    Ok(())
}

/// The interactive shell: datafusion-cli's line editor, history and `\` commands, with each
/// input run as `-c` runs it. Errors are printed and the shell goes on; Ctrl-C stops the
/// running statement.
async fn repl(ctx: &SessionContext, print_options: &mut PrintOptions) -> Result<()> {
    let editor_error = |e: ReadlineError| DataFusionError::External(Box::new(e));
    let dialect = || ctx.task_ctx().session_config().options().sql_parser.dialect;
    let mut editor: Editor<CliHelper, DefaultHistory> = Editor::new().map_err(editor_error)?;
    editor.set_helper(Some(CliHelper::new(&dialect(), print_options.color)));
    editor.load_history(HISTORY_FILE).ok();
    let mut warned = warnings::cursor();
    loop {
        let line = match editor.readline("> ") {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                println!("^C");
                continue;
            }
            Err(ReadlineError::Eof) => {
                println!("\\q");
                break;
            }
            Err(e) => return Err(editor_error(e)),
        };
        editor.add_history_entry(line.trim_end()).map_err(editor_error)?;
        if let Some(command) = line.strip_prefix('\\') {
            if !backslash_command(ctx, command, print_options).await {
                break;
            }
            continue;
        }
        match run_input(ctx, &line, print_options).await {
            Ok(()) => {}
            Err(DataFusionError::External(e)) if e.is::<Interrupted>() => println!("^C"),
            Err(e) => eprintln!("{}", BamError::message_of(&e)),
        }
        warned = show_warnings(warned);
        // `SET datafusion.sql_parser.dialect` may have changed it.
        if let Some(helper) = editor.helper_mut() {
            helper.set_dialect(&dialect());
        }
    }
    editor.save_history(HISTORY_FILE).map_err(editor_error)
}

/// Where the shell keeps its history, as datafusion-cli does: in the working directory.
const HISTORY_FILE: &str = ".history";

/// Runs a datafusion-cli `\` command (`\?` lists them); false for `\q`.
async fn backslash_command(ctx: &SessionContext, command: &str, print_options: &mut PrintOptions) -> bool {
    let command = command.split_whitespace().collect::<Vec<_>>().join(" ");
    let invalid = || Err(DataFusionError::Plan(format!("'\\{command}' is not a valid command, \\? lists them")));
    let outcome = match command.parse::<Command>() {
        Ok(Command::Quit) => return false,
        Ok(Command::OutputFormat(None)) => {
            println!("Output format is {:?}.", print_options.format);
            Ok(())
        }
        Ok(Command::OutputFormat(Some(format))) => match format.parse::<FormatCommand>() {
            Ok(format) => format.execute(print_options),
            Err(_) => invalid(),
        },
        // As `-f` runs a file; datafusion-cli's own `\i` would reject BAM options.
        Ok(Command::Include(Some(path))) => include(ctx, &path, print_options).await,
        Ok(command) => command.execute(ctx, print_options).await,
        Err(_) => invalid(),
    };
    if let Err(e) = outcome {
        eprintln!("{e}");
    }
    true
}

/// `\i FILE` at the prompt: the file's statements in order, each as `-f` runs it, up to the
/// first error.
async fn include(ctx: &SessionContext, path: &str, print_options: &PrintOptions) -> Result<()> {
    for sql in read_statements(std::path::Path::new(path))? {
        run_input(ctx, &sql, print_options).await?;
    }
    Ok(())
}

/// The `convert` subcommand: one output per input, resumable.
async fn convert(
    ctx: &SessionContext,
    inputs: &[PathBuf],
    output_dir: &std::path::Path,
    to: &str,
    options: &[String],
    quiet: bool,
) -> Result<()> {
    let format = OutputFormat::parse(to)?;
    let mut map = HashMap::new();
    for option in options {
        let (key, value) = option
            .split_once('=')
            .ok_or_else(|| DataFusionError::Configuration(format!("option {option:?} is not KEY=VALUE")))?;
        map.insert(key.trim().to_string(), value.to_string());
    }
    let options = BamOptions::from_map(&map)?;
    convert_each(ctx, inputs, output_dir, format, &options, |input, output, outcome| {
        if quiet {
            return;
        }
        match outcome {
            Outcome::Converted { rows, seconds } => {
                eprintln!("{} -> {}: {rows} rows in {seconds:.1} s", input.display(), output.display())
            }
            Outcome::AlreadyDone => eprintln!("{} -> {}: done before, skipped", input.display(), output.display()),
        }
    })
    .await
}

/// Whether `statement` is an alignment table (`CREATE EXTERNAL TABLE ... STORED AS BAM`, `CRAM`
/// or `SAM`), or an alignment output (`STORED AS BAM`, `CRAM` or `SAM`, or a `.bam`, `.cram` or
/// `.sam` target without `STORED AS`).
fn is_bam_statement(statement: &Statement) -> bool {
    match statement {
        Statement::CreateExternalTable(t) => AlignmentFormat::from_name(&t.file_type).is_some(),
        Statement::CopyTo(copy) => match &copy.stored_as {
            Some(format) => AlignmentFormat::from_name(format).is_some(),
            None => {
                let target = copy.target.to_ascii_lowercase();
                [".bam", ".cram", ".sam"].iter().any(|extension| target.ends_with(extension))
            }
        },
        _ => false,
    }
}

/// Runs a BAM statement through the session. The BAM table factory builds the store of a remote
/// location from the statement's `aws.*`, `gcp.*` or `http.*` options and the environment; for a
/// COPY, the store of a remote target is built here, the same way. Prints what datafusion-cli
/// prints for it.
async fn run_bam_statement(ctx: &SessionContext, statement: Statement, print_options: &PrintOptions) -> Result<()> {
    let start = Instant::now();
    let plan = ctx.state().statement_to_plan(statement).await?;
    if let LogicalPlan::Copy(copy) = &plan {
        let target = ListingTableUrl::parse(&copy.output_url)?;
        object_store_for(ctx.runtime_env().as_ref(), &target, &store_options(&copy.options)).await?;
    }
    let created = ctx.execute_logical_plan(plan).await?;
    let schema = Arc::clone(created.schema().inner());
    let batches = created.collect().await?;
    print_options.print_batches(schema, &batches, start, 0, &ctx.copied_config().options().format)
}

/// Ctrl-C during a statement: it is stopped, its new outputs removed, and the exit status is
/// 130 as for any program stopped by SIGINT.
#[derive(Debug)]
struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

const EXIT_INTERRUPTED: i32 = 130;

/// Warnings shown after one statement; more are counted, not printed.
const SHOWN_WARNINGS: usize = 20;

/// Prints the warnings recorded since `cursor` (damaged data skipped, a missing EOF block...);
/// returns the new cursor.
fn show_warnings(cursor: u64) -> u64 {
    let (messages, dropped, next) = warnings::since(cursor);
    for message in messages.iter().take(SHOWN_WARNINGS) {
        eprintln!("Warning: {message}");
    }
    let more = dropped + messages.len().saturating_sub(SHOWN_WARNINGS) as u64;
    if more > 0 {
        eprintln!("Warning: {more} more warnings not shown");
    }
    next
}

/// The statements of a SQL file.
fn read_statements(path: &std::path::Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| DataFusionError::Execution(format!("cannot read SQL file {}: {e}", path.display())))?;
    Ok(split_statements(&text))
}

/// Splits a SQL file into statements as `datafusion-cli -f` does: a statement ends with a line
/// ending in `;`; lines starting with `--` or `#!` are skipped.
fn split_statements(text: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if line.starts_with("--") || line.starts_with("#!") {
            continue;
        }
        let line = line.trim_end();
        current.push_str(line);
        if line.ends_with(';') {
            statements.push(std::mem::take(&mut current));
        } else {
            current.push('\n');
        }
    }
    if !current.trim().is_empty() {
        statements.push(current.trim_end().to_string());
    }
    statements
}

/// A progress bar on stderr while a statement's scans run: share of the bytes to read, records,
/// rate and time left. It is erased by the last scan to end, before the results print.
struct ProgressLine {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the bar shows: counted from the start of the current statement.
#[derive(Default)]
struct BarState {
    statement_start: progress::Snapshot,
    /// When this statement's scans were first seen running.
    running_since: Option<Instant>,
    shown: bool,
}

/// The bar's state, set when the bar runs (stderr is a terminal and `-q` is not given).
static BAR: std::sync::OnceLock<Arc<std::sync::Mutex<BarState>>> = std::sync::OnceLock::new();

/// Starts counting progress for a new statement.
fn begin_statement() {
    if let Some(bar) = BAR.get() {
        let mut state = bar.lock().unwrap_or_else(|e| e.into_inner());
        erase(&mut state);
        *state = BarState { statement_start: progress::snapshot(), ..BarState::default() };
    }
}

fn erase(state: &mut BarState) {
    if state.shown {
        eprint!("\r\x1b[2K");
        state.shown = false;
    }
}

/// The bar's text for `done`, `elapsed` after the scans started.
fn bar_text(done: progress::Snapshot, elapsed: Duration) -> String {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let seconds = elapsed.as_secs_f64().max(1e-3);
    let rate = done.records as f64 / seconds;
    if done.expected == 0 {
        return format!("{} records, {:.1} MiB of BAM read, {rate:.0} records/s", done.records, mib(done.bytes));
    }
    let share = (done.bytes as f64 / done.expected as f64).min(1.0);
    let width = 20;
    let filled = (share * width as f64) as usize;
    let left = if done.bytes > 0 {
        seconds * (done.expected.saturating_sub(done.bytes)) as f64 / done.bytes as f64
    } else {
        0.0
    };
    format!(
        "[{}{}] {:>3.0}% {} records, {:.1} of {:.1} MiB, {rate:.0} records/s, {left:.0} s left",
        "#".repeat(filled),
        " ".repeat(width - filled),
        share * 100.0,
        done.records,
        mib(done.bytes),
        mib(done.expected),
    )
}

impl ProgressLine {
    fn start() -> Self {
        let state = Arc::clone(BAR.get_or_init(Arc::default));
        let on_idle = Arc::clone(&state);
        progress::on_idle(move || erase(&mut on_idle.lock().unwrap_or_else(|e| e.into_inner())));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                let mut bar = state.lock().unwrap_or_else(|e| e.into_inner());
                if !progress::is_active() {
                    continue;
                }
                let since = *bar.running_since.get_or_insert_with(Instant::now);
                // Short scans draw nothing.
                if since.elapsed() >= Duration::from_secs(1) {
                    let done = progress::snapshot().since(bar.statement_start);
                    eprint!("\r\x1b[2K{}", bar_text(done, since.elapsed()));
                    bar.shown = true;
                }
            }
            erase(&mut state.lock().unwrap_or_else(|e| e.into_inner()));
        });
        Self { stop, thread: Some(thread) }
    }
}

impl Drop for ProgressLine {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{bar_text, split_statements};
    use datafusion_bam::progress::Snapshot;
    use std::time::Duration;

    /// The process's huge pages are off after the call, unless the environment asks for them.
    #[cfg(target_os = "linux")]
    #[test]
    fn transparent_huge_pages_are_turned_off() {
        super::no_transparent_huge_pages();
        // SAFETY: a query with integer arguments.
        let disabled = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(
            disabled == 1,
            std::env::var_os("MIMALLOC_ALLOW_THP").is_none(),
            "PR_GET_THP_DISABLE gave {disabled}"
        );
    }

    #[test]
    fn the_bar_shows_share_rate_and_time_left() {
        let done = Snapshot { records: 1_000_000, bytes: 50 << 20, expected: 200 << 20, damaged: 0 };
        let text = bar_text(done, Duration::from_secs(2));
        assert!(text.starts_with("[#####               ]  25% 1000000 records"), "{text}");
        assert!(text.contains("50.0 of 200.0 MiB, 500000 records/s, 6 s left"), "{text}");
        let unknown = bar_text(Snapshot { expected: 0, ..done }, Duration::from_secs(2));
        assert_eq!(unknown, "1000000 records, 50.0 MiB of BAM read, 500000 records/s");
    }

    #[test]
    fn splits_sql_files_like_datafusion_cli() {
        let text = "-- comment\nSELECT 1;\nSELECT\n  2;\nSELECT 3";
        assert_eq!(split_statements(text), vec!["SELECT 1;", "SELECT\n  2;", "SELECT 3"]);
    }
}
