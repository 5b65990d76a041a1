//! Replay of recorded decisions: re-evaluates every recorded authorization (decision records
//! that carry `policy.request`) against a policy set, to check determinism against the set
//! that recorded them or to see what a candidate set would change. Reads the SQLite log and
//! JSONL exports; usable from `cargo test` in a policy repository.
//!
//! ```no_run
//! let snapshot = toolgate::replay::load_policies("toolgate.toml".as_ref(), None, None)?;
//! let records = toolgate::replay::read_log("tests/fixtures/demo-decisions.jsonl".as_ref())?;
//! let report = toolgate::replay::replay(&snapshot, &records);
//! assert!(report.is_identical(), "{}", report.summary());
//! # Ok::<(), toolgate::replay::ReplayError>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::audit::query::{self, Filter, MAX_LIMIT};
use crate::audit::verify;
use crate::audit::{DecisionRecord, RecordKind};
use crate::config::Config;
use crate::policy::{PolicyEngine, PolicySnapshot};
use crate::tools::{DemoUrls, Registry};

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The log could not be read.
    #[error("cannot read the log `{path}`: {message}")]
    Log {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The config, tools or policies could not be loaded.
    #[error("cannot load policies: {0}")]
    Policies(String),
    /// The expectations file could not be read.
    #[error("cannot read the expectations `{path}`: {message}")]
    Expect {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
}

/// How a recorded decision changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// Was allowed, would now be denied.
    AllowToDeny,
    /// Was denied, would now be allowed.
    DenyToAllow,
    /// Same decision, different determining policies.
    PoliciesChanged,
}

impl ChangeKind {
    /// `allow→deny`, `deny→allow` or `policies changed`.
    pub fn label(self) -> &'static str {
        match self {
            ChangeKind::AllowToDeny => "allow→deny",
            ChangeKind::DenyToAllow => "deny→allow",
            ChangeKind::PoliciesChanged => "policies changed",
        }
    }
}

/// A decision and the policies that determined it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// Allowed or not.
    pub allowed: bool,
    /// Determining policy ids, sorted.
    pub determining_policies: Vec<String>,
}

/// A recorded decision that comes out differently.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// The decision id.
    pub decision_id: String,
    /// The principal's subject.
    pub agent: String,
    /// The tool.
    pub tool: String,
    /// What changed.
    pub change: ChangeKind,
    /// As recorded.
    pub before: Outcome,
    /// As replayed.
    pub after: Outcome,
}

impl Change {
    /// The policies involved: determining before or after (`(default deny)` when none).
    pub fn policies(&self) -> BTreeSet<String> {
        let mut all: BTreeSet<String> = self
            .before
            .determining_policies
            .iter()
            .chain(&self.after.determining_policies)
            .cloned()
            .collect();
        if all.is_empty() {
            all.insert("(default deny)".to_owned());
        }
        all
    }
}

/// A recorded request that could not be re-evaluated.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// The decision id.
    pub decision_id: String,
    /// Why.
    pub error: String,
}

/// The result of a replay.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplayReport {
    /// Recorded authorizations re-evaluated.
    pub replayed: usize,
    /// Of those, how many came out identical.
    pub unchanged: usize,
    /// How many were recorded under exactly this policy set (same hash).
    pub same_policy_set: usize,
    /// Decisions that changed.
    pub changes: Vec<Change>,
    /// Records whose arguments were redacted: the policy saw values the log does not hold,
    /// so they are not replayed ("not replayable exactly").
    pub not_exact: Vec<String>,
    /// Records that could not be re-evaluated (e.g. the tool is no longer in the schema).
    pub failures: Vec<Failure>,
}

/// One expected change, from an `--expect` file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expected {
    /// The decision id.
    pub decision_id: String,
    /// The expected change.
    pub change: ChangeKind,
}

impl ReplayReport {
    /// No change and no failure.
    pub fn is_identical(&self) -> bool {
        self.changes.is_empty() && self.failures.is_empty()
    }

    /// Changes grouped by policy, then agent.
    pub fn by_policy_and_agent(&self) -> BTreeMap<String, BTreeMap<String, Vec<&Change>>> {
        let mut groups: BTreeMap<String, BTreeMap<String, Vec<&Change>>> = BTreeMap::new();
        for change in &self.changes {
            for policy in change.policies() {
                groups
                    .entry(policy)
                    .or_default()
                    .entry(change.agent.clone())
                    .or_default()
                    .push(change);
            }
        }
        groups
    }

    /// Changes not listed in `expected`.
    pub fn unexpected<'a>(&'a self, expected: &[Expected]) -> Vec<&'a Change> {
        self.changes
            .iter()
            .filter(|c| {
                !expected
                    .iter()
                    .any(|e| e.decision_id == c.decision_id && e.change == c.change)
            })
            .collect()
    }

    /// A human-readable report: counts, then changes grouped by policy and agent.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "replayed {} recorded authorizations: {} unchanged, {} changed, {} failed; {} not replayable exactly (redacted arguments); {} recorded under this exact policy set\n",
            self.replayed,
            self.unchanged,
            self.changes.len(),
            self.failures.len(),
            self.not_exact.len(),
            self.same_policy_set,
        );
        for (policy, agents) in self.by_policy_and_agent() {
            out.push_str(&format!("policy {policy}\n"));
            for (agent, changes) in agents {
                out.push_str(&format!("  agent {agent}\n"));
                for c in changes {
                    out.push_str(&format!(
                        "    {} {} {} (was [{}], now [{}])\n",
                        c.change.label(),
                        c.tool,
                        c.decision_id,
                        c.before.determining_policies.join(", "),
                        c.after.determining_policies.join(", "),
                    ));
                }
            }
        }
        for f in &self.failures {
            out.push_str(&format!("failed {}: {}\n", f.decision_id, f.error));
        }
        for id in &self.not_exact {
            out.push_str(&format!("not replayable exactly (redacted): {id}\n"));
        }
        out
    }
}

