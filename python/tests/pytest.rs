//! Runs the Python test suite (python/tests/test_*.py) against the extension module this
//! `cargo test` just built, so the README's one test command covers the Python package too.
//!
//! The tests run in a virtual environment beside the build (`<target>/python-venv`), made on
//! first use with the packages of `pyproject.toml`'s `test` extra from PyPI. The extension is
//! the cdylib of this crate, placed next to the package's Python sources in a temporary
//! directory, exactly as a wheel would install it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The quoted strings of the one-line TOML array `key = [...]` in `text`.
fn toml_list(text: &str, key: &str) -> Vec<String> {
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix(key)?.trim_start().strip_prefix('='))
        .unwrap_or_else(|| panic!("pyproject.toml has no {key} = [...]"));
    line.split('"').skip(1).step_by(2).map(str::to_string).collect()
}

/// The Python packages the tests need: pyproject.toml's `dependencies` and its `test` extra.
fn requirements(manifest: &Path) -> Vec<String> {
    let pyproject = std::fs::read_to_string(manifest.join("pyproject.toml")).unwrap();
    let mut packages = toml_list(&pyproject, "dependencies");
    packages.extend(toml_list(&pyproject, "test"));
    assert!(packages.iter().any(|p| p.starts_with("pytest")), "no pytest in {packages:?}");
    packages
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// `<target>/debug`: this test binary lives in `<target>/debug/deps`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

fn venv(target: &Path, requirements: &[String]) -> PathBuf {
    let venv = target.join("python-venv");
    let python = venv.join("bin/python");
    let marker = venv.join("requirements.txt");
    let wanted = requirements.join("\n");
    // The marker, and the venv's interpreter still running (a cached target can outlive the
    // Python its venv links to).
    let runs = || Command::new(&python).args(["-c", "import pytest"]).output().is_ok_and(|out| out.status.success());
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(wanted.as_str()) && runs() {
        return python;
    }
    let system = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
    run(Command::new(system).args(["-m", "venv", "--clear"]).arg(&venv));
    run(Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
        .args(requirements));
    std::fs::write(&marker, wanted).unwrap();
    python
}

#[test]
fn python_package_tests_pass() {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let profile = profile_dir();
    // `cargo test` leaves the cdylib in deps/; `cargo build` also copies it up a level.
    let library = ["deps/lib_datafusion_bam.so", "lib_datafusion_bam.so"]
        .iter()
        .map(|name| profile.join(name))
        .find(|path| path.exists())
        .unwrap_or_else(|| panic!("the extension module was not built in {}", profile.display()));
    let python = venv(profile.parent().unwrap(), &requirements(&manifest));

    // The package as a wheel lays it out: Python sources plus the extension module.
    let site = tempfile::tempdir().unwrap();
    let package = site.path().join("datafusion_bam");
    std::fs::create_dir(&package).unwrap();
    for entry in std::fs::read_dir(manifest.join("datafusion_bam")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, package.join(path.file_name().unwrap())).unwrap();
    }
    std::os::unix::fs::symlink(&library, package.join("_datafusion_bam.abi3.so")).unwrap();

    let output = run(Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(manifest.join("tests"))
        .env("PYTHONPATH", site.path())
        .env("DATAFUSION_BAM_REPO", manifest.parent().unwrap())
        .current_dir(site.path()));
    println!("{output}");
}
