//! Loading a policy snapshot: the schema stub, the `*.cedar` files (each policy keyed by its
//! `@id`, strictly validated), `entities.json`, and what every decision on a tool starts from.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cedar_policy::{
    Entities, Entity, EntityUid, Policy, PolicyId, PolicySet, Schema, SchemaFragment,
    ValidationMode, Validator,
};
use sha2::{Digest, Sha256};

use super::{
    ENTITIES_FILE, InputType, PolicyLoadError, PolicySnapshot, SNAPSHOT_GENERATION, ToolRequest,
    action_declaration, check_request_shapes, index, load_extra_entities, recorded,
    schema_text_from_parts, server_entity, tool_entity, uid,
};
use crate::tools::Registry;

/// A [`PolicyLoadError::Schema`] naming the stub file `path`.
fn schema_error(path: &Path) -> impl Fn(String) -> PolicyLoadError + '_ {
    move |message| PolicyLoadError::Schema {
        path: path.to_owned(),
        message,
    }
}

/// Reads the stub, the policies and `entities.json`, generates the schema for `tools`, and
/// validates it all; each step below is one job of the load.
pub(super) fn load_snapshot(
    schema_stub: &Path,
    policies_dir: &Path,
    tools: &Registry,
) -> Result<PolicySnapshot, PolicyLoadError> {
    let stub = std::fs::read_to_string(schema_stub).map_err(|source| PolicyLoadError::Io {
        path: schema_stub.to_owned(),
        source,
    })?;
    let schema_error = schema_error(schema_stub);
    let (input_types, generated) = tool_input_types(tools)?;
    let (schema, schema_text) = generated_schema(&stub, &generated).map_err(&schema_error)?;

    let (policies, policy_sources) = load_policies(policies_dir)?;
    validate(&schema, &policies, &policy_sources)?;

    let statics = StaticEntities::load(&schema, tools, policies_dir, &schema_error)?;
    let call_tool = uid("Action", "call_tool").map_err(|e| schema_error(e.to_string()))?;
    let tool_requests = tool_requests(tools, &statics, &call_tool, &schema_error)?;
    check_request_shapes(&schema, &input_types, &tool_requests).map_err(&schema_error)?;

    let tool_actions = tools
        .iter()
        .map(|t| uid("Action", &t.id).map(|a| (t.id.as_str(), a)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| schema_error(e.to_string()))?;
    let index =
        index::PolicyIndex::build(&policies, tool_actions, &call_tool).map_err(&schema_error)?;
    let mut policy_ids: Vec<String> = policies.policies().map(|p| p.id().to_string()).collect();
    policy_ids.sort();
    drop(policies);

    let policy_set_hash = policy_set_hash(&policy_sources, statics.extra.map(|(text, _)| text));
    let schema_hash = hex::encode(Sha256::digest(schema_text.as_bytes()));
    Ok(PolicySnapshot {
        schema,
        schema_text,
        policy_ids,
        whole: OnceLock::new(),
        policy_sources,
        input_types,
        tool_requests,
        index,
        policy_set_hash,
        schema_hash,
        generation: SNAPSHOT_GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
    })
}

/// Each tool's input schema as a Cedar type, and the action declarations generated from them.
fn tool_input_types(
    tools: &Registry,
) -> Result<(BTreeMap<String, InputType>, String), PolicyLoadError> {
    let mut input_types = BTreeMap::new();
    let mut generated = String::new();
    for tool in tools.iter() {
        let input = InputType::from_tool_schema(&tool.input_schema).map_err(|source| {
            PolicyLoadError::ToolMapping {
                tool: tool.id.clone(),
                source,
            }
        })?;
        generated.push_str(&action_declaration(&tool.id, &input));
        input_types.insert(tool.id.clone(), input);
    }
    Ok((input_types, generated))
}

/// The schema built from the stub text and the generated action declarations, with its text.
fn generated_schema(stub: &str, generated: &str) -> Result<(Schema, String), String> {
    let (stub_fragment, _) =
        SchemaFragment::from_cedarschema_str(stub).map_err(|e| format!("{e:?}"))?;
    let schema_text = schema_text_from_parts(stub, &stub_fragment, generated)?;
    let (schema, _) = Schema::from_cedarschema_str(&schema_text)
        .map_err(|e| format!("with the generated tool actions: {e}"))?;
    Ok((schema, schema_text))
}

/// The entities every decision can reach, built once per load.
struct StaticEntities {
    /// The schema's action entities.
    actions: Vec<Entity>,
    /// Per tool id, its `Tool` entity.
    tools: BTreeMap<String, Entity>,
    /// Per server name, its `McpServer` entity.
    servers: BTreeMap<String, Entity>,
    /// `entities.json`, if present: its text and its entities.
    extra: Option<(String, Vec<Entity>)>,
}

impl StaticEntities {
    /// Builds the actions, tools and servers, reads `entities.json`, and checks them all
    /// against the schema once, at load (this also refuses an `entities.json` entity that
    /// duplicates a generated one).
    fn load(
        schema: &Schema,
        tools: &Registry,
        policies_dir: &Path,
        schema_error: &impl Fn(String) -> PolicyLoadError,
    ) -> Result<Self, PolicyLoadError> {
        let actions: Vec<Entity> = schema
            .action_entities()
            .map_err(|e| schema_error(e.to_string()))?
            .into_iter()
            .collect();
        let mut tool_entities = BTreeMap::new();
        let mut servers = BTreeSet::new();
        for tool in tools.iter() {
            let entity = tool_entity(tool).map_err(|e| schema_error(e.to_string()))?;
            tool_entities.insert(tool.id.clone(), entity);
            servers.insert(tool.server.clone());
        }
        let mut server_entities = BTreeMap::new();
        for server in servers {
            let entity = server_entity(&server).map_err(|e| schema_error(e.to_string()))?;
            server_entities.insert(server, entity);
        }
        let extra = load_extra_entities(policies_dir, schema)?;
        let statics = Self {
            actions,
            tools: tool_entities,
            servers: server_entities,
            extra,
        };
        Entities::from_entities(statics.all(), Some(schema)).map_err(|e| {
            PolicyLoadError::Entities {
                message: e.to_string(),
            }
        })?;
        Ok(statics)
    }

    /// Every static entity, in the order the check at load has always seen them.
    fn all(&self) -> impl Iterator<Item = Entity> + '_ {
        let registry = self
            .tools
            .values()
            .chain(self.servers.values())
            .chain(self.extra.iter().flat_map(|(_, e)| e));
        self.actions.iter().chain(registry).cloned()
    }
}