/// Reads every record of a log: a SQLite file, or JSONL (`.jsonl`/`.json`, as written by
/// `log export` or `log archive`).
pub fn read_log(path: &Path) -> Result<Vec<DecisionRecord>, ReplayError> {
    let fail = |message: String| ReplayError::Log {
        path: path.display().to_string(),
        message,
    };
    let jsonl = path
        .extension()
        .is_some_and(|e| e == "jsonl" || e == "json");
    let logged = if jsonl {
        verify::read_jsonl(path).map_err(|e| fail(e.to_string()))?.0
    } else {
        let conn = query::open_read_only(path).map_err(|e| fail(e.to_string()))?;
        let mut out = Vec::new();
        query::export_jsonl(
            &conn,
            &Filter {
                limit: MAX_LIMIT,
                ..Filter::default()
            },
            &mut out,
        )
        .map_err(|e| fail(e.to_string()))?;
        let text = String::from_utf8(out).map_err(|e| fail(e.to_string()))?;
        text.lines()
            .map(serde_json::from_str::<query::LoggedRecord>)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| fail(e.to_string()))?
    };
    logged
        .iter()
        .map(|r| serde_json::from_str::<DecisionRecord>(r.record.get()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(e.to_string()))
}

/// Loads the tools of `config` and the policies and schema stub (the config's, unless given).
/// Demo backends get placeholder URLs: only their schemas matter here.
pub fn load_policies(
    config: &Path,
    policies: Option<&Path>,
    schema: Option<&Path>,
) -> Result<PolicySnapshot, ReplayError> {
    let fail = |e: &dyn std::fmt::Display| ReplayError::Policies(e.to_string());
    let config = Config::load(config).map_err(|e| fail(&e))?;
    let demo = DemoUrls::placeholder().ok_or_else(|| fail(&"placeholder URLs"))?;
    let tools = Registry::from_config(&config, Some(&demo)).map_err(|e| fail(&e))?;
    let stub = schema
        .map(Path::to_owned)
        .unwrap_or_else(|| config.resolve(&config.policy.schema));
    let dir = policies
        .map(Path::to_owned)
        .unwrap_or_else(|| config.resolve(&config.policy.dir));
    PolicyEngine::load(&stub, &dir, &tools).map_err(|e| fail(&e))
}

/// Re-evaluates every recorded authorization in `records` against `snapshot`.
pub fn replay(snapshot: &PolicySnapshot, records: &[DecisionRecord]) -> ReplayReport {
    let mut report = ReplayReport::default();
    for record in records {
        if record.kind != RecordKind::Decision {
            continue;
        }
        let Some(recorded) = &record.policy else {
            continue;
        };
        if recorded.request.get() == "null" {
            continue;
        }
        if record.redacted {
            report.not_exact.push(record.decision_id.clone());
            continue;
        }
        report.replayed += 1;
        if recorded.policy_set_hash == snapshot.policy_set_hash
            && recorded.schema_hash == snapshot.schema_hash
        {
            report.same_policy_set += 1;
        }
        let now = match snapshot.decide_recorded(&recorded.request) {
            Ok(d) => d,
            Err(e) => {
                report.failures.push(Failure {
                    decision_id: record.decision_id.clone(),
                    error: e.to_string(),
                });
                continue;
            }
        };
        let sorted = |p: &[String]| {
            let mut v = p.to_vec();
            v.sort();
            v
        };
        let before = Outcome {
            allowed: recorded.allowed,
            determining_policies: sorted(&recorded.determining_policies),
        };
        let after = Outcome {
            allowed: now.allowed,
            determining_policies: sorted(&now.determining_policies),
        };
        let change = match (before.allowed, after.allowed) {
            (true, false) => Some(ChangeKind::AllowToDeny),
            (false, true) => Some(ChangeKind::DenyToAllow),
            _ if before.determining_policies != after.determining_policies => {
                Some(ChangeKind::PoliciesChanged)
            }
            _ => None,
        };
        match change {
            None => report.unchanged += 1,
            Some(change) => report.changes.push(Change {
                decision_id: record.decision_id.clone(),
                agent: record
                    .principal
                    .as_ref()
                    .map(|p| p.subject.clone())
                    .unwrap_or_default(),
                tool: record.tool.clone().unwrap_or_default(),
                change,
                before,
                after,
            }),
        }
    }
    report
}

/// Reads an `--expect` file: a JSON array of `{"decision_id": "...", "change": "allow_to_deny"}`.
pub fn read_expectations(path: &Path) -> Result<Vec<Expected>, ReplayError> {
    let fail = |message: String| ReplayError::Expect {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| fail(e.to_string()))
}
