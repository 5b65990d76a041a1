//! Policy tests for security teams (`toolgate policy test`): TOML files of cases, each a
//! principal, a tool, arguments and the expected outcome, run through the broker's own
//! decision code (scope check, argument check, [`PolicyEngine::decide`]). Reports failures as
//! an expected/actual diff and the policies no case made determining. Format:
//! `docs/policy-tests.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::auth::{Claims, VerifiedToken};
use crate::policy::{CallFacts, PolicyEngine, PolicyError};
use crate::tools::Registry;

/// When a case names no time: Monday 2026-01-05 10:00:00 UTC, a business hour, so that a
/// result never depends on when CI happens to run.
pub const DEFAULT_TIME: i64 = 1_767_607_200;

/// Issuer of the synthetic tokens when neither the case nor the file names one.
pub const DEFAULT_ISSUER: &str = "https://policy-test.toolgate.local";

/// Largest test file read; a bigger one is refused.
const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// An error reading a test file.
#[derive(Debug, thiserror::Error)]
pub enum PolicyTestError {
    /// The file could not be read.
    #[error("cannot read `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is too large.
    #[error("`{path}` is larger than {MAX_FILE_BYTES} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The file is not a valid test file.
    #[error("`{path}`: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The outcome a case expects or got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The policies permit the call.
    Allow,
    /// The policies deny the call (a forbid, or no permit).
    Deny,
    /// The token lacks a scope the tool requires (decided before the policies).
    InsufficientScope,
    /// The arguments fail the tool's input schema or cannot be represented for Cedar.
    InvalidArguments,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::InsufficientScope => "insufficient_scope",
            Outcome::InvalidArguments => "invalid_arguments",
        })
    }
}

/// A time: Unix seconds or `YYYY-MM-DDTHH:MM:SSZ`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TimeSpec {
    /// Unix seconds.
    Unix(i64),
    /// An RFC 3339 UTC time, `YYYY-MM-DDTHH:MM:SSZ`.
    Text(String),
}

impl TimeSpec {
    /// Unix seconds, or why the text is not a supported time.
    pub fn unix(&self) -> Result<i64, String> {
        match self {
            TimeSpec::Unix(t) => Ok(*t),
            TimeSpec::Text(text) => {
                crate::time::parse_utc_seconds(text).map_err(|e| format!("time {e}"))
            }
        }
    }
}

/// Who makes the call in a case.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalSpec {
    /// `sub`: the agent, or the user when `actor` is given.
    pub sub: String,
    /// The groups claim.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Scopes; when absent, exactly the tool's required scopes (so the case tests the policies).
    pub scopes: Option<Vec<String>>,
    /// RFC 8693 acting agent: the principal becomes `User::"<sub>"` and this the session actor.
    pub actor: Option<String>,
    /// A longer delegation chain, current actor first (instead of `actor`).
    #[serde(default)]
    pub actors: Vec<String>,
    /// Extra claims (principal tags); strings, numbers or booleans.
    #[serde(default)]
    pub claims: Map<String, Value>,
    /// `iss` (default: the file's `issuer`, else the config's first issuer).
    pub issuer: Option<String>,
    /// `client_id`.
    pub client_id: Option<String>,
}

/// One test case.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// A name for reports.
    pub name: String,
    /// The caller.
    pub principal: PrincipalSpec,
    /// The tool id, `<server>___<tool>`.
    pub tool: String,
    /// The arguments object.
    #[serde(default = "empty_object")]
    pub arguments: Value,
    /// The expected outcome.
    pub expect: Outcome,
    /// When given, the exact set of policy `@id`s expected to determine the decision.
    pub determining: Option<Vec<String>>,
    /// When the call happens (default: the file's `time`, else [`DEFAULT_TIME`]).
    pub time: Option<TimeSpec>,
    /// Accept policy evaluation errors; by default any evaluation error fails the case,
    /// because a policy whose condition errors is silently skipped by Cedar.
    #[serde(default)]
    pub allow_errors: bool,
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

/// Defaults for every case of a file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Default time of the cases.
    pub time: Option<TimeSpec>,
    /// Default issuer of the cases.
    pub issuer: Option<String>,
}

/// A test file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suite {
    /// Where it was read from (set by [`Suite::load`]).
    #[serde(skip)]
    pub file: String,
    /// File-wide defaults.
    #[serde(default)]
    pub defaults: Defaults,
    /// The cases, `[[case]]`.
    #[serde(rename = "case", default)]
    pub cases: Vec<Case>,
}

