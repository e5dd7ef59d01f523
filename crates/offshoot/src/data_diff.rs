//! `offshoot data-diff`: what a branch deployment's runs did to its assets' data, against
//! production's tables, from the server's API.

use std::fmt::Write as _;

use serde_json::Value;

use crate::client::{encode, Client, ClientArgs};
use crate::{Format, Outcome};

#[derive(clap::Args)]
pub struct Args {
    /// The branch deployment.
    #[arg(long)]
    deployment: String,
    /// Which assets (a selection, e.g. `changed_in_branch:ANY+`); default every asset the
    /// branch built.
    #[arg(long)]
    select: Option<String>,
    /// Key columns, comma-separated (default: the asset's declared grain, else inferred).
    #[arg(long)]
    key: Option<String>,
    /// Sample rows per kind (added, removed, changed).
    #[arg(long, default_value_t = 10)]
    sample: usize,
    /// Numbers closer than this are equal (default: exact).
    #[arg(long)]
    tolerance: Option<f64>,
    /// Which production table to compare with: `current` (production's table now),
    /// `built-against` (the one current when the branch built its own) or a production run's
    /// id. A table production has replaced since is gone: the diff then compares with the
    /// current one and says so.
    #[arg(long, default_value = "current", value_parser = parse_against)]
    against: String,
    /// The repository, when several have a deployment of this name.
    #[arg(long)]
    repository: Option<String>,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    #[command(flatten)]
    client: ClientArgs,
}

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let client = Client::new(&args.client)?;
    let deployment = encode(&args.deployment);
    let repository = args
        .repository
        .as_deref()
        .map(|r| format!("&repository={}", encode(r)))
        .unwrap_or_default();
    // Which assets: a selection's keys, or what the branch built (the summaries say).
    let keys: Vec<String> = match &args.select {
        Some(selection) => {
            let picked = client.get(&format!(
                "/api/v1/deployments/{deployment}/select?selection={}{repository}",
                encode(selection)
            ))?;
            picked["keys"]
                .as_array()
                .or_else(|| picked.as_array())
                .map(|a| a.iter().filter_map(|k| k.as_str().map(str::to_owned)).collect())
                .unwrap_or_default()
        }
        None => {
            let summaries = client.get(&format!(
                "/api/v1/deployments/{deployment}/data-diffs?sample=0{repository}"
            ))?;
            summaries["diffs"]
                .as_array()
                .map(|a| a.iter().filter_map(|d| d["asset"].as_str().map(str::to_owned)).collect())
                .unwrap_or_default()
        }
    };
    let mut query = format!("sample={}{repository}", args.sample);
    if let Some(key) = &args.key {
        query.push_str(&format!("&key={}", encode(key)));
    }
    if let Some(tolerance) = args.tolerance {
        query.push_str(&format!("&tolerance={tolerance}"));
    }
    query.push_str(&format!("&against={}", encode(&args.against)));
    let mut diffs = Vec::new();
    for key in &keys {
        diffs.push(client.get(&format!(
            "/api/v1/deployments/{deployment}/assets/{}/data-diff?{query}",
            encode(key)
        ))?);
    }
    let text = match args.format {
        Format::Json => serde_json::to_string_pretty(&Value::Array(diffs))? + "\n",
        Format::Text => diffs.iter().map(text_of).collect::<Vec<_>>().join("\n"),
        Format::Markdown => markdown_of(&args.deployment, &diffs),
    };
    if keys.is_empty() && args.format != Format::Json {
        println!(
            "{} has built no asset yet: nothing to compare (materialize in it first)",
            args.deployment
        );
    } else {
        print!("{text}");
    }
    Ok(Outcome::Ok)
}

/// `--against`: checked here, so a typo is a usage error before any request.
fn parse_against(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text == "current" || text == "built-against" || text.parse::<u64>().is_ok_and(|n| n > 0) {
        Ok(text.to_owned())
    } else {
        Err(format!("`{text}` is none of `current`, `built-against` or a production run's id"))
    }
}

fn count(value: &Value) -> String {
    value.as_u64().map(|n| n.to_string()).unwrap_or_else(|| "–".to_owned())
}

