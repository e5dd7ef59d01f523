//! The OpenAPI 3.0 document served at `/api/v1/openapi.json`, written by hand next to the routes
//! in `api.rs`; a test checks that every route is documented.

use serde_json::{json, Value};

use crate::http::error::ERROR_CODES;

fn error_response(description: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
}

fn ok(schema: Value) -> Value {
    json!({ "description": "OK", "content": { "application/json": { "schema": schema } } })
}

fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// A nullable, described `Revision`: OpenAPI 3.0 ignores a `$ref`'s siblings, hence the `allOf`.
fn nullable_revision(description: &str) -> Value {
    json!({ "allOf": [reference("Revision")], "nullable": true, "description": description })
}

fn array_of(name: &str) -> Value {
    json!({ "type": "array", "items": reference(name) })
}

fn name_parameter() -> Value {
    json!({ "name": "name", "in": "path", "required": true, "schema": { "type": "string" }, "description": "deployment name (`prod` or a branch slug)" })
}

fn repository_parameter() -> Value {
    json!({ "name": "repository", "in": "query", "required": false, "schema": { "type": "string" }, "description": "repository name; optional when one is configured or only one has a deployment of that name" })
}

fn id_parameter() -> Value {
    json!({ "name": "id", "in": "path", "required": true, "schema": { "type": "integer" } })
}

fn variable_name_parameter() -> Value {
    json!({ "name": "name", "in": "path", "required": true, "schema": { "type": "string" }, "description": "an environment variable name (letters, digits and `_`; not OFFSHOOT_* or DAGSTER_CLOUD_*)" })
}

fn variable_schema() -> Value {
    json!({"type": "object", "properties": {
        "name": {"type": "string"}, "repository": {"type": "string", "nullable": true},
        "scope": {"type": "string", "enum": ["production", "branches", "local"]},
        "branch": {"type": "string", "nullable": true}, "secret": {"type": "boolean"},
        "source": {"type": "string", "enum": ["api", "config"]},
        "updated_at": {"type": "integer", "nullable": true} } })
}

