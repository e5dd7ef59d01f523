//! Integration tests of the project format: loading, validation diagnostics and change tracking,
//! each written as `check(input, expect)` over in-memory projects.

mod diff;
mod incremental;
mod validate;

use offshoot_project::{load, LoadError, MemoryFiles, Project};

pub const MANIFEST: &str =
    "[project]\nname = \"t\"\n\n[sources.raw_orders]\n[sources.raw_customers]\n";

/// A project from `(path, content)` pairs; the manifest above is added unless given.
pub fn files(entries: &[(&str, &str)]) -> MemoryFiles {
    let mut files =
        MemoryFiles::new(entries.iter().map(|(p, c)| (p.to_string(), c.as_bytes().to_vec())));
    files.files.entry("offshoot.toml".to_owned()).or_insert_with(|| MANIFEST.as_bytes().to_vec());
    files
}

pub fn load_ok(entries: &[(&str, &str)]) -> Project {
    match load(&files(entries)) {
        Ok(project) => project,
        Err(LoadError::Invalid(diagnostics)) => {
            let text: Vec<String> = diagnostics.iter().map(|d| d.to_string()).collect();
            panic!("expected a valid project, got:\n{}", text.join("\n"))
        }
        Err(error) => panic!("{error}"),
    }
}
