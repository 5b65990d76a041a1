//! `toolgate policy test`: runs policy test files against a policy directory, printing
//! failures with an expected/actual diff and the policies no case made determining.

use super::output::{out, outln};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use crate::policy::PolicyEngine;
use crate::policy::testing::{self, Suite};

/// Runs the test files; exit 0 when every case passes (and, with `require_coverage`, every
/// policy was determining at least once), 1 otherwise.
pub fn run(
    config: &Path,
    policies: Option<PathBuf>,
    require_coverage: bool,
    files: &[PathBuf],
) -> anyhow::Result<ExitCode> {
    let config = super::load_config(config)?;
    let tools = super::check_registry(&config)?;
    let stub = config.resolve(&config.policy.schema);
    let dir = policies.unwrap_or_else(|| config.resolve(&config.policy.dir));
    let snapshot = PolicyEngine::load(&stub, &dir, &tools)
        .with_context(|| format!("loading policies from `{}`", dir.display()))?;
    let engine = PolicyEngine::new(snapshot);
    let suites = files
        .iter()
        .map(|f| Suite::load(f))
        .collect::<Result<Vec<_>, _>>()?;
    let issuer = config.issuers.first().map(|i| i.issuer.as_str());
    let report = testing::run(&engine, &tools, &suites, issuer);
    out!("{}", report.render())?;
    let coverage_ok = !require_coverage || report.uncovered().is_empty();
    if report.passed() && coverage_ok {
        Ok(ExitCode::SUCCESS)
    } else {
        if !coverage_ok {
            outln!("coverage required: some policies never determined a decision")?;
        }
        Ok(ExitCode::FAILURE)
    }
}