/// `/api/v1/variables`: in a document of their own (one `json!` of every path is too deep).
fn variable_paths() -> Value {
    json!({
            "/api/v1/variables": { "get": read("variables and secrets: set through the API (`source: api`) and configured (`source: config`); names, scopes and branches, never a value", json!([repository_parameter()]), ok(json!({"type": "array", "items": variable_schema()}))) },
            "/api/v1/local-variables": { "get": write("the local-scope values set through the API, for a developer's `.env` (`offshoot env export --scope local --server`); the one answer with values: local values never reach a deployment", "`deploy`",
                json!([repository_parameter()]), None,
                ok(json!({"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}, "value": {"type": "string"}}}}))) },
            "/api/v1/variables/{name}": {
                "put": write("set a variable or secret for production, every branch deployment, one branch's, or local development; the answer never holds the value", "`admin`",
                    json!([variable_name_parameter()]),
                    Some(body(json!({"type": "object", "required": ["scope", "value"], "properties": {
                        "repository": {"type": "string", "description": "optional when one repository is configured"},
                        "scope": {"type": "string", "enum": ["production", "branches", "local"]},
                        "branch": {"type": "string", "description": "with `branches`: only this branch's deployment (it wins over the value for every branch)"},
                        "value": {"type": "string", "description": "at most 64 KiB, not blank"},
                        "secret": {"type": "boolean", "description": "redacted from step logs (default false)"} } }))),
                    ok(variable_schema())),
                "delete": write("unset a variable set through the API", "`admin`",
                    json!([variable_name_parameter(), repository_parameter(),
                        {"name": "scope", "in": "query", "required": true, "schema": {"type": "string", "enum": ["production", "branches", "local"]}},
                        {"name": "branch", "in": "query", "required": false, "schema": {"type": "string"}}]),
                    None, ok(json!({"type": "object", "properties": {"name": {"type": "string"}, "unset": {"type": "boolean"}}})))
            }
    })
}

fn body(schema: Value) -> Value {
    json!({ "required": true, "content": { "application/json": { "schema": schema } } })
}

/// A write; `role` says which token role it needs (`x-offshoot-role` and the description).
fn write(
    summary: &str,
    role: &str,
    parameters: Value,
    request: Option<Value>,
    response: Value,
) -> Value {
    let mut operation = json!({
        "summary": summary,
        "description": format!("Needs a token with the role {role}."),
        "x-offshoot-role": role,
        "security": [{ "bearer": [] }],
        "parameters": parameters,
        "responses": {
            "200": response,
            "400": error_response("invalid request"),
            "401": error_response("missing or wrong token"),
            "403": error_response("the token's role does not allow this (`forbidden`); the message names the role it needs"),
            "404": error_response("not found"),
            "409": error_response("conflict with the deployment's state")
        }
    });
    if let Some(request) = request {
        operation["requestBody"] = request;
    }
    operation
}

/// A read: open to anyone when the server's reads are public, else any token (role `read` up).
fn read(summary: &str, parameters: Value, response: Value) -> Value {
    json!({ "summary": summary, "security": [{}, { "bearer": [] }], "x-offshoot-role": "read (none when reads are public)", "parameters": parameters,
        "responses": { "200": response, "401": error_response("reads are private and the token is missing or wrong"), "404": error_response("not found") } })
}

const BRANCH_OR_PRODUCTION: &str = "`deploy` for a branch deployment, `admin` for `prod`";

/// The shape of one asset's data diff (kept apart: one `json!` for the whole document would
/// exceed the macro's recursion limit).
fn data_diff_schema() -> Value {
    json!({"type": "object", "required": ["asset", "state", "against", "cached", "computed_at", "key", "schema", "columns", "samples", "notes"], "properties": {
                    "asset": {"type": "string"}, "deployment": {"type": "string"},
                    "state": {"type": "string", "enum": ["compared", "new_in_branch", "not_built_in_branch", "not_built"]},
                    "production_rows": {"type": ["integer", "null"]}, "branch_rows": {"type": ["integer", "null"]},
                    "branch_run": {"type": ["integer", "null"]}, "production_run": {"type": ["integer", "null"]},
                    "against": {"type": "object", "description": "which production table the diff compared with", "properties": {
                        "requested": {"type": "string", "description": "`current`, `built-against` or a production run's id"},
                        "compared": {"type": "string", "description": "the request, or `current` when that table is gone"},
                        "fell_back": {"type": "boolean"}}},
                    "cached": {"type": "boolean", "description": "served from the store's cache of diffs per pair of materializations and options"},
                    "computed_at": {"type": "integer", "description": "when the diff was computed (milliseconds since the epoch)"},
                    "key": {"type": "object"}, "rows": {"type": ["object", "null"]}, "schema": {"type": "object"},
                    "columns": {"type": "array"}, "samples": {"type": "object"}, "notes": {"type": "array", "items": {"type": "string"}},
                    "sampled": {"type": ["object", "null"], "properties": {"modulus": {"type": "integer"}, "production_rows": {"type": "integer"}, "branch_rows": {"type": "integer"}}}}})
}

/// The schemas of the catalog routes (`catalog.rs`): the lineage graph, one asset, the counts.
/// Their own `json!` call: one call for the whole document exceeds the macro's recursion limit.
fn catalog_schemas() -> Value {
    json!({
                "Counts": { "type": "object", "description": "disjoint: `changed` is an asset both sides have that differs; `impacted` is unchanged and downstream of a change",
                    "properties": {"new": {"type": "integer"}, "changed": {"type": "integer"}, "removed": {"type": "integer"}, "impacted": {"type": "integer"}} },
                "GraphNode": { "type": "object", "properties": {
                    "key": {"type": "string"}, "kind": {"type": "string"}, "kinds": {"type": "array", "items": {"type": "string"}}, "group": {"type": "string"},
                    "description": {"type": "string", "nullable": true}, "deps": {"type": "array", "items": {"type": "string"}}, "tags": {"type": "object", "additionalProperties": {"type": "string"}},
                    "reasons": {"type": "array", "nullable": true, "items": {"type": "string"}}, "impacted_via": {"type": "array", "nullable": true, "items": {"type": "string"}},
                    "data": {"type": "string", "enum": ["branch", "production", "none"], "description": "where a read of it lands in this deployment"},
                    "stale": {"type": "boolean", "description": "its own table in this deployment was built from other definitions than the serving revision's (the recorded fingerprint differs)"},
                    "last_step": {"type": "object", "nullable": true, "description": "its step in the newest of the deployment's recent runs that planned it", "properties": {
                        "run_id": {"type": "integer"}, "status": {"type": "string", "enum": ["queued", "running", "succeeded", "failed", "skipped", "canceled"]},
                        "error": {"type": "string", "nullable": true}, "finished_at": {"type": "integer", "nullable": true},
                        "run_progress": {"type": "array", "nullable": true, "items": {"type": "integer"}, "description": "while the run is active: [finished steps, planned steps]"} } } } },
                "Graph": { "type": "object", "properties": {
                    "deployment": {"type": "string"}, "kind": {"type": "string"}, "revision": nullable_revision("the serving revision; null when none serves"),
                    "base_commit": {"type": "string", "nullable": true}, "assets": array_of("GraphNode"), "removed": {"type": "array", "items": {"type": "string"}} } },
                "Asset": { "type": "object", "description": "one asset of the serving revision; a removed one as the base defined it (`removed`: true)", "properties": {
                    "key": {"type": "string"}, "kind": {"type": "string"}, "kinds": {"type": "array", "items": {"type": "string"}}, "group": {"type": "string"},
                    "description": {"type": "string", "nullable": true}, "path": {"type": "string"}, "code": {"type": "string"}, "code_version": {"type": "string"},
                    "code_version_derived": {"type": "boolean"}, "fingerprint": {"type": "string", "nullable": true},
                    "upstream": {"type": "array", "items": {"type": "string"}}, "downstream": {"type": "array", "items": {"type": "string"}},
                    "tags": {"type": "object", "additionalProperties": {"type": "string"}}, "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                    "untracked_metadata": {"type": "array", "description": "metadata keys change tracking ignores (offshoot.toml: [project] untracked_metadata)", "items": {"type": "string"}},
                    "owners": {"type": "array", "items": {"type": "string"}}, "partitions": {"type": "string", "nullable": true},
                    "change": {"type": "object", "nullable": true}, "impacted_via": {"type": "array", "nullable": true, "items": {"type": "string"}},
                    "data": {"type": "string", "enum": ["branch", "production", "none"]}, "removed": {"type": "boolean"},
                    "materializations": {"type": "array", "items": {"type": "object"}}, "production_materializations": {"type": "array", "items": {"type": "object"}},
                    "provenance": {"allOf": [reference("Provenance")], "nullable": true, "description": "where the table a read of it lands on came from"} } },
                "Provenance": { "type": "object", "description": "a materialization's fingerprint, where its code ran and what it read", "properties": {
                    "materialization_id": {"type": "integer"}, "deployment": {"type": "string"}, "run_id": {"type": "integer"}, "commit": {"type": "string"}, "created_at": {"type": "integer"},
                    "fingerprint": {"type": "string"}, "code_version": {"type": "string"}, "partitions": {"type": "string"},
                    "matches_definition": {"type": "boolean", "description": "the serving revision would build exactly this (same fingerprint)"},
                    "built_in": {"type": "string", "description": "the deployment whose run ran its code (a promoted table's branch)"}, "built_commit": {"type": "string"}, "built_run_id": {"type": "integer"},
                    "promoted_from": {"type": "object", "nullable": true, "properties": {"deployment": {"type": "string"}, "run_id": {"type": "integer"}, "materialization_id": {"type": "integer"}}},
                    "reads": {"type": "array", "items": {"type": "object", "properties": {"upstream": {"type": "string"}, "fingerprint": {"type": "string"}, "source": {"type": "boolean"},
                        "read": {"type": "object", "nullable": true, "properties": {"deployment": {"type": "string"}, "run_id": {"type": "integer"}, "materialization_id": {"type": "integer"}}}}}},
                    "summary": {"type": "string", "description": "`built in feature-x from commit abc1234 (run 7), promoted into production by run 12; reading production's fct_orders of run 12`"} } }
    })
}

pub fn document() -> Value {
    let codes: Vec<Value> = ERROR_CODES.iter().map(|(code, _, _)| json!(code)).collect();
    let code_table: Vec<String> = ERROR_CODES
        .iter()
        .map(|(code, status, meaning)| format!("`{code}` ({status}): {meaning}"))
        .collect();
    let mut document = json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Offshoot API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!("Branch deployments for data pipelines. Error codes: {}", code_table.join("; "))
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer",
                "description": "An API token from the server's configuration. Each has a role, read < deploy < admin: `read` reads (needed only when reads are private); `deploy` also creates, updates, closes and reopens branch deployments and launches and cancels their runs; `admin` also acts on production (deploying its branch, its runs), deletes and pins. A role that does not suffice is a 403 `forbidden` naming the role needed." } },
            "schemas": {
                "Error": { "type": "object", "required": ["error"], "properties": { "error": { "type": "object", "required": ["code", "message"], "properties": {
                    "code": { "type": "string", "enum": codes }, "message": { "type": "string" },
                    "required_role": { "type": "string", "enum": ["read", "deploy", "admin"], "description": "401 and 403: the token role the request needs" } } } } },
                "Commit": { "type": "object", "properties": { "sha": {"type": "string"}, "message": {"type": "string"}, "author_name": {"type": "string"}, "author_email": {"type": "string"}, "time": {"type": "integer"} } },
                "Revision": { "type": "object", "properties": {
                    "id": {"type": "integer"}, "number": {"type": "integer"}, "commit": reference("Commit"),
                    "status": { "type": "string", "enum": ["queued", "deploying", "ready", "failed", "superseded"] },
                    "error": {"type": "string", "nullable": true}, "diagnostics": {"type": "array", "nullable": true, "items": {"type": "object"}},
                    "base_commit": {"type": "string", "nullable": true}, "asset_count": {"type": "integer"}, "changed_count": {"type": "integer"},
                    "impacted_count": {"type": "integer"},
                    "counts": { "allOf": [reference("Counts")], "nullable": true, "description": "the one definition of the counts (null without a base)" },
                    "changes_summary": {"type": "string", "nullable": true, "description": "the counts in words, zero counts left out: `1 new, 2 changed, 1 removed, 2 impacted downstream`, `no changes`"},
                    "queued_at": {"type": "integer"}, "started_at": {"type": "integer", "nullable": true},
                    "finished_at": {"type": "integer", "nullable": true}, "duration_ms": {"type": "integer", "nullable": true} } },
                "Deployment": { "type": "object", "properties": {
                    "name": {"type": "string"}, "repository": {"type": "string"}, "kind": {"type": "string", "enum": ["production", "branch"]},
                    "branch": {"type": "string"}, "status": {"type": "string", "enum": ["open", "closed"]},
                    "pull_request": {"type": "object", "nullable": true, "properties": {"id": {"type": "string"}, "url": {"type": "string"}, "status": {"type": "string", "enum": ["OPEN", "CLOSED", "MERGED"]}}},
                    "base_deployment": {"type": "string", "nullable": true},
                    "snapshot_base": {"type": "object", "nullable": true, "description": "What a branch deployment's change tracking compares with (null for production)", "properties": {"condition": {"type": "string", "enum": ["merge-base", "on-create", "on-update"]}, "commit": {"type": "string", "nullable": true}, "description": {"type": "string"}}},
                    "pinned": {"type": "boolean"},
                    "created_at": {"type": "integer"}, "updated_at": {"type": "integer"}, "last_push_at": {"type": "integer"},
                    "closed_at": {"type": "integer", "nullable": true}, "close_reason": {"type": "string", "nullable": true},
                    "current_revision": nullable_revision("The revision serving now; null while closed."),
                    "last_served_revision": nullable_revision("While closed: the revision that served when it closed; null while open."),
                    "latest_revision": reference("Revision") } },
                "ChangeSet": { "type": "object", "properties": {
                    "summary": reference("Counts"),
                    "assets": {"type": "array", "items": {"type": "object", "properties": {"key": {"type": "string"}, "reasons": {"type": "array", "items": {"type": "string", "enum": ["NEW", "REMOVED", "CODE_VERSION", "DEPENDENCIES", "PARTITIONS_DEFINITION", "TAGS", "METADATA"]}}, "details": {"type": "object"}}}},
                    "impacted": {"type": "array", "items": {"type": "object", "properties": {"key": {"type": "string"}, "path": {"type": "array", "items": {"type": "string"}}}}} } },
                "Changes": { "type": "object", "properties": { "deployment": {"type": "string"}, "revision": reference("Revision"), "changes": reference("ChangeSet") } },
                "Step": { "type": "object", "properties": {
                    "asset_key": {"type": "string"}, "status": {"type": "string", "enum": ["pending", "running", "succeeded", "failed", "skipped", "canceled"]},
                    "started_at": {"type": "integer", "nullable": true}, "finished_at": {"type": "integer", "nullable": true}, "duration_ms": {"type": "integer", "nullable": true},
                    "row_count": {"type": "integer", "nullable": true}, "error": {"type": "string", "nullable": true}, "log": {"type": "string"},
                    "action": {"type": "string", "nullable": true, "description": "in a catch-up run: `promoted (from feature-x, run 7)`, `built (changed; why it was not promoted)` or `up to date`"},
                    "promoted_from": {"type": "integer", "nullable": true, "description": "in a catch-up run: the branch materialization a promotion takes"} } },
                "Run": { "type": "object", "properties": {
                    "id": {"type": "integer"}, "deployment": {"type": "string"}, "repository": {"type": "string"}, "revision_id": {"type": "integer"},
                    "kind": {"type": "string", "enum": ["run", "catch-up"], "description": "`catch-up`: production's catch-up after a deploy (selection `catch-up`)"},
                    "selection": {"type": "string"}, "tags": {"type": "object", "additionalProperties": {"type": "string"}}, "status": {"type": "string", "enum": ["queued", "running", "succeeded", "failed", "canceled"]},
                    "error": {"type": "string", "nullable": true}, "created_at": {"type": "integer"}, "started_at": {"type": "integer", "nullable": true},
                    "finished_at": {"type": "integer", "nullable": true}, "cancel_requested": {"type": "boolean"}, "waiting_for": {"type": "string", "description": "a queued run: what it waits for"}, "steps": array_of("Step") } },
                "CreateOrUpdate": { "type": "object", "required": ["branch_name", "commit_hash"], "additionalProperties": false, "properties": {
                    "git_repo_name": {"type": "string"}, "branch_name": {"type": "string"}, "commit_hash": {"type": "string"}, "timestamp": {"type": "number"},
                    "pull_request_url": {"type": "string"}, "pull_request_id": {"type": "string"}, "pull_request_status": {"type": "string", "enum": ["OPEN", "CLOSED", "MERGED"]},
                    "commit_message": {"type": "string"}, "author_name": {"type": "string"}, "author_email": {"type": "string"}, "base_deployment_name": {"type": "string"}, "snapshot_base_condition": {"type": "string", "enum": ["merge-base", "on-create", "on-update"], "description": "merge-base (default): the base deployment's definitions where the branch forked; on-create: production's serving commit when the deployment is created, kept; on-update: taken again on every update"} } }
            }
        },
        "paths": {
            "/healthz": { "get": { "summary": "liveness", "responses": { "200": { "description": "ok" } } } },
            "/hooks/github": { "post": { "summary": "GitHub webhook: ping, pull_request, push; verified by X-Hub-Signature-256, deduplicated by X-GitHub-Delivery",
                "responses": { "200": { "description": "ping or duplicate delivery" }, "202": { "description": "accepted (deploys in the background) or ignored" },
                    "400": error_response("malformed body"), "401": error_response("missing or bad signature"),
                    "408": error_response("the body took longer than 30 s"), "413": error_response("the body is larger than 25 MB"),
                    "503": error_response("too many webhook requests or bodies at once; see Retry-After") } } },
            "/hooks/gitlab": { "post": { "summary": "GitLab webhook: Merge Request Hook, Push Hook; verified by X-Gitlab-Token, deduplicated by X-Gitlab-Event-UUID",
                "responses": { "200": { "description": "duplicate delivery" }, "202": { "description": "accepted (deploys in the background) or ignored" },
                    "400": error_response("malformed body"), "401": error_response("missing or bad token"),
                    "408": error_response("the body took longer than 30 s"), "413": error_response("the body is larger than 25 MB"),
                    "503": error_response("too many webhook requests or bodies at once; see Retry-After") } } },
            "/metrics": { "get": { "summary": "Prometheus metrics", "responses": { "200": { "description": "text/plain metrics" } } } },
            "/api/v1/openapi.json": { "get": { "summary": "this document", "responses": { "200": { "description": "OpenAPI 3.0" } } } },
            "/api/v1/whoami": { "get": { "summary": "the presented token's role, so a client offers only what it allows; never a 401", "security": [{}, { "bearer": [] }],
                "responses": { "200": ok(json!({ "type": "object", "properties": {
                    "token": { "type": "string", "enum": ["none", "valid", "invalid"] },
                    "role": { "type": "string", "enum": ["read", "deploy", "admin"], "nullable": true },
                    "public_reads": { "type": "boolean" } } })) } } },
            "/api/v1/deployments": { "get": read("list deployments", json!([repository_parameter(), {"name": "include_closed", "in": "query", "schema": {"type": "boolean"}}]), ok(array_of("Deployment"))) },
            "/api/v1/branch-deployments": { "post": write("create or update the branch deployment of a branch and queue a commit (dagster-cloud's create-or-update)", "`deploy`; `admin` when the branch is the production branch (it deploys `prod`)", json!([]), Some(body(reference("CreateOrUpdate"))),
                ok(json!({"type": "object", "properties": {"name": {"type": "string"}, "deployment": reference("Deployment"), "revision": reference("Revision")}}))) },
            "/api/v1/deployments/{name}": {
                "get": read("one deployment", json!([name_parameter(), repository_parameter()]), ok(reference("Deployment"))),
                "delete": write("delete a branch deployment, its warehouse objects and history (prod is refused)", "`admin`", json!([name_parameter(), repository_parameter()]), None, json!({"description": "deleted"}))
            },
            "/api/v1/deployments/{name}/close": { "post": write("close a branch deployment: drop its warehouse objects, keep its history", BRANCH_OR_PRODUCTION, json!([name_parameter(), repository_parameter()]),
                Some(json!({"required": false, "content": {"application/json": {"schema": {"type": "object", "properties": {"pull_request_status": {"type": "string", "enum": ["CLOSED", "MERGED"]}}}}}})), ok(reference("Deployment"))) },
            "/api/v1/deployments/{name}/reopen": { "post": write("reopen a closed branch deployment and redeploy its newest commit", BRANCH_OR_PRODUCTION, json!([name_parameter(), repository_parameter()]), None, ok(reference("Deployment"))) },
            "/api/v1/deployments/{name}/pin": { "post": write("pin (or unpin) so the TTL never closes it", "`admin`", json!([name_parameter(), repository_parameter()]),
                Some(body(json!({"type": "object", "required": ["pinned"], "properties": {"pinned": {"type": "boolean"}}}))), ok(reference("Deployment"))) },
            "/api/v1/deployments/{name}/revisions": { "get": read("revision history, newest first", json!([name_parameter(), repository_parameter()]), ok(array_of("Revision"))) },
            "/api/v1/deployments/{name}/changes": { "get": read("the serving revision's change set", json!([name_parameter(), repository_parameter()]), ok(reference("Changes"))) },
            "/api/v1/deployments/{name}/runs": { "post": write("materialize a selection, e.g. `changed_in_branch:ANY+`", BRANCH_OR_PRODUCTION, json!([name_parameter(), repository_parameter()]),
                Some(body(json!({"type": "object", "required": ["selection"], "properties": {"selection": {"type": "string"}, "tags": {"type": "object", "additionalProperties": {"type": "string"}, "description": "run tags, counted by tag_concurrency_limits"}}}))), ok(reference("Run"))) },
            "/api/v1/deployments/{name}/catch-up": { "post": write("catch production up with the revision it serves: promote what branches built with the identical fingerprint, rebuild the rest of what changed (201 with the run; 200 with `run` null when up to date)", "`admin`", json!([name_parameter(), repository_parameter()]), None,
                ok(json!({"type": "object", "properties": {"up_to_date": {"type": "boolean"}, "run": {"allOf": [reference("Run")], "nullable": true}}}))) },
            "/api/v1/deployments/{name}/rollback": { "post": write("undo production's last catch-up: the tables it replaced come back from the archive (for [production] retention_hours) and the previous revision serves again", "`admin`", json!([name_parameter(), repository_parameter()]), None,
                ok(json!({"type": "object", "properties": {"deployment": {"type": "string"}, "catch_up_run": {"type": "integer"}, "rolled_back_revision": {"type": "integer"},
                    "serving_revision": reference("Revision"), "restored": {"type": "array", "items": {"type": "string"}}}}))) },
            "/api/v1/deployments/{name}/assets/{key}/data-diff": { "get": read("what the branch did to one asset's data: its table against production's (schema, rows by key, per-column equality, numeric stats, a sample)",
                json!([name_parameter(), {"name": "key", "in": "path", "required": true, "schema": {"type": "string"}}, repository_parameter(),
                    {"name": "key", "in": "query", "description": "key columns, comma-separated (default: the asset's grain, else inferred)", "schema": {"type": "string"}},
                    {"name": "sample", "in": "query", "description": "rows per sample, at most 100 (default 10)", "schema": {"type": "integer"}},
                    {"name": "tolerance", "in": "query", "description": "numbers closer than this are equal (default 0)", "schema": {"type": "number"}},
                    {"name": "against", "in": "query", "description": "which production table: `current` (default: production's table now), `built-against` (the one current when the branch built its own) or a production run's id; one production has replaced since is gone, so the diff compares with the current one (`against.fell_back`, and a note says why)", "schema": {"type": "string"}}]),
                ok(data_diff_schema())) },
            "/api/v1/deployments/{name}/data-diffs": { "get": read("one line per asset the branch built: rows before and after, added, removed, changed", json!([name_parameter(), repository_parameter()]),
                ok(json!({"type": "object", "properties": {"deployment": {"type": "string"}, "diffs": {"type": "array", "items": {"type": "object"}}}}))) },
            "/api/v1/deployments/{name}/graph": { "get": read("the serving revision's assets with change badges, data locations and run states (the UI's lineage)", json!([name_parameter(), repository_parameter()]), ok(reference("Graph"))) },
            "/api/v1/deployments/{name}/select": { "get": read("evaluate a selection (`changed_in_branch:ANY+`, `key:x+`...) against the serving revision", json!([name_parameter(), repository_parameter(),
                {"name": "selection", "in": "query", "required": true, "schema": {"type": "string"}}]),
                ok(json!({"type": "object", "properties": {"selection": {"type": "string"}, "keys": {"type": "array", "items": {"type": "string"}}}}))) },
            "/api/v1/deployments/{name}/assets/{key}": { "get": read("one asset in detail: definition, change against the base, history; a removed one as the base defined it", json!([name_parameter(), repository_parameter(),
                {"name": "key", "in": "path", "required": true, "schema": {"type": "string"}}]), ok(reference("Asset"))) },
            "/api/v1/events": { "get": read("live updates as server-sent events (text/event-stream): `ready` once, then `change` whenever a deployment's lifecycle, a run or a step log moved; refetch what you show", json!([]),
                json!({"description": "an event stream", "content": {"text/event-stream": {"schema": {"type": "string"}}}})) },
            "/graphql": { "post": write("the part of Dagster+'s GraphQL API that `dagster-cloud branch-deployment create-or-update` and `delete` use (docs/dagster-plus.md); the token goes in `Dagster-Cloud-Api-Token` or `Authorization: Bearer`; other operations are a GraphQL error saying Offshoot does not implement them",
                "per operation: `deploy` to create or update a branch deployment (`admin` for the production branch), `admin` to delete, any role to read", json!([]),
                Some(body(json!({"type": "object", "required": ["query"], "properties": {"query": {"type": "string"}, "variables": {"type": "object"}, "operationName": {"type": "string"}}}))),
                ok(json!({"type": "object", "properties": {"data": {"type": "object"}, "errors": {"type": "array"}}}))) },
            "/api/v1/runs": { "get": read("runs, newest first", json!([repository_parameter(), {"name": "deployment", "in": "query", "schema": {"type": "string"}}, {"name": "limit", "in": "query", "schema": {"type": "integer"}}]), ok(array_of("Run"))) },
            "/api/v1/runs/{id}": { "get": read("one run with its steps and logs", json!([id_parameter()]), ok(reference("Run"))) },
            "/api/v1/runs/{id}/cancel": { "post": write("cancel a run", "`deploy` for a run of a branch deployment, `admin` for one of `prod`", json!([id_parameter()]), None, ok(reference("Run"))) }
        }
    });
    if let Value::Object(variables) = variable_paths() {
        document["paths"].as_object_mut().expect("the paths are an object").extend(variables);
    }
    let schemas =
        document["components"]["schemas"].as_object_mut().expect("the schemas are an object");
    if let Value::Object(catalog) = catalog_schemas() {
        schemas.extend(catalog);
    }
    let (schedule_schemas, schedule_paths) = schedules();
    if let Value::Object(more) = schedule_schemas {
        schemas.extend(more);
    }
    let paths = document["paths"].as_object_mut().expect("the paths are an object");
    if let Value::Object(more) = schedule_paths {
        paths.extend(more);
    }
    document
}

