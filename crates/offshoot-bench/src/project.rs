//! The synthetic project the benchmarks load: sources, layered SQL assets and a feature branch
//! that changes about 2% of them. Deterministic: the same N always gives the same files.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use offshoot_repo::write::Tree;

/// A linear congruential generator (Knuth's MMIX constants): enough randomness for shapes.
pub struct Lcg(u64);

impl Lcg {
    pub fn new(seed: u64) -> Lcg {
        Lcg(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    fn next(&mut self) -> u64 {
        self.0 =
            self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const DOMAINS: [&str; 10] = [
    "sales",
    "billing",
    "marketing",
    "support",
    "logistics",
    "finance",
    "product",
    "growth",
    "risk",
    "hr",
];
const SOURCES_PER_DOMAIN: usize = 2;
const TIERS: [&str; 3] = ["gold", "silver", "bronze"];
const TEAMS: [&str; 4] = ["analytics", "data-platform", "finance-data", "growth-eng"];

/// Extra columns: the plain form, and the aggregated form for grouped queries.
const EXTRA_COLUMNS: [(&str, &str); 6] = [
    (
        "CASE WHEN t0.status = 'paid' THEN t0.amount ELSE 0 END AS paid_amount",
        "SUM(CASE WHEN t0.status = 'paid' THEN t0.amount ELSE 0 END) AS paid_amount",
    ),
    ("DATE(t0.created_at) AS created_date", "MAX(DATE(t0.created_at)) AS last_created_date"),
    ("t0.amount * 1.2 AS amount_gross", "AVG(t0.amount) AS avg_amount"),
    ("UPPER(t0.status) AS status_code", "COUNT(DISTINCT t0.status) AS status_count"),
    ("t0.amount > 100 AS is_large", "MIN(t0.amount) AS min_amount"),
    ("ROUND(t0.amount, 2) AS amount_rounded", "MAX(t0.amount) AS max_amount"),
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Layer {
    Staging,
    Intermediate,
    Marts,
}

impl Layer {
    fn folder(self) -> &'static str {
        match self {
            Layer::Staging => "staging",
            Layer::Intermediate => "intermediate",
            Layer::Marts => "marts",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Layer::Staging => "stg",
            Layer::Intermediate => "int",
            Layer::Marts => "mart",
        }
    }
}

/// One SQL asset, as parameters its file is rendered from.
#[derive(Clone)]
struct AssetSpec {
    key: String,
    layer: Layer,
    domain: &'static str,
    /// 1-3 tables read: sources or earlier assets, so the graph is acyclic.
    upstream: Vec<String>,
    with_cte: bool,
    grouped: bool,
    extra_columns: usize,
    threshold: u32,
    description: bool,
    tier: Option<&'static str>,
    metadata: Option<(&'static str, u32)>,
    /// An SQL comment at the end: changes the file but not the code version.
    note: Option<&'static str>,
}

impl AssetSpec {
    fn path(&self) -> String {
        format!("assets/{}/{}/{}.sql", self.layer.folder(), self.domain, self.key)
    }

    fn render(&self) -> String {
        let mut sql = String::with_capacity(1024);
        let has_header = self.description || self.tier.is_some() || self.metadata.is_some();
        if has_header {
            sql.push_str("/* offshoot\n");
            if self.description {
                let _ = writeln!(
                    sql,
                    "description = \"{} model {} of the {} domain\"",
                    self.layer.folder(),
                    self.key,
                    self.domain
                );
            }
            if let Some(tier) = self.tier {
                let _ =
                    writeln!(sql, "tags = {{ tier = \"{tier}\", domain = \"{}\" }}", self.domain);
            }
            if let Some((team, sla)) = self.metadata {
                let _ =
                    writeln!(sql, "metadata = {{ owner_team = \"{team}\", sla_hours = {sla} }}");
                let _ = writeln!(sql, "owners = [\"{team}@example.com\"]");
            }
            sql.push_str("*/\n");
        }
        let from = if self.with_cte {
            let _ = write!(
                sql,
                "WITH filtered AS (\n    SELECT id, customer_id, amount, status, created_at\n    FROM {}\n    WHERE created_at >= '2024-01-01'\n)\n",
                self.upstream[0]
            );
            "filtered"
        } else {
            self.upstream[0].as_str()
        };
        let mut columns: Vec<String> = vec!["t0.id".into(), "t0.customer_id".into()];
        if self.grouped {
            columns.extend(
                [
                    "SUM(t0.amount) AS amount",
                    "MAX(t0.status) AS status",
                    "MIN(t0.created_at) AS created_at",
                    "COUNT(*) AS row_count",
                ]
                .map(String::from),
            );
        } else {
            columns.extend(["t0.amount", "t0.status", "t0.created_at"].map(String::from));
        }
        for j in 1..self.upstream.len() {
            columns.push(if self.grouped {
                format!("SUM(t{j}.amount) AS amount_{j}")
            } else {
                format!("COALESCE(t{j}.amount, 0) AS amount_{j}")
            });
        }
        for (plain, aggregated) in EXTRA_COLUMNS.iter().take(self.extra_columns) {
            columns.push(if self.grouped { aggregated } else { plain }.to_string());
        }
        let _ = writeln!(sql, "SELECT\n    {}", columns.join(",\n    "));
        let _ = writeln!(sql, "FROM {from} AS t0");
        for (j, table) in self.upstream.iter().enumerate().skip(1) {
            if j == 1 {
                let _ = writeln!(sql, "JOIN {table} AS t1 ON t1.id = t0.id");
            } else {
                let _ =
                    writeln!(sql, "LEFT JOIN {table} AS t{j} ON t{j}.customer_id = t0.customer_id");
            }
        }
        let _ =
            writeln!(sql, "WHERE t0.amount > {}\n  AND t0.status <> 'cancelled'", self.threshold);
        if self.grouped {
            sql.push_str("GROUP BY t0.id, t0.customer_id\n");
        }
        if let Some(note) = self.note {
            let _ = writeln!(sql, "-- {note}");
        }
        sql
    }
}

/// A generated project: the `main` tree and the `feature` tree, plus what the branch changed.
pub struct Generated {
    pub main: Tree,
    pub feature: Tree,
    /// Human summary of the edits, e.g. "14 SQL edits, 5 tag changes, 1 new, 1 removed, 1 comment-only".
    pub edits: String,
}

/// The 20 source tables the manifest declares: `raw_<domain>_<i>`.
pub fn source_names() -> Vec<String> {
    DOMAINS
        .iter()
        .flat_map(|d| (0..SOURCES_PER_DOMAIN).map(move |i| format!("raw_{d}_{i}")))
        .collect()
}

fn manifest() -> String {
    let mut text = String::from("# Generated by offshoot-bench.\n[project]\nname = \"bench\"\ndialect = \"sqlite\"\nproduction_branch = \"main\"\n");
    for (i, name) in source_names().iter().enumerate() {
        let domain = DOMAINS[i / SOURCES_PER_DOMAIN];
        let _ = write!(text, "\n[sources.{name}]\ndescription = \"Raw {domain} table {i}, loaded nightly\"\ntags = {{ owner = \"{domain}-backend\" }}\n");
    }
    text
}

/// `n` distinct picks from `pools`, each pool chosen with its weight (pools may be empty).
fn pick_upstream(rng: &mut Lcg, count: usize, pools: &[(&[String], usize)]) -> Vec<String> {
    let total: usize = pools.iter().filter(|(pool, _)| !pool.is_empty()).map(|(_, w)| w).sum();
    let mut picked: Vec<String> = Vec::with_capacity(count);
    let mut attempts = 0;
    while picked.len() < count && attempts < 20 {
        attempts += 1;
        let mut roll = rng.below(total);
        for (pool, weight) in pools.iter().filter(|(pool, _)| !pool.is_empty()) {
            if roll < *weight {
                let choice = rng.pick(pool);
                if !picked.contains(choice) {
                    picked.push(choice.clone());
                }
                break;
            }
            roll -= weight;
        }
    }
    picked
}

fn generate_specs(n: usize, rng: &mut Lcg) -> Vec<AssetSpec> {
    let sources = source_names();
    let staging_count = n / 4;
    let intermediate_count = n * 2 / 5;
    let mut staging: Vec<String> = Vec::new();
    let mut intermediate: Vec<String> = Vec::new();
    let mut marts: Vec<String> = Vec::new();
    let mut specs = Vec::with_capacity(n);
    for i in 0..n {
        let layer = if i < staging_count {
            Layer::Staging
        } else if i < staging_count + intermediate_count {
            Layer::Intermediate
        } else {
            Layer::Marts
        };
        let domain = *rng.pick(&DOMAINS);
        let key = format!("{}_{domain}_{i:05}", layer.prefix());
        let refs = if layer == Layer::Staging {
            1 + usize::from(rng.chance(30))
        } else {
            1 + rng.below(3)
        };
        let upstream = match layer {
            Layer::Staging => pick_upstream(rng, refs, &[(&sources, 1)]),
            Layer::Intermediate => pick_upstream(rng, refs, &[(&staging, 6), (&intermediate, 4)]),
            Layer::Marts => {
                pick_upstream(rng, refs, &[(&intermediate, 5), (&staging, 2), (&marts, 3)])
            }
        };
        let spec = AssetSpec {
            key: key.clone(),
            layer,
            domain,
            upstream,
            with_cte: rng.chance(30),
            grouped: layer != Layer::Staging && rng.chance(60),
            extra_columns: rng.below(EXTRA_COLUMNS.len() + 1),
            threshold: rng.below(500) as u32,
            description: rng.chance(50),
            tier: rng.chance(40).then(|| *rng.pick(&TIERS)),
            metadata: rng.chance(20).then(|| (*rng.pick(&TEAMS), [6, 12, 24, 48][rng.below(4)])),
            note: None,
        };
        match layer {
            Layer::Staging => staging.push(key),
            Layer::Intermediate => intermediate.push(key),
            Layer::Marts => marts.push(key),
        }
        specs.push(spec);
    }
    specs
}

fn tree_of(specs: &[AssetSpec]) -> Tree {
    let mut tree = Tree::new();
    tree.insert("offshoot.toml".to_owned(), manifest().into_bytes());
    tree.insert("README.md".to_owned(), b"Generated by offshoot-bench.\n".to_vec());
    for spec in specs {
        tree.insert(spec.path(), spec.render().into_bytes());
    }
    tree
}

/// Generates `n` SQL assets (n >= 100) and the feature branch that edits about 2% of them.
pub fn generate(n: usize) -> Generated {
    let mut rng = Lcg::new(n as u64);
    let specs = generate_specs(n, &mut rng);
    let main = tree_of(&specs);

    // The feature branch: ~2% of assets touched. Mostly SQL edits, some tag changes, one asset
    // added, one leaf removed, one comment-only edit (a changed file that changes nothing).
    let mut readers: BTreeMap<&str, usize> = BTreeMap::new();
    for spec in &specs {
        for table in &spec.upstream {
            *readers.entry(table.as_str()).or_default() += 1;
        }
    }
    let removed = specs
        .iter()
        .rposition(|s| s.layer == Layer::Marts && !readers.contains_key(s.key.as_str()))
        .expect("the last mart is never read, so a leaf exists");
    let touched = (n / 50).max(4);
    let mut feature_specs = specs.clone();
    let (mut sql_edits, mut tag_edits) = (0, 0);
    let mut done: Vec<usize> = vec![removed];
    while sql_edits + tag_edits < touched - 2 {
        let i = rng.below(n);
        if done.contains(&i) {
            continue;
        }
        done.push(i);
        let spec = &mut feature_specs[i];
        if rng.chance(75) {
            spec.threshold += 1 + rng.below(50) as u32;
            sql_edits += 1;
        } else {
            spec.tier =
                Some(TIERS.iter().copied().find(|t| Some(*t) != spec.tier).expect("three tiers"));
            tag_edits += 1;
        }
    }
    let comment_only = (0..n).find(|i| !done.contains(i)).expect("n > touched");
    feature_specs[comment_only].note = Some("reviewed: no logic change");
    let mut added = specs[removed].clone();
    added.key = format!("mart_{}_{n:05}", added.domain);
    added.upstream = vec![specs[n / 2].key.clone(), specs[n / 3].key.clone()];
    added.tier = Some("gold");
    feature_specs[removed] = added;
    let feature = tree_of(&feature_specs);
    let edits =
        format!("{sql_edits} SQL edits, {tag_edits} tag changes, 1 new, 1 removed, 1 comment-only");
    Generated { main, feature, edits }
}