fn cell(value: &Value) -> String {
    match value {
        Value::Null => "NULL".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One asset as text: state, rows, schema, columns that differ, notes and the sample.
fn text_of(diff: &Value) -> String {
    let mut out = String::new();
    let asset = diff["asset"].as_str().unwrap_or("");
    match diff["state"].as_str().unwrap_or("") {
        "new_in_branch" => {
            let _ = writeln!(
                out,
                "{asset}: new in the branch ({} rows); production has no table",
                count(&diff["branch_rows"])
            );
            return out;
        }
        "not_built_in_branch" => {
            let _ = writeln!(
                out,
                "{asset}: not built in the branch; it reads production's table ({} rows)",
                count(&diff["production_rows"])
            );
            return out;
        }
        "not_built" => {
            let _ = writeln!(out, "{asset}: no table in the branch or in production");
            return out;
        }
        _ => {}
    }
    let rows = &diff["rows"];
    let _ = writeln!(
        out,
        "{asset}: {} rows in production, {} in the branch",
        count(&diff["production_rows"]),
        count(&diff["branch_rows"])
    );
    let run = |v: &Value| v.as_i64().map(|r| format!("run {r}"));
    let _ = writeln!(
        out,
        "  the branch's table ({}) against production's ({})",
        run(&diff["branch_run"]).unwrap_or_else(|| "no recorded run".to_owned()),
        run(&diff["production_run"]).unwrap_or_else(|| "no recorded run".to_owned())
    );
    let against = &diff["against"];
    if against["requested"].as_str().is_some_and(|r| r != "current") {
        let _ = writeln!(
            out,
            "  asked for production's table {}; compared with {}",
            against_text(&against["requested"]),
            against_text(&against["compared"])
        );
    }
    let key = &diff["key"];
    let columns: Vec<String> = key["columns"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    match key["source"].as_str() {
        Some("none") => {
            let _ = writeln!(
                out,
                "  whole rows: {} only in production, {} only in the branch, {} in both",
                count(&rows["only_in_production"]),
                count(&rows["only_in_branch"]),
                count(&rows["equal"])
            );
        }
        source => {
            let _ = writeln!(
                out,
                "  by {} ({}): {} removed, {} added, {} changed, {} equal",
                columns.join(", "),
                source.unwrap_or(""),
                count(&rows["only_in_production"]),
                count(&rows["only_in_branch"]),
                count(&rows["changed"]),
                count(&rows["equal"])
            );
        }
    }
    let schema = &diff["schema"];
    let names = |v: &Value| {
        v.as_array()
            .map(|a| {
                a.iter().filter_map(|c| c["name"].as_str().map(str::to_owned)).collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    for (label, list) in
        [("columns added", names(&schema["added"])), ("columns removed", names(&schema["removed"]))]
    {
        if !list.is_empty() {
            let _ = writeln!(out, "  {label}: {}", list.join(", "));
        }
    }
    for change in schema["type_changed"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  type of {}: {} -> {}",
            cell(&change["name"]),
            cell(&change["production"]),
            cell(&change["branch"])
        );
    }
    if schema["order_changed"].as_bool() == Some(true) {
        out.push_str("  column order changed\n");
    }
    for column in diff["columns"].as_array().into_iter().flatten() {
        let (p, b) = (&column["production"], &column["branch"]);
        let stats_differ = p.is_object()
            && (p["sum"] != b["sum"]
                || p["min"] != b["min"]
                || p["max"] != b["max"]
                || p["nulls"] != b["nulls"]);
        match column["equal_share"].as_f64() {
            Some(share) if share < 1.0 => {
                let _ = writeln!(
                    out,
                    "  {}: {:.1}% of matched rows equal",
                    cell(&column["name"]),
                    share * 100.0
                );
            }
            _ if stats_differ => {
                let _ = writeln!(out, "  {}:", cell(&column["name"]));
            }
            _ => {}
        }
        if stats_differ {
            let _ = writeln!(
                out,
                "    sum {} -> {}, min {} -> {}, max {} -> {}, NULLs {} -> {}",
                cell(&p["sum"]),
                cell(&b["sum"]),
                cell(&p["min"]),
                cell(&b["min"]),
                cell(&p["max"]),
                cell(&b["max"]),
                cell(&p["nulls"]),
                cell(&b["nulls"])
            );
        }
    }
    for note in diff["notes"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "  note: {}", cell(note));
    }
    let samples = &diff["samples"];
    let header: Vec<String> =
        samples["columns"].as_array().map(|a| a.iter().map(cell).collect()).unwrap_or_default();
    for (label, rows) in [("added", &samples["added"]), ("removed", &samples["removed"])] {
        let rows = rows.as_array().cloned().unwrap_or_default();
        if !rows.is_empty() {
            let _ = writeln!(out, "  {label} ({}):", header.join(", "));
            for row in rows {
                let values: Vec<String> =
                    row.as_array().map(|r| r.iter().map(cell).collect()).unwrap_or_default();
                let _ = writeln!(out, "    {}", values.join(", "));
            }
        }
    }
    let changed_columns: Vec<String> = samples["changed_columns"]
        .as_array()
        .map(|a| a.iter().map(cell).collect())
        .unwrap_or_default();
    let changed = samples["changed"].as_array().cloned().unwrap_or_default();
    if !changed.is_empty() {
        out.push_str("  changed:\n");
        for row in changed {
            let key: Vec<String> =
                row["key"].as_array().map(|r| r.iter().map(cell).collect()).unwrap_or_default();
            let cells: Vec<String> = row["cells"]
                .as_array()
                .into_iter()
                .flatten()
                .zip(&changed_columns)
                .filter(|(c, _)| c["changed"].as_bool() == Some(true))
                .map(|(c, name)| {
                    format!("{name} {} -> {}", cell(&c["production"]), cell(&c["branch"]))
                })
                .collect();
            let _ = writeln!(out, "    {}: {}", key.join(", "), cells.join("; "));
        }
    }
    out
}

/// An `against` value for people: `current`, `built-against` or a run's id.
fn against_text(value: &Value) -> String {
    match value.as_str() {
        Some("current") => "as it is now".to_owned(),
        Some("built-against") => "the branch was built against".to_owned(),
        Some(run) => format!("of run {run}"),
        None => "?".to_owned(),
    }
}

fn markdown_of(deployment: &str, diffs: &[Value]) -> String {
    let mut out = format!("### Data changes in `{deployment}`\n\n| Asset | Rows (production → branch) | Added | Removed | Changed | Key |\n|---|---:|---:|---:|---:|---|\n");
    for diff in diffs {
        let rows = &diff["rows"];
        let _ = writeln!(
            out,
            "| `{}` | {} → {} | {} | {} | {} | {} |",
            cell(&diff["asset"]),
            count(&diff["production_rows"]),
            count(&diff["branch_rows"]),
            count(&rows["only_in_branch"]),
            count(&rows["only_in_production"]),
            count(&rows["changed"]),
            match diff["sampled"]["modulus"].as_u64() {
                // Above the row limit the counts by key are a sample's.
                Some(m) => format!(
                    "{} (sampled: 1 key in {m})",
                    diff["key"]["source"].as_str().unwrap_or("")
                ),
                None => diff["key"]["source"].as_str().unwrap_or("").to_owned(),
            }
        );
    }
    out
}
