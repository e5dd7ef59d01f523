//! Validation: every problem in one pass, each as `path:line:col: error: message` plus a hint.

use expect_test::{expect, Expect};
use offshoot_project::{load, LoadError, MemoryFiles};

use crate::{files, load_ok};

fn check_files(project: &MemoryFiles, expect: Expect) {
    let actual = match load(project) {
        Ok(project) => format!("ok: {} assets", project.snapshot.len()),
        Err(LoadError::Invalid(diagnostics)) => {
            diagnostics.iter().map(|d| format!("{d}\n")).collect()
        }
        Err(error) => format!("files error: {error}"),
    };
    expect.assert_eq(&actual);
}

fn check(entries: &[(&str, &str)], expect: Expect) {
    check_files(&files(entries), expect);
}

#[test]
fn every_problem_in_one_pass() {
    check(
        &[
            ("assets/a.sql", "SELECT * FROM b"),
            ("assets/b.sql", "SELECT * FROM c"),
            ("assets/c.sql", "SELECT * FROM a"),
            ("assets/typo.sql", "SELECT * FROM raw_ordrs"),
            ("assets/broken.sql", "SELECT id FROM\nWHERE"),
            ("assets/staging/a.sql", "SELECT 1"),
        ],
        expect![[r#"
            assets/a.sql:1:15: error: dependency cycle: a -> b -> c -> a
              = hint: an asset cannot read from itself, directly or through other assets; break the cycle
            assets/broken.sql:2:1: error: SQL syntax error: Expected: table name, found: WHERE
              = hint: fix the query; `offshoot validate` re-checks every file
            assets/staging/a.sql:1:1: error: duplicate key `a`
              = hint: `a` is already defined at assets/a.sql:1; asset and source names must be unique (ignoring case)
            assets/typo.sql:1:15: error: `raw_ordrs` is not an asset, a source or a declared external table
              = hint: did you mean `raw_orders`? Otherwise add an asset file for it, declare it under [sources.raw_ordrs] in offshoot.toml, or list it in `external`
        "#]],
    );
}

#[test]
fn self_reference_is_a_cycle() {
    check(
        &[("assets/a.sql", "SELECT * FROM a")],
        expect![[r#"
        assets/a.sql:1:15: error: dependency cycle: a -> a
          = hint: an asset cannot read from itself, directly or through other assets; break the cycle
    "#]],
    );
}

#[test]
fn ctes_qualified_quoted_and_external_names() {
    let project = load_ok(&[
        ("offshoot.toml", "[project]\nname = \"t\"\nexternal = [\"pg_catalog.pg_tables\"]\n[sources.raw_orders]\n"),
        ("assets/orders.sql", "WITH raw_orders_2 AS (SELECT * FROM main.raw_orders) SELECT * FROM raw_orders_2"),
        ("assets/revenue.sql", "SELECT * FROM \"orders\" JOIN ORDERS o2 USING (id) JOIN pg_catalog.pg_tables ON true"),
    ]);
    let revenue = project.snapshot.assets().find(|a| a.key.as_str() == "revenue").expect("revenue");
    let deps: Vec<&str> = revenue.deps.iter().map(|k| k.as_str()).collect();
    assert_eq!(deps, ["orders"]);
    let orders = project.snapshot.assets().find(|a| a.key.as_str() == "orders").expect("orders");
    assert_eq!(orders.deps.iter().map(|k| k.as_str()).collect::<Vec<_>>(), ["raw_orders"]);
    // A quoted name is case-sensitive.
    check(
        &[("assets/orders.sql", "SELECT 1"), ("assets/revenue.sql", "SELECT * FROM \"Orders\"")],
        expect![[r#"
        assets/revenue.sql:1:15: error: `"Orders"` is not an asset, a source or a declared external table
          = hint: did you mean `orders`? Otherwise add an asset file for it, declare it under [sources.orders] in offshoot.toml, or list it in `external`
    "#]],
    );
}

#[test]
fn header_problems_point_into_the_header() {
    check(
        &[
            ("assets/a.sql", "/* offshoot\ngroup = \"marts\"\ncolour = \"red\"\n*/\nSELECT 1"),
            ("assets/b.sql", "/* offshoot\ntags = { tier = 1 }\n*/\nSELECT 1"),
            ("assets/c.sql", "/* offshoot\ntags = {\n*/\nSELECT 1"),
            ("assets/d.sql", "/* offshoot\ndeps = [\"a\", \"nope\"]\n*/\nSELECT 1"),
            ("assets/e.sql", "/* offshoot\npartitions = { type = \"fortnightly\", start = \"2024-01-01\" }\n*/\nSELECT 1"),
            ("assets/f.sql", "/* offshoot\ngroup = \"x\"\nSELECT 1"),
            ("assets/g.sql", "/* offshoot\ncommand = \"rm -rf /\"\n*/\nSELECT 1"),
        ],
        expect![[r#"
            assets/a.sql:3:1: error: unknown key `colour`
              = hint: valid keys: command, inputs, deps, group, description, tags, metadata, code_version, partitions, owners, grain
            assets/b.sql:2:17: error: `tags`: invalid type: integer `1`, expected a string
            assets/c.sql:2:9: error: unclosed inline table, expected `}`
            assets/d.sql:2:14: error: `nope` is not an asset, a source or a declared external table
              = hint: add an asset file for it, declare it under [sources.nope] in offshoot.toml, or list it in `external`
            assets/e.sql:2:14: error: unknown partitions type `fortnightly`
              = hint: write partitions = { type = "daily", start = "2024-01-01" } (hourly, daily, weekly, monthly) or { type = "static", keys = ["eu", "us"] }
            assets/f.sql:1:1: error: the `/* offshoot` header is never closed
              = hint: end the header with `*/`
            assets/g.sql:2:11: error: `command` is not allowed in an SQL asset's header
              = hint: command assets are .toml files of their own
        "#]],
    );
}

#[test]
fn one_mistake_never_hides_another_in_the_same_header() {
    check(
        &[
            (
                "assets/a.sql",
                "/* offshoot\ngroup = \"marts\ntags = { tier = 1 }\npartitions = { type = \"dayly\", start = \"2024-01-01\" }\ncolr = \"red\"\ngrian = [\"id\"]\n*/\nSELECT 1",
            ),
            ("assets/b.toml", "command = \"python3 load.py\"\ninptus = [\"load.py\"]\nowners = \"me\"\n"),
        ],
        expect![[r#"
            assets/a.sql:2:15: error: invalid basic string, expected `"`
            assets/a.sql:3:17: error: `tags`: invalid type: integer `1`, expected a string
            assets/a.sql:4:14: error: unknown partitions type `dayly`
              = hint: write partitions = { type = "daily", start = "2024-01-01" } (hourly, daily, weekly, monthly) or { type = "static", keys = ["eu", "us"] }
            assets/a.sql:5:1: error: unknown key `colr`
              = hint: valid keys: command, inputs, deps, group, description, tags, metadata, code_version, partitions, owners, grain
            assets/a.sql:6:1: error: unknown key `grian`; did you mean `grain`?
              = hint: valid keys: command, inputs, deps, group, description, tags, metadata, code_version, partitions, owners, grain
            assets/b.toml:2:1: error: unknown key `inptus`; did you mean `inputs`?
              = hint: valid keys: command, inputs, deps, group, description, tags, metadata, code_version, partitions, owners, grain
            assets/b.toml:3:10: error: `owners`: invalid type: string "me", expected a sequence
        "#]],
    );
}

#[test]
fn command_asset_problems() {
    check(
        &[
            ("assets/a.toml", "inputs = [\"load.py\"]\n"),
            (
                "assets/b.toml",
                "command = \"python3 load.py\"\ninputs = [\"missing.py\", \"../etc/passwd\"]\n",
            ),
            ("assets/c.toml", "command = \"x\"\ncommand = \"y\"\n"),
        ],
        expect![[r#"
            assets/a.toml:1:1: error: a command asset needs a non-empty `command`
              = hint: add command = "python3 scripts/load.py"; it runs in a checkout of the commit
            assets/b.toml:2:11: error: input file `missing.py` does not exist
              = hint: inputs are files from the repository root whose content is part of the code version
            assets/b.toml:2:25: error: input `../etc/passwd` must be a relative path inside the repository
              = hint: write paths from the repository root without `..`, like "scripts/load.py"
            assets/c.toml:2:1: error: duplicate key
        "#]],
    );
}

#[test]
fn manifest_problems() {
    check(
        &[("offshoot.toml", "[project]\nnam = \"x\"\n")],
        expect![[r#"
            offshoot.toml:2:1: error: unknown field `nam`, expected one of `name`, `description`, `dialect`, `production_branch`, `external`, `untracked_metadata`; did you mean `name`?
              = hint: offshoot.toml needs a [project] table with `name`; see README.md for every key
        "#]],
    );
    check(
        &[(
            "offshoot.toml",
            "[project]\nname = \"x\"\ndialect = \"oracle\"\n[sources.\"bad name\"]\n",
        )],
        expect![[r#"
        offshoot.toml:3:11: error: unknown SQL dialect `oracle`
          = hint: use "generic", "sqlite" or "postgres"
        offshoot.toml:4:1: error: invalid source name `bad name`: an asset key may contain only letters, digits and `_`, not ` `
          = hint: source names are table names: letters, digits and `_`
    "#]],
    );
    check_files(
        &MemoryFiles::new([("assets/a.sql", "SELECT 1")]),
        expect![[r#"
        offshoot.toml:1:1: error: no offshoot.toml at the repository root
          = hint: run `offshoot init` to create one, or point --repo at the project's repository
    "#]],
    );
}

#[test]
fn hostile_file_names_and_contents_never_panic() {
    check(
        &[
            ("assets/a;drop table x.sql", "SELECT 1"),
            ("assets/ünïcode.sql", "SELECT 1"),
            ("assets/.sql", "SELECT 1"),
            ("assets/notes.md", "not an asset"),
        ],
        expect![[r#"
            assets/.sql:1:1: error: invalid asset file name `.sql`: an asset key cannot be empty
              = hint: the file name (without extension) is the asset's table name: rename it to letters, digits and `_`, like `stg_orders.sql`
            assets/a;drop table x.sql:1:1: error: invalid asset file name `a;drop table x.sql`: an asset key may contain only letters, digits and `_`, not `;`
              = hint: the file name (without extension) is the asset's table name: rename it to letters, digits and `_`, like `stg_orders.sql`
            assets/ünïcode.sql:1:1: error: invalid asset file name `ünïcode.sql`: an asset key must start with a letter or `_`, not `ü`
              = hint: the file name (without extension) is the asset's table name: rename it to letters, digits and `_`, like `stg_orders.sql`
        "#]],
    );
    let mut binary = files(&[]);
    binary.files.insert("assets/bin.sql".into(), vec![b'S', b'E', 0xff, 0xfe]);
    check_files(
        &binary,
        expect![[r#"
        assets/bin.sql:1:3: error: the file is not valid UTF-8
          = hint: save the file as UTF-8
    "#]],
    );
    // Deeply nested or huge inputs give errors, not crashes.
    let deep = format!("SELECT {}1{} AS x", "(".repeat(3000), ")".repeat(3000));
    let long_header = format!("/* offshoot\ntags = {}\n*/\nSELECT 1", "[".repeat(5000));
    let project =
        files(&[("assets/deep.sql", deep.as_str()), ("assets/header.sql", long_header.as_str())]);
    match load(&project) {
        Err(LoadError::Invalid(d)) => assert_eq!(d.len(), 2, "{d:#?}"),
        other => panic!("expected two problems, got {other:?}"),
    }
}

#[test]
fn large_projects_parse_in_parallel_with_the_same_results() {
    let mut entries: Vec<(String, String)> = (0..300)
        .map(|i| {
            let upstream = if i == 0 { "raw_orders".to_owned() } else { format!("a{}", i - 1) };
            (format!("assets/a{i}.sql"), format!("SELECT id FROM {upstream}"))
        })
        .collect();
    let borrowed: Vec<(&str, &str)> =
        entries.iter().map(|(p, c)| (p.as_str(), c.as_str())).collect();
    let project = load_ok(&borrowed);
    assert_eq!(project.snapshot.len(), 302);
    let order: Vec<&str> = project
        .snapshot
        .topological_order()
        .iter()
        .map(|k| k.as_str())
        .filter(|k| k.starts_with('a'))
        .collect();
    assert_eq!(order.len(), 300);
    entries[17].1 = "SELECT FROM WHERE".to_owned();
    entries[250].1 = "SELECT id FROM a9999".to_owned();
    let borrowed: Vec<(&str, &str)> =
        entries.iter().map(|(p, c)| (p.as_str(), c.as_str())).collect();
    let Err(LoadError::Invalid(diagnostics)) = load(&files(&borrowed)) else {
        panic!("expected problems")
    };
    let places: Vec<String> =
        diagnostics.iter().map(|d| format!("{}:{}:{}", d.path, d.line, d.column)).collect();
    assert_eq!(
        places,
        ["assets/a17.sql:1:13", "assets/a250.sql:1:16"],
        "a broken file does not make its readers fail too"
    );
}

fn check_manifest(manifest: &str, expect: Expect) {
    let project = MemoryFiles::new([("offshoot.toml".to_owned(), manifest.as_bytes().to_vec())]);
    let actual = match offshoot_project::read_manifest(&project) {
        Ok(manifest) => format!("ok: {:?}", manifest.location),
        Err(LoadError::Invalid(diagnostics)) => {
            diagnostics.iter().map(|d| format!("{d}\n")).collect()
        }
        Err(error) => format!("files error: {error}"),
    };
    expect.assert_eq(&actual);
}

#[test]
fn location_section() {
    check_manifest("[project]\nname = \"a\"\n", expect!["ok: Native"]);
    check_manifest(
        "[project]\nname = \"a\"\n[location]\ntype = \"dbt\"\nproject_dir = \"./transform/\"\n",
        expect![[
            r#"ok: Dbt(DbtConfig { project_dir: "transform", parse_command: "dbt parse", build_command: "dbt build", prepare_command: None, timeout_seconds: 600 })"#
        ]],
    );
    check_manifest(
        "[project]\nname = \"a\"\n[location]\ntype = \"dagster\"\nmodule = \"shop.definitions\"\n",
        expect![[
            r#"ok: Dagster(DagsterConfig { module: Some("shop.definitions"), file: None, attribute: None, python: "python", working_directory: ".", prepare_command: None, timeout_seconds: 600 })"#
        ]],
    );
    check_manifest(
        "[project]\nname = \"a\"\n[location]\ntype = \"airflow\"\n",
        expect![[r#"
        offshoot.toml:4:8: error: unknown location type `airflow`
          = hint: use "native", "dbt" or "dagster"
    "#]],
    );
    check_manifest(
        "[project]\nname = \"a\"\n[location]\ntype = \"dbt\"\nproject_dir = \"../elsewhere\"\nmodule = \"x\"\n",
        expect![[r#"
            offshoot.toml:3:1: error: `module` applies to another location type
              = hint: a dbt location takes project_dir, parse_command, build_command, prepare_command and timeout_seconds
            offshoot.toml:5:15: error: `project_dir` cannot leave the repository (`..`)
              = hint: give a folder inside the repository, like "." or "transform"
        "#]],
    );
    check_manifest(
        "[project]\nname = \"a\"\n[location]\ntype = \"dagster\"\nmodule = \"shop;rm -rf\"\nfile = \"/etc/x.py\"\nattribute = \"1x\"\n",
        expect![[r#"
            offshoot.toml:3:1: error: a dagster location needs exactly one of `module` and `file`
              = hint: module = "my_project.definitions"
            offshoot.toml:5:10: error: `shop;rm -rf` is not a Python module name
              = hint: dotted identifiers, like "my_project.definitions"
            offshoot.toml:6:8: error: `file` must be a relative path inside the repository
              = hint: a .py file inside the repository
            offshoot.toml:7:13: error: `1x` is not a Python identifier
              = hint: the name of the Definitions object, like "defs"
        "#]],
    );
}

fn check_schedules(schedules: &str, expect: Expect) {
    let manifest = format!("[project]\nname = \"a\"\n{schedules}");
    let project = MemoryFiles::new([("offshoot.toml".to_owned(), manifest.into_bytes())]);
    let actual = match offshoot_project::read_manifest(&project) {
        Ok(manifest) => manifest
            .schedules
            .iter()
            .map(|s| {
                format!(
                    "{} {:?} in {} runs {:?} ({:?})\n",
                    s.name,
                    s.cron.pattern(),
                    s.cron.timezone(),
                    s.selection,
                    s.origin
                )
            })
            .collect(),
        Err(LoadError::Invalid(diagnostics)) => {
            diagnostics.iter().map(|d| format!("{d}\n")).collect()
        }
        Err(error) => format!("files error: {error}"),
    };
    expect.assert_eq(&actual);
}

#[test]
fn schedules_section() {
    check_schedules(
        "[[schedules]]\nname = \"nightly\"\ncron = \"0 2 * * *\"\ntimezone = \"Europe/Berlin\"\nselection = \"group:marts+\"\n\n[[schedules]]\nname = \"often\"\ncron = \"*/15 * * * *\"\n",
        expect![[r#"
            nightly "0 2 * * *" in Europe/Berlin runs "group:marts+" (Manifest { line: 3 })
            often "*/15 * * * *" in UTC runs "*" (Manifest { line: 9 })
        "#]],
    );
    // Every problem at once, each at its value.
    check_schedules(
        "[[schedules]]\nname = \"a\"\ncron = \"0 2 * *\"\n\n[[schedules]]\nname = \"b\"\ncron = \"0 2 * * *\"\ntimezone = \"Moon/Base\"\n\n[[schedules]]\nname = \"a\"\ncron = \"@daily\"\nselection = \"tag:(\"\n\n[[schedules]]\nname = \"x y\"\ncron = \"0 99 * * *\"\n",
        expect![[r#"
            offshoot.toml:5:8: error: invalid cron pattern `0 2 * *`: 4 fields; a pattern has five: minute hour day-of-month month day-of-week
              = hint: five fields, like "0 2 * * *" (02:00 every day) or "*/15 * * * *"
            offshoot.toml:10:12: error: unknown time zone `Moon/Base`
              = hint: an IANA time zone, like "UTC" or "Europe/Berlin"
            offshoot.toml:13:8: error: a second schedule named `a`
              = hint: each [[schedules]] entry needs a name of its own
            offshoot.toml:15:18: error: invalid selection in schedule `a`: expected a value after `tag:`
              = hint: the selection syntax of `offshoot run`, like "group:marts+" or "*"
            offshoot.toml:18:8: error: invalid schedule name `x y`: use letters, digits, `_`, `-` and `.` (at most 100)
              = hint: like "nightly"
            offshoot.toml:19:8: error: invalid cron pattern `0 99 * * *`: Component error: Number out of bounds.
              = hint: five fields, like "0 2 * * *" (02:00 every day) or "*/15 * * * *"
        "#]],
    );
    check_schedules(
        "[[schedules]]\nname = \"a\"\ncron = \"@daily\"\nwhen = \"now\"\n",
        expect![[r#"
            offshoot.toml:6:1: error: unknown field `when`, expected one of `name`, `cron`, `timezone`, `selection`, `description`
              = hint: offshoot.toml needs a [project] table with `name`; see README.md for every key
        "#]],
    );
}