/// The schedules' schemas and routes (`schedules.rs`), in calls of their own (recursion limit).
fn schedules() -> (Value, Value) {
    let schedule_parameter = json!({ "name": "schedule", "in": "path", "required": true, "schema": { "type": "string" }, "description": "the schedule's name" });
    let parameters = json!([name_parameter(), schedule_parameter, repository_parameter()]);
    let schemas = json!({
        "Tick": { "type": "object", "properties": {
            "id": {"type": "integer"}, "schedule": {"type": "string"}, "tick_at": {"type": "integer", "description": "the tick's time, Unix ms (a manual tick: when it was asked for)"},
            "manual": {"type": "boolean", "description": "asked for with `tick`, not due by the pattern"},
            "missed": {"type": "integer", "description": "ticks before this one that passed while no server ran; caught up by this one, not run"},
            "status": {"type": "string", "enum": ["claimed", "started", "skipped", "failed"], "description": "`skipped`: the previous run of the schedule was still active (`message` names it)"},
            "message": {"type": "string", "nullable": true}, "run_id": {"type": "integer", "nullable": true},
            "run_status": {"type": "string", "nullable": true}, "server": {"type": "string", "description": "the server that claimed it"} } },
        "Schedule": { "type": "object", "properties": {
            "name": {"type": "string"}, "cron": {"type": "string"}, "timezone": {"type": "string"}, "selection": {"type": "string"},
            "defined_in": {"type": "string", "description": "`offshoot.toml:<line>`, or `dagster job <name>` for a Dagster ScheduleDefinition"},
            "problem": {"type": "string", "nullable": true, "description": "why Offshoot cannot run it (a Dagster job of ops, several cron patterns); such a schedule never ticks"},
            "enabled": {"type": "boolean", "description": "always true in production; a branch deployment's are off until switched on"},
            "next_tick_at": {"type": "integer", "nullable": true, "description": "Unix ms; null while off"},
            "owed_since": {"type": "integer", "nullable": true, "description": "ticks after this (Unix ms) are owed: when the deployment first saw the schedule or it was switched on"},
            "ticks": array_of("Tick") } }
    });
    let paths = json!({
        "/api/v1/deployments/{name}/schedules": { "get": read("the serving revision's schedules with on/off, next tick and the last ticks with their runs", json!([name_parameter(), repository_parameter()]), ok(array_of("Schedule"))) },
        "/api/v1/deployments/{name}/schedules/{schedule}/on": { "post": write("switch a branch deployment's schedule on (ticks are owed from now); production's are always on (409 `production_schedule`)", BRANCH_OR_PRODUCTION, parameters.clone(), None, ok(reference("Schedule"))) },
        "/api/v1/deployments/{name}/schedules/{schedule}/off": { "post": write("switch a branch deployment's schedule off", BRANCH_OR_PRODUCTION, parameters.clone(), None, ok(reference("Schedule"))) },
        "/api/v1/deployments/{name}/schedules/{schedule}/tick": { "post": write("run one tick of the schedule now, on or off (skipped while its previous run is active)", BRANCH_OR_PRODUCTION, parameters, None, ok(reference("Tick"))) }
    });
    (schemas, paths)
}