/// Per tool, what a decision on it starts from (see [`ToolRequest`]).
fn tool_requests(
    tools: &Registry,
    statics: &StaticEntities,
    call_tool: &EntityUid,
    schema_error: &impl Fn(String) -> PolicyLoadError,
) -> Result<BTreeMap<String, ToolRequest>, PolicyLoadError> {
    let action_by_uid: BTreeMap<String, &Entity> = statics
        .actions
        .iter()
        .map(|e| (e.uid().to_string(), e))
        .collect();
    let mut tool_requests = BTreeMap::new();
    for tool in tools.iter() {
        let action = uid("Action", &tool.id).map_err(|e| schema_error(e.to_string()))?;
        let resource = uid("Tool", &tool.id).map_err(|e| schema_error(e.to_string()))?;
        let mut reachable: Vec<Entity> = [&action, call_tool]
            .iter()
            .filter_map(|u| action_by_uid.get(&u.to_string()).map(|e| (*e).clone()))
            .collect();
        let own = [
            statics.tools.get(&tool.id),
            statics.servers.get(&tool.server),
        ];
        let recorded_entities = own
            .iter()
            .flatten()
            .map(|e| recorded::entity_json(e))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| schema_error(e.to_string()))?;
        reachable.extend(own.into_iter().flatten().cloned());
        if let Some((_, entities)) = &statics.extra {
            reachable.extend(entities.iter().cloned());
        }
        let entities =
            Entities::from_entities(reachable, None).map_err(|e| PolicyLoadError::Entities {
                message: e.to_string(),
            })?;
        tool_requests.insert(
            tool.id.clone(),
            ToolRequest {
                recorded_action: recorded::uid_json(&action)
                    .map_err(|e| schema_error(e.to_string()))?,
                recorded_resource: recorded::uid_json(&resource)
                    .map_err(|e| schema_error(e.to_string()))?,
                recorded_entities,
                action,
                resource,
                entities,
            },
        );
    }
    Ok(tool_requests)
}

