//! The book's Rust samples are doc tests only if some crate includes their chapter: this test
//! keeps the list of included chapters in step with the book's table of contents.

use std::fs;
use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The chapter paths `SUMMARY.md` links to, relative to `book/src`.
fn chapters_in_summary() -> Vec<String> {
    let summary = fs::read_to_string(workspace_root().join("book/src/SUMMARY.md"))
        .expect("book/src/SUMMARY.md is readable");
    summary
        .lines()
        .filter_map(|line| line.split("](").nth(1))
        .map(|link| link.trim_end_matches(')').to_string())
        .collect()
}

/// Every markdown file under `book/src` except the table of contents itself.
fn chapter_files(directory: &Path, prefix: &str, found: &mut Vec<String>) {
    for entry in fs::read_dir(directory).expect("the book's directory is readable") {
        let entry = entry.expect("a directory entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_dir() {
            chapter_files(&entry.path(), &format!("{prefix}{name}/"), found);
        } else if name.ends_with(".md") && name != "SUMMARY.md" {
            found.push(format!("{prefix}{name}"));
        }
    }
}

#[test]
fn every_chapter_in_the_summary_is_compiled_as_a_doc_test() {
    let root = workspace_root();
    let libraries: String = [
        "yggr/src/lib.rs",
        "yggr-core/src/lib.rs",
        "yggr-sim/src/lib.rs",
    ]
    .iter()
    .map(|path| fs::read_to_string(root.join(path)).expect("a crate root is readable"))
    .collect();
    let chapters = chapters_in_summary();
    assert!(
        chapters.len() >= 20,
        "the summary lists {} chapters",
        chapters.len()
    );
    for chapter in &chapters {
        let included = format!("include_str!(\"../../book/src/{chapter}\")");
        assert!(
            libraries.contains(&included),
            "book/src/{chapter} is in SUMMARY.md but no crate's `book` module includes it"
        );
    }
}

#[test]
fn every_chapter_file_is_in_the_summary() {
    let chapters = chapters_in_summary();
    let mut files = Vec::new();
    chapter_files(&workspace_root().join("book/src"), "", &mut files);
    for file in files {
        assert!(
            chapters.contains(&file),
            "book/src/{file} is not linked from SUMMARY.md"
        );
    }
}
