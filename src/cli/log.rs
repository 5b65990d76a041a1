//! `toolgate log verify|archive|query|export` and `toolgate replay`: the decision log from the
//! command line.

use super::output::{out, outln};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use jsonwebtoken::jwk::JwkSet;

use crate::audit::checkpoint::{self, BROKER_KEY_FILE};
use crate::audit::query::{self, DEFAULT_LIMIT, Filter};
use crate::audit::{archive, verify};
use crate::config::Config;
use crate::signing::SigningKey;

/// Where the log is: `--db`, else the config's `audit.db` (default `<state_dir>/decisions.db`).
#[derive(Debug, Clone, Args)]
pub struct LogSource {
    /// The config file (for the default log and key locations).
    #[arg(long, default_value = "toolgate.toml")]
    pub config: PathBuf,
    /// The SQLite log (default: from the config).
    #[arg(long)]
    pub db: Option<PathBuf>,
}

/// Filters shared by `log query` and `log export`.
#[derive(Debug, Clone, Default, Args)]
pub struct FilterArgs {
    /// The principal's subject.
    #[arg(long)]
    pub agent: Option<String>,
    /// The tool id.
    #[arg(long)]
    pub tool: Option<String>,
    /// `allow` or `deny`.
    #[arg(long)]
    pub decision: Option<String>,
    /// `decision` or `dispatch`.
    #[arg(long)]
    pub kind: Option<String>,
    /// From this time (Unix ms or RFC 3339 UTC), inclusive.
    #[arg(long)]
    pub since: Option<String>,
    /// Before this time (Unix ms or RFC 3339 UTC), exclusive.
    #[arg(long)]
    pub until: Option<String>,
}

/// Output of `log query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QueryFormat {
    /// One line per record.
    Table,
    /// A JSON page, as the admin API returns it.
    Json,
}

/// Format of `log export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// One JSON object per line (see `docs/decision-log.md`).
    Jsonl,
}

/// `log` subcommands.
#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// Walk the hash chain and the signed checkpoints; exit 1 at the first problem.
    Verify {
        /// Where the log is.
        #[command(flatten)]
        source: LogSource,
        /// A JSONL export or archive to verify instead of the SQLite log.
        #[arg(long, conflicts_with = "db")]
        jsonl: Option<PathBuf>,
        /// A JWKS with the broker's public key (default: the key in the state directory).
        #[arg(long)]
        jwks: Option<PathBuf>,
    },
    /// Move records older than `--before` to a JSONL file ending in a signed checkpoint.
    Archive {
        /// Where the log is.
        #[command(flatten)]
        source: LogSource,
        /// Archive records before this time (Unix ms or RFC 3339 UTC).
        #[arg(long)]
        before: String,
        /// The archive file to create.
        #[arg(long)]
        out: PathBuf,
    },
    /// List records matching filters.
    Query {
        /// Where the log is.
        #[command(flatten)]
        source: LogSource,
        /// Filters.
        #[command(flatten)]
        filter: FilterArgs,
        /// Page size.
        #[arg(long, default_value_t = DEFAULT_LIMIT)]
        limit: usize,
        /// Continue after this cursor (from a previous page).
        #[arg(long)]
        cursor: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = QueryFormat::Table)]
        format: QueryFormat,
    },
    /// Write records as JSONL to standard output.
    Export {
        /// Where the log is.
        #[command(flatten)]
        source: LogSource,
        /// Filters.
        #[command(flatten)]
        filter: FilterArgs,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
        format: ExportFormat,
    },
}

/// `replay` arguments.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The log: a SQLite file or a JSONL export (`.jsonl`).
    #[arg(long)]
    pub log: PathBuf,
    /// The config file naming the tools (and the default policies and schema).
    #[arg(long, default_value = "toolgate.toml")]
    pub config: PathBuf,
    /// The candidate policy directory.
    #[arg(long)]
    pub policies: Option<PathBuf>,
    /// The candidate schema stub.
    #[arg(long)]
    pub schema: Option<PathBuf>,
    /// A file of expected changes: a JSON array of `{"decision_id", "change"}` objects.
    #[arg(long, value_name = "FILE")]
    pub expect: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

