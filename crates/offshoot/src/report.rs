//! Renders a change set as text for terminals, JSON (a stable, documented shape) and Markdown
//! ready to paste into a pull-request comment.

use std::fmt::Write;

use offshoot_core::{AssetChange, ChangeReason, ChangeSet, MapChange};
use offshoot_repo::CommitInfo;
use offshoot_server::changes::{code_diff, ChangeSetJson};
use serde::Serialize;

pub struct Comparison<'a> {
    pub base_rev: &'a str,
    pub base_tip: &'a CommitInfo,
    /// The commit head is compared with: the merge-base or base's tip.
    pub compared: &'a CommitInfo,
    pub against: &'static str,
    pub head_rev: &'a str,
    pub head: &'a CommitInfo,
    pub changes: &'a ChangeSet,
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// "CODE_VERSION, TAGS"
fn reasons(change: &AssetChange) -> String {
    change.reasons.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
}

fn summary_line(changes: &ChangeSet) -> String {
    changes.counts().phrase()
}

fn map_lines(label: &str, change: &MapChange) -> Vec<String> {
    let mut lines = Vec::new();
    for (k, v) in &change.added {
        lines.push(format!("{label} added {k} = {v}"));
    }
    for (k, (old, new)) in &change.changed {
        lines.push(format!("{label} changed {k}: {old} -> {new}"));
    }
    for (k, v) in &change.removed {
        lines.push(format!("{label} removed {k} (was {v})"));
    }
    lines
}

/// One line per detail that is not the code diff.
fn detail_lines(change: &AssetChange) -> Vec<String> {
    let details = &change.details;
    let mut lines = Vec::new();
    if let Some(code) = &details.code {
        let version = |v: &offshoot_core::CodeVersion| {
            if v.derived {
                format!("derived {}", short(&v.value))
            } else {
                format!("\"{}\"", v.value)
            }
        };
        lines.push(format!(
            "code version {} -> {}",
            version(&code.old_version),
            version(&code.new_version)
        ));
    }
    if let Some(deps) = &details.dependencies {
        for key in &deps.added {
            lines.push(format!("dependency added {key}"));
        }
        for key in &deps.removed {
            lines.push(format!("dependency removed {key}"));
        }
    }
    if let Some((old, new)) = &details.partitions {
        let show = |p: &Option<offshoot_core::PartitionsDefinition>| {
            p.as_ref().map_or("none".to_owned(), |p| p.to_string())
        };
        lines.push(format!("partitions {} -> {}", show(old), show(new)));
    }
    if let Some(tags) = &details.tags {
        lines.extend(map_lines("tag", tags));
    }
    if let Some(metadata) = &details.metadata {
        lines.extend(map_lines("metadata", metadata));
    }
    lines
}

fn label(change: &AssetChange) -> &'static str {
    match change.reasons.as_slice() {
        [ChangeReason::New] => "NEW",
        [ChangeReason::Removed] => "REMOVED",
        _ => "CHANGED",
    }
}

pub fn text(c: &Comparison) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} ({}) against {} at {} ({})",
        c.head_rev,
        short(&c.head.sha),
        c.base_rev,
        c.against,
        short(&c.compared.sha)
    );
    if c.changes.is_empty() {
        let _ = writeln!(out, "no asset changes");
        return out;
    }
    for change in &c.changes.changes {
        let _ = writeln!(out, "  {:<9} {}  {}", label(change), change.key, reasons(change));
        for line in detail_lines(change) {
            let _ = writeln!(out, "              {line}");
        }
        if let Some(diff) = code_diff(change) {
            for line in diff.lines() {
                let _ = writeln!(out, "              {line}");
            }
        }
    }
    for impacted in &c.changes.impacted {
        let path: Vec<&str> = impacted.path.iter().map(|k| k.as_str()).collect();
        let _ = writeln!(out, "  {:<9} {}  via {}", "IMPACTED", impacted.key, path.join(" -> "));
    }
    let _ = writeln!(out, "{}", summary_line(c.changes));
    out
}

