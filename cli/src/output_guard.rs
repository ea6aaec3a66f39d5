//! Removing what a failed `COPY` wrote.
//!
//! DataFusion 55's file sinks finish the output file when their input fails: a `COPY` whose
//! scan errors half-way leaves a valid Parquet or Arrow file holding part of the rows. The CLI
//! therefore notes each local `COPY` target that does not exist yet, and removes it when the
//! statement fails, so nothing half-written looks complete.

use std::path::PathBuf;

use datafusion::sql::parser::{DFParser, Statement};

/// Local `COPY` targets of a SQL text that do not exist yet.
#[derive(Debug, Default)]
pub struct OutputGuard {
    new_targets: Vec<PathBuf>,
}

impl OutputGuard {
    /// Notes the local targets of the `COPY` statements in `sql` (unparsable SQL notes nothing;
    /// its error comes from running it).
    pub fn before(sql: &str) -> Self {
        let Ok(statements) = DFParser::parse_sql(sql) else { return Self::default() };
        let new_targets = statements
            .iter()
            .filter_map(|s| match s {
                Statement::CopyTo(copy) => local_path(&copy.target),
                _ => None,
            })
            .filter(|p| !p.exists())
            .collect();
        Self { new_targets }
    }

    /// After the statement failed: removes the files and directories it created.
    pub fn failed(self) -> Vec<PathBuf> {
        self.new_targets
            .into_iter()
            .filter(|p| {
                if p.is_dir() {
                    std::fs::remove_dir_all(p).is_ok()
                } else {
                    p.exists() && std::fs::remove_file(p).is_ok()
                }
            })
            .collect()
    }
}

fn local_path(target: &str) -> Option<PathBuf> {
    match target.split_once("://") {
        None => Some(PathBuf::from(target)),
        Some(("file", rest)) => Some(PathBuf::from(rest)),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_only_new_local_targets() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old.parquet");
        std::fs::write(&old, b"keep").unwrap();
        let new = dir.path().join("new.parquet");
        let sql = format!(
            "COPY (SELECT 1) TO '{}'; COPY (SELECT 1) TO '{}'; COPY (SELECT 1) TO 's3://b/x.parquet'",
            old.display(),
            new.display()
        );
        let guard = OutputGuard::before(&sql);
        std::fs::write(&new, b"partial").unwrap();
        assert_eq!(guard.failed(), vec![new.clone()]);
        assert!(old.exists() && !new.exists());
    }
}
