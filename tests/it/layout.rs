//! The library's modules form one chain: each uses only modules declared above it in `lib.rs`
//! (README, "Layout"), so no module imports from one that imports it.

use crate::oracle::repo_root;

/// The `crate::module` names a source file uses outside comments and its test module.
fn used_modules(source: &str) -> Vec<String> {
    let code = source.split("#[cfg(test)]").next().unwrap_or_default();
    let mut used = Vec::new();
    for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
        for part in line.split("crate::").skip(1) {
            let name: String = part.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !name.is_empty() && !used.contains(&name) {
                used.push(name);
            }
        }
    }
    used
}

#[test]
fn modules_form_a_one_way_chain() {
    let src = repo_root().join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let order: Vec<String> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod ").or_else(|| l.trim().strip_prefix("mod ")))
        .filter_map(|rest| rest.strip_suffix(';'))
        .map(str::to_string)
        .collect();
    assert!(order.len() > 10, "{order:?}");
    let mut back_edges = Vec::new();
    for (i, module) in order.iter().enumerate() {
        let source = std::fs::read_to_string(src.join(format!("{module}.rs"))).unwrap();
        for used in used_modules(&source) {
            if order[i + 1..].contains(&used) {
                back_edges.push(format!("{module} uses {used}, declared below it"));
            }
        }
    }
    assert!(back_edges.is_empty(), "{}", back_edges.join("\n"));
}
