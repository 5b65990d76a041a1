//! The repair record's format: what `serve --repair-log` writes (in `repair`) and what
//! `log verify` reads back (in `verify`), kept apart so that neither imports the other.

use serde::Serialize;

use super::DecisionRecord;

/// The `tool` of a repair record (an operator action, like the admin API's `admin:*`).
pub const REPAIR_TOOL: &str = "admin:repair_log";

/// The `reason` of a repair record.
pub const REPAIR_REASON: &str = "log_repaired";

/// Records cut by a repair, as its record declares them: `from..=to`, which the records
/// around it no longer link over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cut {
    /// First record cut.
    pub from: i64,
    /// Last record cut.
    pub to: i64,
    /// The repair record's own sequence number.
    pub at: i64,
    /// What was wrong, as the check reported it.
    pub cause: String,
}

/// The cut a record declares, if it is a repair record.
pub fn declared_cut(seq: i64, record_json: &str) -> Option<Cut> {
    let record: DecisionRecord = serde_json::from_str(record_json).ok()?;
    if record.reason != REPAIR_REASON || record.tool.as_deref() != Some(REPAIR_TOOL) {
        return None;
    }
    let arguments = record.arguments?;
    Some(Cut {
        from: arguments.get("cut_from")?.as_i64()?,
        to: arguments.get("cut_to")?.as_i64()?,
        at: seq,
        cause: arguments.get("cause")?.as_str()?.to_owned(),
    })
}
