//! `offshoot-bench promotion [--models 1000] [--changed 29] [--rows 10000] [--runs 3] [--postgres URL | --no-postgres]`:
//! merge → production up to date for a `--models`-model project whose branch changed
//! `--changed` models, on SQLite and PostgreSQL: promoting the branch's tables against
//! rebuilding the same models in production, side by side in one run, and the rollback of
//! each (restoring the archive). On PostgreSQL also the promotion of every model in one
//! catch-up. Every run checks that production ends with the branch's checksums.
//!
//! The project: a source `raw` of `--rows` rows; model `m<i>` reads `raw` (the first ten) or
//! `m<i-10>`, so each is a `--rows`-row table built from its upstream. The branch changes
//! `--changed` consecutive models in the middle (each adds one more to `amount`).

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use offshoot_core::{AssetKey, DeploymentName, RepositoryName, SchemaName};
use offshoot_warehouse::{ArchiveId, Promotion, Target, Warehouse};
use offshoot_warehouse_postgres::{PostgresWarehouse, PostgresWarehouseOptions};
use offshoot_warehouse_sqlite::SqliteWarehouse;
use sqlx::Connection;

use crate::{machine, ms, workspace_commit};

pub struct Args {
    models: usize,
    changed: usize,
    rows: u64,
    runs: usize,
    postgres: Option<String>,
}

