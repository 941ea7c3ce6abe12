//! Checks of the repository itself: `no_secret_in_git` scans `manifests/`, and
//! `dockerfile` checks the image recipe the manifests run.

use super::*;

/// No Secret object, stringData, password literal or credentials in a URL anywhere
/// git would take from manifests/; the real secret files are ignored.
#[test]
fn no_secret_in_git() {
    let root = repo_path("manifests");
    let mut files = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("manifests/ is readable") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    let ignored = |path: &Path| {
        Command::new("git")
            .args(["check-ignore", "-q"])
            .arg(path)
            .current_dir(repo_path("."))
            .status()
            .is_ok_and(|s| s.success())
    };
    let mut examples = 0;
    for path in &files {
        let rel = path
            .strip_prefix(repo_path("."))
            .unwrap_or(path)
            .display()
            .to_string();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.ends_with(".env") && rel.contains("/secrets/") {
            assert!(
                ignored(path),
                "{rel} holds secrets and must be ignored by git"
            );
            continue;
        }
        let content = std::fs::read_to_string(path).expect("text file");
        if let Some(real) = name.strip_suffix(".example") {
            examples += 1;
            assert!(
                ignored(&path.with_file_name(real)),
                "{rel}: its real file {real} must be ignored by git"
            );
            for line in content.lines().filter(|l| !l.starts_with('#')) {
                let Some((key, value)) = line.split_once('=') else {
                    continue;
                };
                if ["PASS", "SECRET", "TOKEN"].iter().any(|w| key.contains(w)) {
                    assert_eq!(value, "change-me", "{rel}: examples hold placeholders only");
                }
            }
            continue;
        }
        for (n, line) in content.lines().enumerate() {
            let at = format!("{rel}:{}: {line}", n + 1);
            let code = line.trim_start();
            if code.starts_with('#') {
                continue;
            }
            assert!(
                !code.starts_with("stringData:") && code != "kind: Secret",
                "a Secret in git: {at}"
            );
            if let Some((key, value)) = code.trim_start_matches("- ").split_once(':') {
                let value = value.trim();
                if key.to_lowercase().contains("password") && !value.is_empty() {
                    assert!(value.starts_with('$'), "a password literal in git: {at}");
                }
            }
            // scheme://user:password@host with a literal password
            for (i, _) in code.match_indices("://") {
                let authority = code[i + 3..]
                    .split(['/', ' ', '"'])
                    .next()
                    .unwrap_or_default();
                if let Some((userinfo, _)) = authority.rsplit_once('@') {
                    if let Some((_, password)) = userinfo.split_once(':') {
                        assert!(
                            password.starts_with("$("),
                            "credentials in a URL in git: {at}"
                        );
                    }
                }
            }
        }
    }
    assert!(examples >= 3, "manifests/base/secrets/*.env.example");
}

/// The image the manifests run: built with the locked dependencies, non-root with
/// the uid the pods expect, the binary as entrypoint, the three ports.
#[test]
fn dockerfile() {
    let dockerfile = std::fs::read_to_string(repo_path("Dockerfile")).expect("Dockerfile");
    let lines: Vec<&str> = dockerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    let froms: Vec<&&str> = lines.iter().filter(|l| l.starts_with("FROM ")).collect();
    assert!(froms.len() >= 2, "multi-stage build");
    assert!(froms[0].starts_with("FROM rust:1-bookworm AS builder"));
    assert!(dockerfile.contains("cargo build --release --locked"));
    let last_stage = dockerfile
        .rsplit_once("\nFROM ")
        .map(|(_, s)| s)
        .expect("a runtime stage");
    assert!(
        last_stage.starts_with("gcr.io/distroless/cc")
            || last_stage.starts_with("debian:bookworm-slim"),
        "a small runtime base"
    );
    assert!(
        last_stage.contains(&format!("\nUSER {IMAGE_UID}")),
        "non-root uid {IMAGE_UID}"
    );
    assert!(last_stage.contains("\nEXPOSE 8080 50051 7070\n"));
    assert!(last_stage.contains("\nENTRYPOINT [\"/usr/local/bin/flujo\"]\n"));
    assert!(last_stage.contains("\nCMD [\"run\"]"));
    let copies: Vec<&str> = last_stage
        .lines()
        .filter(|l| l.starts_with("COPY"))
        .collect();
    assert_eq!(
        copies,
        ["COPY --from=builder /out/flujo /usr/local/bin/flujo"],
        "only the binary"
    );

    let ignore = std::fs::read_to_string(repo_path(".dockerignore")).expect(".dockerignore");
    let entries: BTreeSet<&str> = ignore
        .lines()
        .map(|l| l.trim().trim_end_matches('/'))
        .collect();
    for needed in ["target", ".services", ".git", "manifests"] {
        assert!(
            entries.contains(needed),
            ".dockerignore leaves out {needed}"
        );
    }
    for kept in [
        "src",
        "actors",
        "proto",
        "build.rs",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        assert!(
            !entries.contains(kept),
            ".dockerignore must keep {kept}: the build needs it"
        );
    }
}
