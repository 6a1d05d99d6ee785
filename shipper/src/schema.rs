//! `ja4sensor ship --init-schema`: the SQL files under `shipper/sql/` (compiled into the binary),
//! `modern/` (seed 001's DDL verbatim, ClickHouse ≥ 23) or `legacy/` (the same tables for older
//! servers), chosen from `SELECT version()`, applied in file-name order, each recorded in
//! `ship_migrations`. Running it again applies only what is not recorded; a statement whose object
//! already exists (a run interrupted between the statement and its record, or tables created by
//! hand from the seed) counts as applied.

use crate::ch::{quote, Ch, ChError, Flavor, MIGRATIONS_TABLE};

pub struct Migration {
    pub name: &'static str,
    pub sql: &'static str,
}

macro_rules! migrations {
    ($dir:literal: $($file:literal),* $(,)?) => {
        &[$(Migration {
            name: $file,
            sql: include_str!(concat!("../sql/", $dir, "/", $file)),
        }),*]
    };
}

pub const MODERN: &[Migration] = migrations!("modern":
    "001_http_logs_raw.sql",
    "002_http_logs.sql",
    "003_http_logs_mv.sql",
    "004_ship_batches.sql",
    "005_ship_inbox.sql",
    "006_ship_inbox_raw_mv.sql",
    "007_ship_inbox_batches_mv.sql",
    "009_reqin_events.sql",
    "010_ship_events_inbox.sql",
    "011_ship_events_inbox_a_mv.sql",
    "012_ship_events_inbox_z_batches_mv.sql",
    // ja4sensor query / timeline in SQL (020-029: the query tools' views).
    "020_reqin_requests.sql",
    "021_reqin_connections.sql",
    "022_reqin_event_rows.sql",
    "023_reqin_timeline.sql",
    "024_reqin_request_gaps.sql",
);

pub const LEGACY: &[Migration] = migrations!("legacy":
    "001_http_logs_raw.sql",
    "002_http_logs.sql",
    "004_ship_batches.sql",
    "005_ship_inbox.sql",
    "006_ship_inbox_raw_mv.sql",
    "007_ship_inbox_http_logs_mv.sql",
    "008_ship_inbox_batches_mv.sql",
    "009_reqin_events.sql",
    "010_ship_events_inbox.sql",
    "011_ship_events_inbox_a_mv.sql",
    "012_ship_events_inbox_z_batches_mv.sql",
    // ja4sensor query / timeline in SQL (020-029: the query tools' views).
    "020_reqin_requests.sql",
    "021_reqin_connections.sql",
    "022_reqin_event_rows.sql",
    "023_reqin_timeline.sql",
    "024_reqin_request_gaps.sql",
);

/// With `ship.clickhouse.cluster`, on every node after the local tables (both server
/// generations): the `Distributed` tables over them. `{cluster}` and `{database}` are filled in.
pub const CLUSTER: &[Migration] = migrations!("cluster":
    "013_http_logs_raw_all.sql",
    "014_http_logs_all.sql",
    "015_reqin_events_all.sql",
    "016_ship_batches_all.sql",
);

pub fn migrations(flavor: Flavor) -> &'static [Migration] {
    match flavor {
        Flavor::Modern => MODERN,
        Flavor::Legacy => LEGACY,
    }
}

/// The statements of one file: split at a `;` ending a line; comment-only pieces dropped.
pub fn statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in sql.lines() {
        let trimmed = line.trim_end();
        if let Some(body) = trimmed.strip_suffix(';') {
            current.push_str(body);
            push_statement(&mut out, &mut current);
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    push_statement(&mut out, &mut current);
    out
}

fn push_statement(out: &mut Vec<String>, current: &mut String) {
    let has_code = current
        .lines()
        .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with("--"));
    if has_code {
        out.push(current.trim().to_owned());
    }
    current.clear();
}

/// What `--init-schema` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SchemaReport {
    pub applied: Vec<&'static str>,
    pub already: Vec<&'static str>,
}

/// Applies what is missing on the server of `ch`: its generation's migrations, then, with a
/// `cluster` name, the Distributed tables over them in `database`.
pub async fn init_schema(
    ch: &Ch,
    cluster: Option<&str>,
    database: &str,
) -> Result<SchemaReport, ChError> {
    ch.execute(&format!(
        "CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} \
         (name String, variant String, applied_at DateTime) ENGINE = MergeTree ORDER BY name"
    ))
    .await?;
    let variant = ch.flavor.as_str();
    let mut report = SchemaReport::default();
    let mut all: Vec<(&'static str, String)> = migrations(ch.flavor)
        .iter()
        .map(|m| (m.name, m.sql.to_owned()))
        .collect();
    if let Some(cluster) = cluster {
        all.extend(CLUSTER.iter().map(|m| {
            (
                m.name,
                m.sql
                    .replace("{cluster}", cluster)
                    .replace("{database}", database),
            )
        }));
    }
    for (name, sql) in &all {
        let name: &'static str = name;
        let recorded = ch
            .small_query(
                &format!(
                    "SELECT count() FROM {MIGRATIONS_TABLE} WHERE name = {} AND variant = {}",
                    quote(name),
                    quote(variant)
                ),
                "the migration check",
            )
            .await?;
        if recorded != "0" {
            report.already.push(name);
            continue;
        }
        for stmt in statements(sql) {
            match ch.execute(&stmt).await {
                Ok(()) => {}
                Err(e) if e.is_already_exists() => {
                    log::info!("migration {variant}/{name}: already there ({e})");
                }
                Err(e) => return Err(e),
            }
        }
        ch.execute(&format!(
            "INSERT INTO {MIGRATIONS_TABLE} (name, variant, applied_at) VALUES ({}, {}, now())",
            quote(name),
            quote(variant)
        ))
        .await?;
        log::info!("migration {variant}/{name} applied");
        report.applied.push(name);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_ddl_is_one_statement_with_its_comments() {
        let s = statements(MODERN[1].sql);
        assert_eq!(s.len(), 1);
        assert!(s[0].contains("-- champs de base"));
        assert!(s[0].ends_with("ORDER BY (log_date, dst_ip, src_ip, time)"));
    }

    #[test]
    fn both_variants_create_the_same_objects_in_a_valid_order() {
        for set in [MODERN, LEGACY, CLUSTER] {
            let names: Vec<_> = set.iter().map(|m| m.name).collect();
            let mut sorted = names.clone();
            sorted.sort_unstable();
            assert_eq!(names, sorted);
            for m in set {
                assert_eq!(statements(m.sql).len(), 1, "{}", m.name);
            }
        }
    }
}