pub fn parse_args(mut arguments: impl Iterator<Item = String>) -> anyhow::Result<Args> {
    let mut args = Args {
        models: 1000,
        changed: 29,
        rows: 10_000,
        runs: 3,
        postgres: Some("postgres://postgres@127.0.0.1:5432/postgres".to_owned()),
    };
    while let Some(flag) = arguments.next() {
        let mut value = || arguments.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--models" => args.models = value()?.parse().context("--models")?,
            "--changed" => args.changed = value()?.parse().context("--changed")?,
            "--rows" => args.rows = value()?.parse().context("--rows")?,
            "--runs" => args.runs = value()?.parse().context("--runs")?,
            "--postgres" => args.postgres = Some(value()?),
            "--no-postgres" => args.postgres = None,
            "-h" | "--help" => {
                println!("offshoot-bench promotion [--models 1000] [--changed 29] [--rows 10000] [--runs 3] [--postgres URL | --no-postgres]");
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}`"),
        }
    }
    if args.models < 20 || args.changed == 0 || args.changed > args.models / 2 || args.runs == 0 {
        bail!("--models at least 20, --changed between 1 and half the models, --runs at least 1");
    }
    Ok(args)
}

fn schema(deployment: &str) -> SchemaName {
    SchemaName::for_deployment(
        &RepositoryName::new("bench").expect("valid"),
        &DeploymentName::new(deployment).expect("valid"),
    )
}

fn model(i: usize) -> AssetKey {
    AssetKey::new(&format!("m{i:04}")).expect("valid")
}

/// The SELECT of model `i`, with `bump` added to its amounts (the branch's change).
fn model_sql(i: usize, bump: u32) -> String {
    let upstream = if i < 10 { "raw".to_owned() } else { model(i - 10).as_str().to_owned() };
    format!("SELECT id, amount + {} AS amount FROM {upstream}", 1 + bump)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

struct Measured {
    promote: Duration,
    promote_restore: Duration,
    rebuild: Duration,
    rebuild_restore: Duration,
}

async fn checksums(
    warehouse: &dyn Warehouse,
    target: &Target,
    keys: &[AssetKey],
) -> anyhow::Result<Vec<Option<String>>> {
    let mut out = Vec::new();
    for key in keys {
        out.push(warehouse.table_checksum(target, key.as_str()).await?);
    }
    Ok(out)
}

async fn measure(
    warehouse: &dyn Warehouse,
    args: &Args,
    seed: impl AsyncFn(&SchemaName, &str) -> anyhow::Result<()>,
) -> anyhow::Result<Measured> {
    let production = Target { schema: schema("prod"), production: schema("prod") };
    let branch = Target { schema: schema("feature"), production: schema("prod") };
    warehouse.prepare(&production).await?;
    let raw = format!(
        "DROP TABLE IF EXISTS raw; CREATE TABLE raw AS WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {}) \
         SELECT CAST(n AS BIGINT) AS id, CAST(n % 97 AS BIGINT) AS amount FROM s",
        args.rows
    );
    seed(&production.schema, &raw).await?;
    let started = Instant::now();
    for i in 0..args.models {
        warehouse.materialize_sql(&production, &model(i), &model_sql(i, 0)).await?;
    }
    println!("  production built: {} models in {}", args.models, ms(started.elapsed()));
    let first = args.models / 2;
    let changed: Vec<usize> = (first..first + args.changed).collect();
    let keys: Vec<AssetKey> = changed.iter().map(|i| model(*i)).collect();
    let before = checksums(warehouse, &production, &keys).await?;
    let (mut promote, mut promote_restore, mut rebuild, mut rebuild_restore) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..args.runs {
        let archive = |n: i64| ArchiveId(1_000 * (run as i64 + 1) + n);
        warehouse.prepare(&branch).await?;
        for i in &changed {
            warehouse.materialize_sql(&branch, &model(*i), &model_sql(*i, 1)).await?;
        }
        let built = checksums(warehouse, &branch, &keys).await?;

        let promotions: Vec<Promotion> = keys
            .iter()
            .map(|key| Promotion { key: key.clone(), from: branch.schema.clone() })
            .collect();
        let started = Instant::now();
        warehouse.promote(&production.schema, archive(1), &promotions, 1).await?;
        promote.push(started.elapsed());
        if checksums(warehouse, &production, &keys).await? != built {
            bail!("promoted tables differ from the branch's");
        }
        let started = Instant::now();
        warehouse.restore(&production.schema, archive(1), 2).await?;
        promote_restore.push(started.elapsed());
        if checksums(warehouse, &production, &keys).await? != before {
            bail!("the rollback of the promotion did not restore production");
        }

        // The same models rebuilt in production, as the catch-up does when it cannot promote:
        // archive (a copy: production serves them until each is rebuilt), then build.
        let started = Instant::now();
        warehouse.archive(&production.schema, archive(2), &keys, 3).await?;
        for i in &changed {
            warehouse.materialize_sql(&production, &model(*i), &model_sql(*i, 1)).await?;
        }
        rebuild.push(started.elapsed());
        if checksums(warehouse, &production, &keys).await? != built {
            bail!("rebuilt tables differ from the branch's");
        }
        let started = Instant::now();
        warehouse.restore(&production.schema, archive(2), 4).await?;
        rebuild_restore.push(started.elapsed());
        if checksums(warehouse, &production, &keys).await? != before {
            bail!("the rollback of the rebuild did not restore production");
        }
        warehouse.teardown(&branch).await?;
        warehouse.expire_archives(&production.schema, i64::MAX).await?;
    }
    Ok(Measured {
        promote: median(promote),
        promote_restore: median(promote_restore),
        rebuild: median(rebuild),
        rebuild_restore: median(rebuild_restore),
    })
}

/// Every model promoted in one catch-up (the branch rebuilt the whole project).
async fn promote_everything(
    warehouse: &dyn Warehouse,
    args: &Args,
) -> anyhow::Result<(Duration, Duration)> {
    let production = Target { schema: schema("prod"), production: schema("prod") };
    let branch = Target { schema: schema("feature"), production: schema("prod") };
    warehouse.prepare(&branch).await?;
    for i in 0..args.models {
        warehouse.materialize_sql(&branch, &model(i), &model_sql(i, 1)).await?;
    }
    let promotions: Vec<Promotion> = (0..args.models)
        .map(|i| Promotion { key: model(i), from: branch.schema.clone() })
        .collect();
    let started = Instant::now();
    warehouse.promote(&production.schema, ArchiveId(9_999), &promotions, 1).await?;
    let promoted = started.elapsed();
    let started = Instant::now();
    warehouse.restore(&production.schema, ArchiveId(9_999), 2).await?;
    let restored = started.elapsed();
    warehouse.teardown(&branch).await?;
    warehouse.expire_archives(&production.schema, i64::MAX).await?;
    Ok((promoted, restored))
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    println!(
        "merge → production up to date: {} models of {} rows, the branch changed {}; {} runs, medians",
        args.models, args.rows, args.changed, args.runs
    );
    println!("machine: {}; commit {}", machine(), workspace_commit());
    runtime.block_on(async {
        let dir = std::env::temp_dir().join(format!("offshoot-bench-promotion-{}", std::process::id()));
        let warehouse = SqliteWarehouse::new(dir.join("warehouse"))?;
        let seed = async |production: &SchemaName, sql: &str| -> anyhow::Result<()> {
            Ok(warehouse.execute_production_script(production, sql).await?)
        };
        let sqlite = measure(&warehouse, args, seed).await;
        let _ = std::fs::remove_dir_all(&dir);
        report("SQLite", &sqlite?);
        if let Some(url) = &args.postgres {
            let options = PostgresWarehouseOptions {
                branch_role: "offshoot_bench_branch".to_owned(),
                ..PostgresWarehouseOptions::default()
            };
            let warehouse = PostgresWarehouse::connect(url, options).await?;
            let production = schema("prod");
            let prepared = Target { schema: production.clone(), production: production.clone() };
            warehouse.prepare(&prepared).await?;
            warehouse.setup_roles(&production).await?;
            let seed = async |production: &SchemaName, sql: &str| -> anyhow::Result<()> {
                Ok(warehouse.execute_production_script(production, sql).await?)
            };
            let result = async {
                let postgres = measure(&warehouse, args, seed).await?;
                report("PostgreSQL", &postgres);
                let (promoted, restored) = promote_everything(&warehouse, args).await?;
                println!(
                    "PostgreSQL  all {} models promoted in one catch-up {:>9}  rolled back {:>9}",
                    args.models,
                    ms(promoted),
                    ms(restored)
                );
                anyhow::Ok(())
            }
            .await;
            let mut connection = sqlx::postgres::PgConnection::connect(url).await?;
            sqlx::raw_sql("DROP SCHEMA IF EXISTS bench__prod CASCADE; DROP SCHEMA IF EXISTS bench__feature CASCADE")
                .execute(&mut connection)
                .await?;
            result?;
        }
        anyhow::Ok(())
    })
}

fn report(backend: &str, measured: &Measured) {
    let ratio = measured.rebuild.as_secs_f64() / measured.promote.as_secs_f64().max(1e-9);
    println!(
        "{backend:<11} promote {:>9} (rollback {:>9})  rebuild {:>9} (rollback {:>9})  rebuild/promote {ratio:.1}x",
        ms(measured.promote),
        ms(measured.promote_restore),
        ms(measured.rebuild),
        ms(measured.rebuild_restore)
    );
}