impl Suite {
    /// Reads and parses a TOML test file.
    pub fn load(path: &Path) -> Result<Self, PolicyTestError> {
        let io = |source| PolicyTestError::Io {
            path: path.to_owned(),
            source,
        };
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > MAX_FILE_BYTES {
            return Err(PolicyTestError::TooLarge {
                path: path.to_owned(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        let mut suite = Self::parse(&text).map_err(|message| PolicyTestError::Parse {
            path: path.to_owned(),
            message,
        })?;
        suite.file = path.display().to_string();
        Ok(suite)
    }

    /// Parses TOML test-file text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let suite: Suite = toml::from_str(text).map_err(|e| e.to_string())?;
        if suite.cases.is_empty() {
            return Err("no `[[case]]` in the file".to_owned());
        }
        Ok(suite)
    }
}

/// What a case actually produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actual {
    /// The outcome.
    pub outcome: Outcome,
    /// Determining policy `@id`s, sorted.
    pub determining: Vec<String>,
    /// Cedar evaluation errors.
    pub errors: Vec<String>,
    /// Why a non-policy outcome happened (missing scope, argument problem).
    pub detail: Option<String>,
}

/// The result of one case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// The test file.
    pub file: String,
    /// 1-based position of the case in its file.
    pub index: usize,
    /// The case name.
    pub name: String,
    /// What happened, or why the case could not run (unknown tool, bad time).
    pub actual: Result<Actual, String>,
    /// Expected/actual lines that differ; empty when the case passed.
    pub diff: Vec<String>,
}

impl CaseResult {
    /// Whether the case passed.
    pub fn passed(&self) -> bool {
        self.actual.is_ok() && self.diff.is_empty()
    }
}

/// The results of a run.
#[derive(Debug, Clone)]
pub struct Report {
    /// Every case, in file order.
    pub results: Vec<CaseResult>,
    /// Every policy id of the set, sorted.
    pub policies: Vec<String>,
    /// Policy ids some case made determining.
    pub covered: BTreeSet<String>,
}

impl Report {
    /// Cases that failed.
    pub fn failures(&self) -> impl Iterator<Item = &CaseResult> {
        self.results.iter().filter(|r| !r.passed())
    }

    /// Policies no case made determining, sorted.
    pub fn uncovered(&self) -> Vec<&str> {
        self.policies
            .iter()
            .filter(|p| !self.covered.contains(*p))
            .map(String::as_str)
            .collect()
    }

    /// Whether every case passed.
    pub fn passed(&self) -> bool {
        self.failures().next().is_none()
    }

    /// The human-readable report: failures with their diff, a summary and the coverage.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for failure in self.failures() {
            let _ = writeln!(
                out,
                "FAIL {} case {} `{}`",
                failure.file, failure.index, failure.name
            );
            match &failure.actual {
                Err(why) => {
                    let _ = writeln!(out, "    cannot run: {why}");
                }
                Ok(_) => {
                    for line in &failure.diff {
                        let _ = writeln!(out, "    {line}");
                    }
                }
            }
        }
        let failed = self.failures().count();
        let _ = writeln!(
            out,
            "{} cases: {} passed, {} failed",
            self.results.len(),
            self.results.len() - failed,
            failed
        );
        let uncovered = self.uncovered();
        let _ = writeln!(
            out,
            "coverage: {} of {} policies determined at least one decision",
            self.policies.len() - uncovered.len(),
            self.policies.len()
        );
        for id in uncovered {
            let _ = writeln!(out, "    never determining: {id}");
        }
        out
    }
}

/// Runs every case of `suites` against the engine's current snapshot and the registry's tools.
/// `default_issuer` is the `iss` of cases that name none (usually the config's first issuer).
pub fn run(
    engine: &PolicyEngine,
    tools: &Registry,
    suites: &[Suite],
    default_issuer: Option<&str>,
) -> Report {
    let policies = engine.snapshot().policy_ids();
    let mut covered = BTreeSet::new();
    let mut results = Vec::new();
    for suite in suites {
        for (i, case) in suite.cases.iter().enumerate() {
            let actual = run_case(engine, tools, &suite.defaults, case, default_issuer);
            if let Ok(a) = &actual {
                covered.extend(a.determining.iter().cloned());
            }
            let diff = match &actual {
                Ok(a) => diff(case, a),
                Err(_) => Vec::new(),
            };
            results.push(CaseResult {
                file: suite.file.clone(),
                index: i + 1,
                name: case.name.clone(),
                actual,
                diff,
            });
        }
    }
    Report {
        results,
        policies,
        covered,
    }
}

fn list(items: &[String]) -> String {
    format!("[{}]", items.join(", "))
}

fn diff(case: &Case, actual: &Actual) -> Vec<String> {
    let mut lines = Vec::new();
    let detail = actual
        .detail
        .as_deref()
        .map(|d| format!(" ({d})"))
        .unwrap_or_default();
    if case.expect != actual.outcome {
        lines.push(format!("- decision:    {}", case.expect));
        lines.push(format!("+ decision:    {}{detail}", actual.outcome));
    }
    if let Some(expected) = &case.determining {
        let mut expected = expected.clone();
        expected.sort();
        expected.dedup();
        if expected != actual.determining {
            lines.push(format!("- determining: {}", list(&expected)));
            lines.push(format!("+ determining: {}", list(&actual.determining)));
        }
    } else if !lines.is_empty() {
        // Show what decided, to help read the decision diff.
        lines.push(format!("  determining: {}", list(&actual.determining)));
    }
    if !actual.errors.is_empty() && !case.allow_errors {
        lines.push("- errors:      []".to_owned());
        for error in &actual.errors {
            lines.push(format!("+ error:       {error}"));
        }
    }
    lines
}

