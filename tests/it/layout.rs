//! The source tree is the architecture (docs/architecture.md): a few folders by concern at the
//! top of `src/`, each using only the folders declared above it in `lib.rs`, so no folder
//! imports from one that imports it.

use std::path::{Path, PathBuf};

use crate::oracle::repo_root;

/// The top-level units of the crate (folders and files), in `lib.rs` order.
fn declared_units(src: &Path) -> Vec<String> {
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    lib.lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod ").or_else(|| l.trim().strip_prefix("mod ")))
        .filter_map(|rest| rest.strip_suffix(';'))
        .map(str::to_string)
        .collect()
}

/// Every `.rs` file below `dir`.
fn source_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            source_files(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// The module path of a source file below `src/` (`formats/bam/info.rs` is
/// `["formats", "bam", "info"]`, `formats/mod.rs` is `["formats"]`).
fn module_path(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let file = parts.pop().unwrap();
    if file != "mod.rs" {
        parts.push(file.trim_end_matches(".rs").to_string());
    }
    parts
}

/// An identifier at the start of `s`.
fn ident(s: &str) -> String {
    s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect()
}

/// The top-level names inside a `{...}` group starting at `s` (after its `{`), nested groups
/// skipped.
fn group_names(s: &str) -> Vec<String> {
    let (mut names, mut depth, mut start_of_item) = (Vec::new(), 0, true);
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => start_of_item = true,
            c if c.is_whitespace() => {}
            _ if start_of_item && depth == 0 => {
                let name = ident(rest);
                if !name.is_empty() {
                    names.push(name);
                }
                start_of_item = false;
            }
            _ => {}
        }
        rest = &rest[c.len_utf8()..];
    }
    names
}

/// The top-level units a source file uses outside comments and its test module: `crate::x`,
/// `crate::{x, y::z}` and `super::` paths resolved from the file's module path.
fn used_units(source: &str, module: &[String]) -> Vec<String> {
    let code = source.split("#[cfg(test)]").next().unwrap_or_default();
    let mut used = Vec::new();
    let mut add = |name: String| {
        if !name.is_empty() && !used.contains(&name) {
            used.push(name);
        }
    };
    for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
        for part in line.split("crate::").skip(1) {
            match part.strip_prefix('{') {
                Some(group) => group_names(group).into_iter().for_each(&mut add),
                None => add(ident(part)),
            }
        }
        for (at, _) in line.match_indices("super::") {
            // Only the first `super::` of a chain: count how many follow it.
            if line[..at].ends_with("super::") {
                continue;
            }
            let mut rest = &line[at..];
            // A file's own module is `module`; `super` from `a/b/c.rs` (module a::b::c) is a::b.
            let mut depth = module.len();
            while let Some(r) = rest.strip_prefix("super::") {
                depth = depth.saturating_sub(1);
                rest = r;
            }
            match module.get(..depth).and_then(|m| m.first()) {
                Some(unit) => add(unit.clone()),
                None => match rest.strip_prefix('{') {
                    Some(group) => group_names(group).into_iter().for_each(&mut add),
                    None => add(ident(rest)),
                },
            }
        }
    }
    used
}

#[test]
fn folders_form_a_one_way_chain() {
    let src = repo_root().join("src");
    let order = declared_units(&src);
    let mut files = Vec::new();
    source_files(&src, &mut files);
    let mut back_edges = Vec::new();
    let mut checked = 0;
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        if relative == Path::new("lib.rs") {
            continue;
        }
        let module = module_path(relative);
        let Some(unit) = module.first() else { continue };
        let position =
            order.iter().position(|u| u == unit).unwrap_or_else(|| panic!("{unit} is not declared in lib.rs"));
        let source = std::fs::read_to_string(&file).unwrap();
        for used in used_units(&source, &module) {
            if order[position + 1..].contains(&used) {
                back_edges.push(format!("{} uses {used}, declared below {unit}", relative.display()));
            }
        }
        checked += 1;
    }
    assert!(checked > 30, "only {checked} files read");
    assert!(back_edges.is_empty(), "{}", back_edges.join("\n"));
}

#[test]
fn src_has_a_few_entries_most_of_them_folders() {
    let src = repo_root().join("src");
    let entries: Vec<PathBuf> = std::fs::read_dir(&src).unwrap().map(|e| e.unwrap().path()).collect();
    let folders = entries.iter().filter(|p| p.is_dir()).count();
    assert!(entries.len() <= 13, "src/ has {} entries: {entries:?}", entries.len());
    assert!(folders >= 4, "src/ has {folders} folders");
    let declared = declared_units(&src);
    for entry in &entries {
        let name = entry.file_stem().unwrap().to_string_lossy().into_owned();
        assert!(name == "lib" || declared.contains(&name), "{} is not declared in lib.rs", entry.display());
    }
}

#[test]
fn the_reader_of_paths_sees_groups_and_super() {
    let source = "use crate::{io::ObjectBytes, options::{BamOptions, region::Region}};\n\
                  use super::super::super::write::sink;\nuse super::records::X;\n// crate::functions\n";
    let used = used_units(source, &["formats".into(), "bam".into(), "info".into()]);
    assert_eq!(used, vec!["io", "options", "write", "formats"]);
    assert_eq!(used_units("use super::error::E;", &["schema".into()]), vec!["error"]);
}
