//! Finding the external tools some tests run (Prometheus, Locust, valkey-server,
//! Python, Chromium):
//! an explicit `FLUJO_TEST_*` variable first, then a known place, then the `PATH`.
//! A tool that is not found fails the test, naming what installs it.

use std::path::{Path, PathBuf};

/// The file `name` in one of the `PATH`'s directories.
pub fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// The tool `name`: the file `$variable` names (which must exist), else `known`, else
/// the `PATH`; panics with `hint` (what installs it) when none has it.
pub fn find_tool(variable: &str, known: &Path, name: &str, hint: &str) -> PathBuf {
    if let Ok(path) = std::env::var(variable) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{variable}={} is not a file; {hint}",
            path.display()
        );
        return path;
    }
    if known.is_file() {
        return known.to_owned();
    }
    on_path(name).unwrap_or_else(|| {
        panic!(
            "no `{name}` (looked at {variable}, {} and the PATH); {hint}",
            known.display()
        )
    })
}

/// The interpreter for the Python clients of `tests/clients/`: `FLUJO_TEST_PYTHON`,
/// else the project's venv (made by `scripts/test.sh`), else `python3`.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("FLUJO_TEST_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".services/venv/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}