fn db_path(source: &LogSource) -> anyhow::Result<(PathBuf, Option<Config>)> {
    let config = if source.config.exists() {
        Some(
            Config::load(&source.config)
                .with_context(|| format!("loading config `{}`", source.config.display()))?,
        )
    } else {
        None
    };
    let db = match (&source.db, &config) {
        (Some(db), _) => db.clone(),
        (None, Some(c)) => c.audit_db(),
        (None, None) => anyhow::bail!(
            "no `--db` and no config `{}` to find the log in",
            source.config.display()
        ),
    };
    Ok((db, config))
}

fn keys(jwks: Option<&Path>, config: Option<&Config>) -> anyhow::Result<Option<JwkSet>> {
    if let Some(path) = jwks {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading `{}`", path.display()))?;
        return Ok(Some(
            serde_json::from_str(&text).with_context(|| format!("parsing `{}`", path.display()))?,
        ));
    }
    let Some(config) = config else {
        return Ok(None);
    };
    let path = config.state_dir().join(BROKER_KEY_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let key = SigningKey::load(&path)?;
    Ok(Some(
        checkpoint::jwks_of(&key).map_err(|e| anyhow::anyhow!(e))?,
    ))
}

fn filter(args: &FilterArgs, limit: usize, cursor: Option<&str>) -> anyhow::Result<Filter> {
    let time = |t: &Option<String>| -> anyhow::Result<Option<i64>> {
        t.as_deref()
            .map(query::parse_time)
            .transpose()
            .map_err(|e| anyhow::anyhow!(e))
    };
    Ok(Filter {
        agent: args.agent.clone(),
        tool: args.tool.clone(),
        decision: args.decision.clone(),
        kind: args.kind.clone(),
        since_ms: time(&args.since)?,
        until_ms: time(&args.until)?,
        after_seq: cursor
            .map(|c| c.parse::<i64>().context("`--cursor` is not a cursor"))
            .transpose()?,
        limit,
    })
}

/// Runs a `log` subcommand.
pub fn run(command: LogCommand) -> anyhow::Result<ExitCode> {
    match command {
        LogCommand::Verify {
            source,
            jsonl,
            jwks,
        } => {
            let (db, config) = match &jsonl {
                Some(_) => (PathBuf::new(), Config::load(&source.config).ok()),
                None => db_path(&source)?,
            };
            let keys = keys(jwks.as_deref(), config.as_ref())?;
            let result = match &jsonl {
                Some(file) => verify::verify_jsonl(file, keys.as_ref()),
                None => verify::verify_db(&db, keys.as_ref()),
            };
            match result {
                Ok(report) => {
                    print_verify_report(&report)?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    outln!("FAILED: {e}")?;
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        LogCommand::Archive {
            source,
            before,
            out,
        } => {
            let (db, config) = db_path(&source)?;
            let config = config.context("`log archive` needs the config for the broker key")?;
            let before = query::parse_time(&before).map_err(|e| anyhow::anyhow!(e))?;
            // The key must exist already: a fresh one could not sign for the existing log.
            let key = SigningKey::load(&config.state_dir().join(BROKER_KEY_FILE))?;
            let report = archive::archive(&db, before, &out, &key)?;
            outln!(
                "archived {} records to `{}`; the log now starts after record {} ({})",
                report.records,
                out.display(),
                report.anchor_seq,
                report.anchor_hash
            )?;
            Ok(ExitCode::SUCCESS)
        }
        LogCommand::Query {
            source,
            filter: args,
            limit,
            cursor,
            format,
        } => {
            let (db, _) = db_path(&source)?;
            let conn = query::open_read_only(&db)?;
            let page = query::query(&conn, &filter(&args, limit, cursor.as_deref())?)?;
            let mut stdout = super::output::stdout();
            match format {
                QueryFormat::Json => writeln!(stdout, "{}", serde_json::to_string_pretty(&page)?)?,
                QueryFormat::Table => {
                    writeln!(
                        stdout,
                        "{:>6}  {:<24}  {:<8}  {:<5}  {:<9}  {:<22}  {:<24}  tool",
                        "seq", "time", "kind", "dec", "stage", "reason", "agent"
                    )?;
                    for r in &page.decisions {
                        let rec: crate::audit::DecisionRecord =
                            serde_json::from_str(r.record.get())?;
                        writeln!(
                            stdout,
                            "{:>6}  {:<24}  {:<8}  {:<5}  {:<9}  {:<22}  {:<24}  {}",
                            r.seq,
                            rec.time_ms,
                            rec.kind.as_str(),
                            rec.decision.as_str(),
                            rec.stage,
                            rec.reason,
                            rec.principal.map(|p| p.subject).unwrap_or_default(),
                            rec.tool.unwrap_or_default()
                        )?;
                    }
                    if let Some(c) = &page.next_cursor {
                        writeln!(stdout, "more: --cursor {c}")?;
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        LogCommand::Export {
            source,
            filter: args,
            format: ExportFormat::Jsonl,
        } => {
            let (db, _) = db_path(&source)?;
            let conn = query::open_read_only(&db)?;
            let mut stdout = std::io::BufWriter::new(super::output::stdout());
            query::export_jsonl(&conn, &filter(&args, query::MAX_LIMIT, None)?, &mut stdout)?;
            stdout.flush()?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Prints what `log verify` found in a log that verified: counts, then notes on records
/// without an outcome, cuts and missing lookup indexes.
fn print_verify_report(report: &verify::VerifyReport) -> anyhow::Result<()> {
    outln!(
        "ok: {} records verified (records {}..={}), {} checkpoints matched{}, head {}",
        report.records,
        report.anchor_seq + 1,
        report.head_seq,
        report.checkpoints,
        if report.signatures_checked {
            " with valid signatures"
        } else {
            " (signatures NOT checked: no key)"
        },
        report.head_hash
    )?;
    if !report.without_outcome.is_empty() {
        // Bounded: the full list is in the log itself.
        let shown: Vec<String> = report
            .without_outcome
            .iter()
            .take(20)
            .map(|u| format!("record {} ({})", u.seq, u.decision_id))
            .collect();
        outln!(
            "note: {} dispatched calls have no outcome record (it could not be written, or the call was in flight): {}{}",
            report.without_outcome.len(),
            shown.join(", "),
            if report.without_outcome.len() > shown.len() {
                ", ..."
            } else {
                ""
            }
        )?;
    }
    for cut in &report.cuts {
        outln!(
            "note: records {} to {} were cut by `serve --repair-log` (record {}): {}",
            cut.from,
            cut.to,
            cut.at,
            cut.cause
        )?;
    }
    if !report.missing_lookup_indexes.is_empty() {
        outln!(
            "note: missing lookup-table indexes: {} (queries answer without them, more slowly; the broker recreates them when it next opens the log)",
            report.missing_lookup_indexes.join(", ")
        )?;
    }
    Ok(())
}

/// `serve --repair-log`: cuts a damaged end of the decision log before the broker opens it,
/// recording the cut in the log.
pub fn repair(config: &Path) -> anyhow::Result<()> {
    let config =
        Config::load(config).with_context(|| format!("loading config `{}`", config.display()))?;
    let db = config.audit_db();
    if !db.exists() {
        return Ok(());
    }
    let key =
        checkpoint::broker_key(&config.state_dir()).context("loading the broker signing key")?;
    match crate::audit::repair::repair(&db, &key)
        .with_context(|| format!("repairing the decision log `{}`", db.display()))?
    {
        Some(report) => tracing::warn!(
            path = %db.display(),
            cut_from = report.cut.from,
            cut_to = report.cut.to,
            deleted = report.deleted,
            repair_record = report.cut.at,
            saved_to = %report.saved.display(),
            cause = %report.cut.cause,
            "decision log repaired: damaged records cut, the cut recorded in the log"
        ),
        None => tracing::info!(path = %db.display(), "decision log whole: nothing to repair"),
    }
    Ok(())
}

/// Runs `replay`: exit 0 when nothing changed unexpectedly and nothing failed.
pub fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let snapshot = crate::replay::load_policies(
        &args.config,
        args.policies.as_deref(),
        args.schema.as_deref(),
    )?;
    let records = crate::replay::read_log(&args.log)?;
    let report = crate::replay::replay(&snapshot, &records);
    let expected = match &args.expect {
        Some(path) => crate::replay::read_expectations(path)?,
        None => Vec::new(),
    };
    let unexpected = report.unexpected(&expected);
    if args.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "report": report,
                "unexpected": unexpected,
            }))?
        )?;
    } else {
        out!("{}", report.summary())?;
        for c in &unexpected {
            outln!(
                "UNEXPECTED {} {} (agent {}, tool {})",
                c.change.label(),
                c.decision_id,
                c.agent,
                c.tool
            )?;
        }
    }
    if unexpected.is_empty() && report.failures.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::FAILURE)
    }
}