#[derive(Serialize)]
pub struct DiffJson<'a> {
    base: BaseJson<'a>,
    head: RevisionJson<'a>,
    against: &'a str,
    #[serde(flatten)]
    changes: ChangeSetJson,
}

#[derive(Serialize)]
struct BaseJson<'a> {
    rev: &'a str,
    /// The commit head was compared with.
    commit: &'a str,
    /// Base's current tip (equal to `commit` with `--against tip`).
    tip: &'a str,
}

#[derive(Serialize)]
struct RevisionJson<'a> {
    rev: &'a str,
    commit: &'a str,
}

pub fn json<'a>(c: &'a Comparison) -> DiffJson<'a> {
    DiffJson {
        base: BaseJson { rev: c.base_rev, commit: &c.compared.sha, tip: &c.base_tip.sha },
        head: RevisionJson { rev: c.head_rev, commit: &c.head.sha },
        against: c.against,
        changes: ChangeSetJson::from(c.changes),
    }
}

/// Escapes text for a Markdown table cell: no HTML, no pipes, no code spans breaking out.
fn cell(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '|' => out.push_str("\\|"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '`' | '*' | '_' | '[' | ']' | '\\' => {
                out.push('\\');
                out.push(ch);
            }
            '\n' | '\r' => out.push(' '),
            _ => out.push(ch),
        }
    }
    out
}

/// Tables longer than this are collapsed in a `<details>` block.
const COLLAPSE_AFTER: usize = 15;

pub fn markdown(c: &Comparison) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### Offshoot: `{}` against `{}`\n\nCompared `{}` with {} `{}`: **{}**.\n",
        cell(c.head_rev),
        cell(c.base_rev),
        short(&c.head.sha),
        if c.against == "tip" { "the tip of the base," } else { "the merge-base" },
        short(&c.compared.sha),
        summary_line(c.changes)
    );
    if c.changes.is_empty() {
        let _ = writeln!(out, "No asset changes.");
        return out;
    }
    let long = c.changes.changes.len() > COLLAPSE_AFTER;
    if long {
        let _ = writeln!(
            out,
            "<details><summary>{} changed assets</summary>\n",
            c.changes.changes.len()
        );
    }
    let _ = writeln!(out, "| Asset | Change | Details |\n|---|---|---|");
    for change in &c.changes.changes {
        let badge = match label(change) {
            "NEW" => "New in branch".to_owned(),
            "REMOVED" => "Removed in branch".to_owned(),
            _ => format!("Changed in branch: {}", reasons(change)),
        };
        let details: Vec<String> = detail_lines(change).iter().map(|l| cell(l)).collect();
        let _ = writeln!(out, "| `{}` | {} | {} |", change.key, badge, details.join("<br>"));
    }
    if long {
        let _ = writeln!(out, "\n</details>");
    }
    if !c.changes.impacted.is_empty() {
        let keys: Vec<String> = c.changes.impacted.iter().map(|i| format!("`{}`", i.key)).collect();
        let _ = writeln!(out, "\n**Impacted downstream ({})**: {}", keys.len(), keys.join(", "));
    }
    let diffs: Vec<(String, String)> = c
        .changes
        .changes
        .iter()
        .filter_map(|ch| code_diff(ch).map(|d| (ch.key.to_string(), d)))
        .collect();
    if !diffs.is_empty() {
        let _ = writeln!(out, "\n<details><summary>Code changes ({})</summary>\n", diffs.len());
        for (key, diff) in diffs {
            // A fence longer than any backtick run inside the diff cannot be closed by it.
            let longest = diff.split(|ch| ch != '`').map(str::len).max().unwrap_or(0);
            let fence = "`".repeat(longest.max(2) + 1);
            let _ = writeln!(out, "`{key}`\n\n{fence}diff\n{}{fence}\n", diff);
        }
        let _ = writeln!(out, "</details>");
    }
    out
}
