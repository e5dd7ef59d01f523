//! The files `offshoot init` writes: a small project that validates as it is.

/// `(path, content)` pairs; `name` becomes the project name.
pub fn files(name: &str) -> Vec<(&'static str, String)> {
    let name: String =
        name.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-')).collect();
    let name = if name.is_empty() { "my_pipeline".to_owned() } else { name };
    vec![
        (
            "offshoot.toml",
            format!(
                r#"# Offshoot project manifest. Assets live in assets/**/*.sql (one SELECT each) and
# assets/**/*.toml (command assets). See README.md for every key.
[project]
name = "{name}"
dialect = "sqlite"
production_branch = "main"
# Tables SQL may read that are neither assets nor tracked sources.
external = []

# Sources: tables the pipeline reads but does not build.
[sources.raw_events]
description = "Events as the application writes them"
"#
            ),
        ),
        (
            "assets/staging/stg_events.sql",
            r#"/* offshoot
description = "Events with typed columns"
tags = { layer = "staging" }
*/
SELECT id, user_id, kind, created_at
FROM raw_events
WHERE kind IS NOT NULL
"#
            .to_owned(),
        ),
        (
            "assets/marts/daily_events.sql",
            r#"/* offshoot
description = "Events per day and kind"
tags = { layer = "mart" }
*/
SELECT date(created_at) AS day, kind, count(*) AS events
FROM stg_events
GROUP BY 1, 2
"#
            .to_owned(),
        ),
    ]
}

/// The `offshoot.toml` that adds Offshoot to an existing dbt project or Dagster code location:
/// `[location]` with the given keys (TOML-quoted here), nothing else to write.
pub fn location_manifest(name: &str, location: &str, keys: &[(&str, &str)]) -> String {
    let name: String =
        name.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-')).collect();
    let name = if name.is_empty() { "my_pipeline".to_owned() } else { name };
    let mut text = format!(
        "# Offshoot reads this {location} project as it is; see README.md, \"dbt projects and Dagster code locations\".\n\
         [project]\nname = \"{name}\"\nproduction_branch = \"main\"\n\n[location]\ntype = \"{location}\"\n"
    );
    for (key, value) in keys {
        let quoted = toml_string(value);
        text.push_str(&format!("{key} = {quoted}\n"));
    }
    text
}

/// A TOML basic string.
fn toml_string(value: &str) -> String {
    let mut out = String::from("\"");
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use crate::{load, MemoryFiles};

    #[test]
    fn scaffolded_project_validates() {
        let project = load(&MemoryFiles::new(super::files("demo"))).expect("the scaffold is valid");
        assert_eq!(project.snapshot.len(), 3);
    }
}
