//! `offshoot-bench data-diff [--rows 1000000] [--runs 3] [--postgres URL]`: the data diff of a
//! `--rows`-row, 10-column table with a key and 1% of rows changed (plus 0.5% removed and 0.5%
//! added), on SQLite and PostgreSQL, side by side with the engine's own floor: one
//! `FULL OUTER JOIN ... USING (id)` count over the same two tables on PostgreSQL, the same match
//! as one `GROUP BY id` on SQLite (whose full join of unindexed tables is quadratic). Medians of `--runs`, and the
//! process's peak memory after each backend (the diff streams nothing but counts and a sample).

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use offshoot_core::{AssetKey, DeploymentName, RepositoryName, SchemaName};
use offshoot_warehouse::data_diff::{DiffOptions, KeyRequest};
use offshoot_warehouse::{Target, Warehouse};
use offshoot_warehouse_postgres::{PostgresWarehouse, PostgresWarehouseOptions};
use offshoot_warehouse_sqlite::SqliteWarehouse;
use sqlx::{AssertSqlSafe, Connection};

use crate::{machine, mb, ms, status_kb, workspace_commit};

pub struct Args {
    rows: u64,
    runs: usize,
    postgres: Option<String>,
}

pub fn parse_args(mut arguments: impl Iterator<Item = String>) -> anyhow::Result<Args> {
    let mut args = Args {
        rows: 1_000_000,
        runs: 3,
        postgres: Some("postgres://postgres@127.0.0.1:5432/postgres".to_owned()),
    };
    while let Some(flag) = arguments.next() {
        let mut value = || arguments.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--rows" => args.rows = value()?.parse().context("--rows")?,
            "--runs" => args.runs = value()?.parse().context("--runs")?,
            "--postgres" => args.postgres = Some(value()?),
            "--no-postgres" => args.postgres = None,
            "-h" | "--help" => {
                println!("offshoot-bench data-diff [--rows 1000000] [--runs 3] [--postgres URL | --no-postgres]");
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}`"),
        }
    }
    if args.rows < 1000 || args.runs == 0 {
        bail!("--rows must be at least 1000 and --runs at least 1");
    }
    Ok(args)
}

fn schema(deployment: &str) -> SchemaName {
    SchemaName::for_deployment(
        &RepositoryName::new("bench").expect("valid"),
        &DeploymentName::new(deployment).expect("valid"),
    )
}

/// Ten columns: the key, three integers, three reals, three texts.
fn table_sql(rows: u64, branch: bool) -> String {
    let (first, last, bump) = if branch {
        (rows / 200 + 1, rows + rows / 200, "CASE WHEN n % 100 = 0 THEN 1 ELSE 0 END")
    } else {
        (1, rows, "0")
    };
    format!(
        "WITH RECURSIVE s(n) AS (SELECT {first} UNION ALL SELECT n + 1 FROM s WHERE n < {last}) \
         SELECT CAST(n AS BIGINT) AS id, CAST(n % 1000 + {bump} AS BIGINT) AS a, CAST(n % 7 AS BIGINT) AS b, CAST(n * 3 AS BIGINT) AS c, \
         CAST(n / 3.0 AS DOUBLE PRECISION) AS d, CAST(n % 10 / 4.0 AS DOUBLE PRECISION) AS e, CAST(n * 0.5 AS DOUBLE PRECISION) AS f, \
         CAST('name ' || n AS TEXT) AS g, CAST('group ' || (n % 50) AS TEXT) AS h, CAST('x' AS TEXT) AS i FROM s"
    )
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn peak_kb() -> u64 {
    status_kb("self").map(|(peak, _)| peak).unwrap_or(0)
}

struct Measured {
    diff: Duration,
    floor: Duration,
    peak_kb: u64,
}

async fn measure(
    warehouse: &dyn Warehouse,
    runs: usize,
    rows: u64,
    floor: impl AsyncFn(&str) -> anyhow::Result<Duration>,
    floor_sql: &str,
) -> anyhow::Result<Measured> {
    let production = Target { schema: schema("prod"), production: schema("prod") };
    let branch = Target { schema: schema("feature"), production: schema("prod") };
    warehouse.prepare(&production).await?;
    warehouse.prepare(&branch).await?;
    let key = AssetKey::new("wide").expect("valid");
    warehouse.materialize_sql(&production, &key, &table_sql(rows, false)).await?;
    warehouse.materialize_sql(&branch, &key, &table_sql(rows, true)).await?;
    let options = DiffOptions {
        key: KeyRequest::Declared(vec!["id".to_owned()]),
        sample: 10,
        tolerance: 0.0,
        row_limit: None,
    };
    let mut diffs = Vec::new();
    let mut floors = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let diff = warehouse.data_diff(&branch, "wide", &options).await?;
        diffs.push(started.elapsed());
        let counts = diff.rows.context("no row counts")?;
        let expected_changed = (rows / 200 + 1..=rows).filter(|n| n % 100 == 0).count() as u64;
        if counts.changed != expected_changed
            || counts.only_in_production != rows / 200
            || counts.only_in_branch != rows / 200
        {
            bail!("wrong counts: {counts:?}");
        }
        floors.push(floor(floor_sql).await?);
    }
    let _ = warehouse.teardown(&branch).await;
    Ok(Measured { diff: median(diffs), floor: median(floors), peak_kb: peak_kb() })
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    println!("data diff of a {}-row, 10-column table (1% changed, 0.5% removed, 0.5% added), {} runs, medians", args.rows, args.runs);
    println!("machine: {}; commit {}", machine(), workspace_commit());
    runtime.block_on(async {
        let dir = std::env::temp_dir().join(format!("offshoot-bench-diff-{}", std::process::id()));
        let warehouse = SqliteWarehouse::new(dir.join("warehouse"))?;
        let production_file = warehouse.production_file(&schema("prod"));
        let branch_target = Target { schema: schema("feature"), production: schema("prod") };
        let branch_file = warehouse.file_of(&branch_target);
        let floor = async |sql: &str| -> anyhow::Result<Duration> {
            let mut connection = sqlx::sqlite::SqliteConnection::connect(&format!("sqlite://{}", branch_file.display())).await?;
            sqlx::query(AssertSqlSafe(format!("ATTACH DATABASE '{}' AS prod", production_file.display()))).execute(&mut connection).await?;
            let started = Instant::now();
            let _: i64 = sqlx::query_scalar(AssertSqlSafe(sql.to_owned())).fetch_one(&mut connection).await?;
            Ok(started.elapsed())
        };
        // SQLite joins unindexed tables in nested loops (a 100,000-row FULL OUTER JOIN took 9
        // minutes here), so its floor is the same match done its fastest way: one grouping.
        let sqlite_floor = "SELECT count(*) FROM (SELECT 1 FROM (SELECT id FROM prod.wide UNION ALL SELECT id FROM main.wide) GROUP BY id)";
        let sqlite = measure(&warehouse, args.runs, args.rows, floor, sqlite_floor).await?;
        report("SQLite", "one GROUP BY id over both sides", &sqlite);
        let _ = std::fs::remove_dir_all(&dir);
        if let Some(url) = &args.postgres {
            let options = PostgresWarehouseOptions { branch_role: "offshoot_bench_branch".to_owned(), ..PostgresWarehouseOptions::default() };
            let warehouse = PostgresWarehouse::connect(url, options).await?;
            warehouse.setup_roles(&schema("prod")).await?;
            let floor = async |sql: &str| -> anyhow::Result<Duration> {
                let mut connection = sqlx::postgres::PgConnection::connect(url).await?;
                let started = Instant::now();
                let _: i64 = sqlx::query_scalar(AssertSqlSafe(sql.to_owned())).fetch_one(&mut connection).await?;
                Ok(started.elapsed())
            };
            let postgres_floor = "SELECT count(*) FROM bench__prod.wide AS p FULL OUTER JOIN bench__feature.wide AS b USING (id)";
            let postgres = measure(&warehouse, args.runs, args.rows, floor, postgres_floor).await?;
            report("PostgreSQL", "FULL OUTER JOIN ... USING (id) count", &postgres);
            let mut connection = sqlx::postgres::PgConnection::connect(url).await?;
            sqlx::raw_sql("DROP SCHEMA IF EXISTS bench__prod CASCADE").execute(&mut connection).await?;
        }
        anyhow::Ok(())
    })
}

fn report(backend: &str, floor: &str, measured: &Measured) {
    let ratio = measured.diff.as_secs_f64() / measured.floor.as_secs_f64().max(1e-9);
    println!(
        "{backend:<11} diff {:>9}  floor ({floor}) {:>9}  ratio {ratio:.2}x  peak RSS of the process {}",
        ms(measured.diff),
        ms(measured.floor),
        mb(measured.peak_kb)
    );
}