#[cfg(test)]
mod tests {
    //! Route completeness: every route the server's routers declare (read from their source, as
    //! `.route("path", get(..).post(..))`) is an operation of the document, and every operation
    //! is routed. Only the UI's own files (`/`, `/ui/...`) are left out.
    use std::collections::BTreeSet;
    use std::path::Path;

    const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

    fn sources(dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("src is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("a source file is readable");
                // Routers live outside test modules (this one names routes in its examples).
                out.push(text.split("#[cfg(test)]").next().unwrap_or_default().to_owned());
            }
        }
    }

    /// (method, path) of each `.route(...)` call: the string literal, then every method router
    /// named before the call's closing parenthesis.
    fn routed(source: &str) -> Vec<(String, String)> {
        let mut found = Vec::new();
        let mut rest = source;
        while let Some(start) = rest.find(".route(") {
            rest = &rest[start + ".route(".len()..];
            let Some(open) = rest.find('"') else { break };
            if !rest[..open].trim().is_empty() {
                continue;
            }
            let close = rest[open + 1..].find('"').expect("a closed string literal") + open + 1;
            let path = rest[open + 1..close].to_owned();
            let mut depth = 1;
            let mut end = close;
            for (i, c) in rest[close..].char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    end = close + i;
                    break;
                }
            }
            let call = &rest[close..end];
            for method in METHODS {
                if call.split(|c: char| !c.is_alphanumeric() && c != '_').any(|word| word == method)
                {
                    found.push((method.to_owned(), path.clone()));
                }
            }
        }
        found
    }

    #[test]
    fn every_route_is_documented_and_every_documented_operation_is_routed() {
        let mut files = Vec::new();
        sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
        let routes: BTreeSet<(String, String)> = files
            .iter()
            .flat_map(|f| routed(f))
            .filter(|(_, path)| path != "/" && !path.starts_with("/ui/"))
            .collect();
        assert!(routes.len() > 20, "the scan found the routers: {routes:?}");
        let document = super::document();
        let documented: BTreeSet<(String, String)> = document["paths"]
            .as_object()
            .expect("paths")
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .expect("a path item")
                    .keys()
                    .map(move |method| (method.clone(), path.clone()))
            })
            .collect();
        let undocumented: Vec<_> = routes.difference(&documented).collect();
        let unrouted: Vec<_> = documented.difference(&routes).collect();
        assert!(
            undocumented.is_empty(),
            "routes missing from the OpenAPI document: {undocumented:?}"
        );
        assert!(unrouted.is_empty(), "documented operations no router serves: {unrouted:?}");
    }
}