/// Runs one case through the broker's decision stages after authentication.
pub fn run_case(
    engine: &PolicyEngine,
    tools: &Registry,
    defaults: &Defaults,
    case: &Case,
    default_issuer: Option<&str>,
) -> Result<Actual, String> {
    let tool = tools
        .get(&case.tool)
        .ok_or_else(|| format!("unknown tool `{}`", case.tool))?;
    let now = match case.time.as_ref().or(defaults.time.as_ref()) {
        Some(t) => t.unix()?,
        None => DEFAULT_TIME,
    };
    let issuer = case
        .principal
        .issuer
        .as_deref()
        .or(defaults.issuer.as_deref())
        .or(default_issuer)
        .unwrap_or(DEFAULT_ISSUER);
    let scopes: BTreeSet<String> = match &case.principal.scopes {
        Some(s) => s.iter().cloned().collect(),
        None => tool.required_scopes.iter().cloned().collect(),
    };
    let token = synthetic_token(&case.principal, issuer, scopes, now)?;

    let missing: Vec<&str> = tool.missing_scopes(&token.scopes).collect();
    if !missing.is_empty() {
        return Ok(Actual {
            outcome: Outcome::InsufficientScope,
            determining: Vec::new(),
            errors: Vec::new(),
            detail: Some(format!("missing scopes: {}", missing.join(" "))),
        });
    }
    if !case.arguments.is_object() {
        return Err("`arguments` must be a table".to_owned());
    }
    if let Err(e) = tool.check_arguments(&case.arguments) {
        return Ok(Actual {
            outcome: Outcome::InvalidArguments,
            determining: Vec::new(),
            errors: Vec::new(),
            detail: Some(e.to_string()),
        });
    }
    let facts = CallFacts {
        tool,
        arguments: &case.arguments,
        arguments_text: None,
        request_id: "policy-test",
        now,
        logged_arguments: None,
    };
    match engine.decide(&token, &facts) {
        Ok(decision) => {
            let mut determining = decision.determining_policies;
            determining.sort();
            Ok(Actual {
                outcome: if decision.allowed {
                    Outcome::Allow
                } else {
                    Outcome::Deny
                },
                determining,
                errors: decision.errors,
                detail: None,
            })
        }
        Err(PolicyError::Argument(problem)) => Ok(Actual {
            outcome: Outcome::InvalidArguments,
            determining: Vec::new(),
            errors: Vec::new(),
            detail: Some(format!(
                "argument at `{}`: {}",
                problem.path, problem.message
            )),
        }),
        Err(e @ PolicyError::Request(_)) => Err(e.to_string()),
    }
}

/// The verified token the broker would have built for this principal.
fn synthetic_token(
    principal: &PrincipalSpec,
    issuer: &str,
    scopes: BTreeSet<String>,
    now: i64,
) -> Result<VerifiedToken, String> {
    let actors: Vec<String> = match (&principal.actor, principal.actors.is_empty()) {
        (Some(_), false) => return Err("give `actor` or `actors`, not both".to_owned()),
        (Some(a), true) => vec![a.clone()],
        (None, _) => principal.actors.clone(),
    };
    if actors.len() > crate::auth::MAX_DELEGATION_DEPTH {
        return Err(format!(
            "delegation chain deeper than {}",
            crate::auth::MAX_DELEGATION_DEPTH
        ));
    }
    let mut claims: BTreeMap<String, Value> = BTreeMap::new();
    // Like the broker, every claim becomes a principal tag (structured ones as JSON text).
    for (k, v) in &principal.claims {
        claims.insert(k.clone(), v.clone());
    }
    claims.insert("iss".to_owned(), json!(issuer));
    claims.insert("sub".to_owned(), json!(principal.sub));
    claims.insert("iat".to_owned(), json!(now));
    claims.insert("exp".to_owned(), json!(now + 300));
    let scope_text = scopes.iter().cloned().collect::<Vec<_>>().join(" ");
    claims.insert("scope".to_owned(), json!(scope_text));
    if !principal.groups.is_empty() {
        claims.insert("groups".to_owned(), json!(principal.groups));
    }
    if let Some(c) = &principal.client_id {
        claims.insert("client_id".to_owned(), json!(c));
    }
    if !actors.is_empty() {
        let mut act = Value::Null;
        for actor in actors.iter().rev() {
            let mut node = json!({ "sub": actor });
            if !act.is_null() {
                node["act"] = act;
            }
            act = node;
        }
        claims.insert("act".to_owned(), act);
    }
    Ok(VerifiedToken {
        issuer: issuer.to_owned(),
        subject: principal.sub.clone(),
        audiences: vec!["toolgate".to_owned()],
        scopes,
        groups: principal.groups.clone(),
        client_id: principal.client_id.clone(),
        jti: None,
        kid: None,
        algorithm: "none".to_owned(),
        issued_at: Some(now),
        expires_at: now + 300,
        actors,
        claims: Claims::new(claims.into_iter().collect()),
        token_sha256: String::new(),
    })
}

#[cfg(test)]
mod tests;