/// SHA-256 over the policy files and `entities.json` (names and contents): the extra
/// entities decide calls too, so they are part of the policy set's hash.
fn policy_set_hash(policy_sources: &[(String, String)], extra: Option<String>) -> String {
    let mut hasher = Sha256::new();
    let extra_source = extra.map(|text| (ENTITIES_FILE.to_owned(), text));
    for (name, text) in policy_sources.iter().chain(extra_source.iter()) {
        hasher.update((name.len() as u64).to_be_bytes());
        hasher.update(name.as_bytes());
        hasher.update((text.len() as u64).to_be_bytes());
        hasher.update(text.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// Reads every `*.cedar` file of `dir` (sorted by name) into one set keyed by `@id`.
pub(super) fn load_policies(
    dir: &Path,
) -> Result<(PolicySet, Vec<(String, String)>), PolicyLoadError> {
    let sources = read_policy_files(dir)?;
    Ok((parse_policies(&sources)?, sources))
}

/// Every `*.cedar` file of `dir`, sorted by name, as (name, text).
fn read_policy_files(dir: &Path) -> Result<Vec<(String, String)>, PolicyLoadError> {
    let io = |source| PolicyLoadError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cedar"))
        .collect();
    files.sort();
    let mut sources = Vec::with_capacity(files.len());
    for path in files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = std::fs::read_to_string(&path).map_err(|source| PolicyLoadError::Io {
            path: path.clone(),
            source,
        })?;
        sources.push((name, text));
    }
    Ok(sources)
}

/// Parses policy files, given as (name, text), into one set keyed by `@id`.
pub(super) fn parse_policies(sources: &[(String, String)]) -> Result<PolicySet, PolicyLoadError> {
    let mut set = PolicySet::new();
    // Which source each id came from; lines are found only for an error, so a large file
    // is not searched once per policy.
    let mut origin: HashMap<String, usize> = HashMap::new();
    for (file, (name, text)) in sources.iter().enumerate() {
        let parsed: PolicySet =
            text.parse()
                .map_err(|e: cedar_policy::ParseErrors| PolicyLoadError::Parse {
                    file: name.clone(),
                    line: first_label_line(&e, text),
                    message: e.to_string(),
                })?;
        if parsed.templates().next().is_some() {
            return Err(PolicyLoadError::Template { file: name.clone() });
        }
        for policy in parsed.policies() {
            let Some(id) = policy.annotation("id") else {
                return Err(PolicyLoadError::MissingId {
                    file: name.clone(),
                    line: line_of(text, &policy.to_string()),
                });
            };
            let id = id.to_owned();
            if let Some((annotation, _)) = policy
                .annotations()
                .find(|(key, _)| !KNOWN_ANNOTATIONS.contains(key))
            {
                return Err(PolicyLoadError::UnknownAnnotation {
                    file: name.clone(),
                    line: annotation_line(text, &id, annotation),
                    id,
                    annotation: annotation.to_owned(),
                });
            }
            if let Some(&first) = origin.get(&id) {
                let (first_name, first_text) = &sources[first];
                let first_lines = id_lines(first_text, &id);
                let second_line = if first == file {
                    first_lines.get(1).copied()
                } else {
                    id_lines(text, &id).first().copied()
                };
                let at = |name: &str, line: Option<usize>| format!("{name}:{}", line.unwrap_or(1));
                return Err(PolicyLoadError::DuplicateId {
                    first: at(first_name, first_lines.first().copied()),
                    second: at(name, second_line),
                    id,
                });
            }
            let renamed: Policy = policy.new_id(PolicyId::new(id.clone()));
            set.add(renamed).map_err(|e| PolicyLoadError::Parse {
                file: name.clone(),
                line: id_lines(text, &id).first().copied().unwrap_or(1),
                message: e.to_string(),
            })?;
            origin.insert(id, file);
        }
    }
    Ok(set)
}

/// The annotations toolgate gives a meaning to; any other is refused at load.
const KNOWN_ANNOTATIONS: &[&str] = &["id"];

/// [`KNOWN_ANNOTATIONS`] as `@name` list, for messages.
pub(super) fn known_annotations() -> String {
    KNOWN_ANNOTATIONS
        .iter()
        .map(|a| format!("`@{a}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The line (1-based) of annotation `@<name>` of the policy with `@id("<id>")`: the
/// occurrence nearest to that id, since annotations stand together before the policy.
fn annotation_line(text: &str, id: &str, name: &str) -> usize {
    let id_line = id_lines(text, id).first().copied().unwrap_or(1);
    let needle = format!("@{name}");
    text.match_indices(&needle)
        .filter(|(at, _)| {
            // `@shadow` must not match inside `@shadowing`.
            !text[at + needle.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
        })
        .map(|(at, _)| text[..at].matches('\n').count() + 1)
        .min_by_key(|line| line.abs_diff(id_line))
        .unwrap_or(id_line)
}

/// The lines (1-based) of every `@id("<id>")` in `text`.
fn id_lines(text: &str, id: &str) -> Vec<usize> {
    let needle = format!("@id(\"{id}\")");
    text.match_indices(&needle)
        .map(|(at, _)| text[..at].matches('\n').count() + 1)
        .collect()
}

/// Strict validation; every warning (e.g. an impossible policy) is treated as an error.
pub(super) fn validate(
    schema: &Schema,
    policies: &PolicySet,
    sources: &[(String, String)],
) -> Result<(), PolicyLoadError> {
    let validator = Validator::new(schema.clone());
    let result = validator.validate(policies, ValidationMode::Strict);
    let locate = |id: &PolicyId| -> String {
        let id = id.to_string();
        sources
            .iter()
            .find_map(|(name, text)| {
                let line = id_lines(text, &id).first().copied()?;
                Some(format!("{name}:{line}"))
            })
            .unwrap_or_else(|| "?".to_owned())
    };
    let mut problems: Vec<String> = result
        .validation_errors()
        .map(|e| {
            format!(
                "{}: policy `{}`: error: {e}",
                locate(e.policy_id()),
                e.policy_id()
            )
        })
        .collect();
    problems.extend(result.validation_warnings().map(|w| {
        format!(
            "{}: policy `{}`: warning treated as error: {w}",
            locate(w.policy_id()),
            w.policy_id()
        )
    }));
    if problems.is_empty() {
        Ok(())
    } else {
        Err(PolicyLoadError::Validation(problems))
    }
}

fn line_of(text: &str, needle: &str) -> usize {
    text.find(needle)
        .map(|at| text[..at].matches('\n').count() + 1)
        .unwrap_or(1)
}

fn first_label_line(errors: &cedar_policy::ParseErrors, text: &str) -> usize {
    use miette::Diagnostic;
    errors
        .labels()
        .and_then(|mut labels| labels.next())
        .map(|label| text[..label.offset().min(text.len())].matches('\n').count() + 1)
        .unwrap_or(1)
}
