//! REST handlers for cluster templates (upload, list, show, delete,
//! instantiate) and a cluster's export; the rules live in
//! [`crate::domain::templates`]. Documents come and go as JSON or YAML.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::{ApiError, ApiJson, ApiPath, ApiQuery, Caller, ErrorBody, Items};
use crate::AppState;
use crate::domain::commands::CommandView;
use crate::domain::templates;
pub use drover_api::templates::{
    DeleteTemplateQuery, ExportQuery, Instantiate, StoredTemplate, Template, TemplateExport, TemplateFormat,
    TemplateQuery, TemplateSummary,
};

type Shared = State<Arc<AppState>>;

/// The content type of YAML answers.
const YAML: &str = "application/yaml";

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/templates", get(list).post(upload))
        .route("/templates/{name}", get(show).delete(delete))
        .route("/templates/{name}/instantiate", post(instantiate_template))
        .route("/clusters/{cluster}/template", get(export))
}

/// Whether a body's `Content-Type` says YAML (`application/yaml`,
/// `application/x-yaml`, `text/yaml`, `text/x-yaml`): `Some(true)`; JSON:
/// `Some(false)`; anything else: `None`.
fn body_is_yaml(headers: &HeaderMap) -> Option<bool> {
    let mime = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok())?;
    let essence = mime.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    match essence.as_str() {
        "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" => Some(true),
        "application/json" => Some(false),
        e if e.starts_with("application/") && e.ends_with("+json") => Some(false),
        _ => None,
    }
}

/// Stores a template as the next version of its name, after validating it
/// against the service types: every problem is named with its path in the
/// document (400). Needs `services.write` globally.
#[utoipa::path(post, path = "/api/v1/templates", operation_id = "upload_template",
    request_body(content((Template = "application/json"), (Template = "application/yaml")),
        description = "the template document, JSON or YAML (docs/templates.md)"),
    responses((status = 201, description = "the stored version", body = StoredTemplate),
        (status = 400, description = "the document does not parse, or does not validate (every problem named with its path)", body = ErrorBody),
        (status = 413, description = "the body is larger than 1 MiB", body = ErrorBody),
        (status = 415, description = "the body is neither application/json nor application/yaml", body = ErrorBody),
        (status = 409, description = "another upload of the name took the version meanwhile", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn upload(
    State(state): Shared,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let yaml = body_is_yaml(&headers).ok_or_else(|| {
        ApiError::Unsupported(
            "a template is sent as JSON (Content-Type: application/json) or YAML (Content-Type: application/yaml)"
                .into(),
        )
    })?;
    let body = body?;
    let doc = templates::parse(&body, yaml)?;
    let stored = templates::upload(&state, &caller.actor(), doc).await?;
    Ok((StatusCode::CREATED, Json(stored)))
}

/// Every template name with its newest version and how many it has.
#[utoipa::path(get, path = "/api/v1/templates", operation_id = "list_templates",
    responses((status = 200, body = Items<TemplateSummary>)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn list(State(state): Shared, caller: Caller) -> Result<Json<Items<TemplateSummary>>, ApiError> {
    Ok(Json(Items::new(templates::list(&state, &caller.actor()).await?)))
}

/// One version of a template (the newest without `version`): as JSON with
/// its version, author and time, or with `format=yaml` the document alone.
#[utoipa::path(get, path = "/api/v1/templates/{name}", operation_id = "get_template",
    params(("name" = String, Path), TemplateQuery),
    responses((status = 200, content((StoredTemplate = "application/json"), (Template = "application/yaml"))),
        (status = 404, description = "no such template or version", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn show(
    State(state): Shared,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<TemplateQuery>,
) -> Result<Response, ApiError> {
    let t = templates::get(&state, &caller.actor(), &name, q.version).await?;
    Ok(match q.format.unwrap_or_default() {
        TemplateFormat::Json => Json(t).into_response(),
        TemplateFormat::Yaml => ([(header::CONTENT_TYPE, YAML)], templates::to_yaml(&t.document)?).into_response(),
    })
}

/// Deletes one version of a template (`version`) or all of them. Needs
/// `services.write` globally.
#[utoipa::path(delete, path = "/api/v1/templates/{name}", operation_id = "delete_template",
    params(("name" = String, Path), DeleteTemplateQuery),
    responses((status = 204, description = "deleted"),
        (status = 404, description = "no such template or version", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn delete(
    State(state): Shared,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<DeleteTemplateQuery>,
) -> Result<StatusCode, ApiError> {
    templates::delete(&state, &caller.actor(), &name, q.version).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Starts one command making the template a cluster: create the cluster if
/// missing, add the hosts, distribute and activate the parcels, create the
/// services and role groups, configure them, add the roles, start them in
/// dependency order. Everything is checked first (variables, hosts of each
/// host group, parcels in the repository, the template with its variables
/// substituted, the cluster as it is): a problem is a 400 naming it, and
/// nothing is created. Running it again converges. Needs the permissions of
/// each part (`clusters.write` and `hosts.write` globally, `services.write`,
/// `config.write`, `commands.run` and, with parcels, `parcels.write` on the
/// cluster).
#[utoipa::path(post, path = "/api/v1/templates/{name}/instantiate", operation_id = "instantiate_template",
    params(("name" = String, Path)), request_body = Instantiate,
    responses((status = 202, description = "the command with its planned steps", body = CommandView),
        (status = 400, description = "a variable is missing or unknown, a host group lacks hosts, a parcel is not in the repository, or the template does not validate with these values (every problem named)", body = ErrorBody),
        (status = 404, description = "no such template or version", body = ErrorBody),
        (status = 409, description = "an instantiation into the cluster is running", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn instantiate_template(
    State(state): Shared,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<Instantiate>,
) -> Result<impl IntoResponse, ApiError> {
    let view = templates::instantiate::instantiate(&state, &caller.actor(), &name, req).await?;
    Ok((StatusCode::ACCEPTED, Json(view)))
}

/// The cluster as a template: JSON `{template, warnings}`, or with
/// `format=yaml` the document with the warnings as leading `#` comments.
/// Sensitive values become sensitive variables; role-level values do not
/// carry over (each is a warning).
#[utoipa::path(get, path = "/api/v1/clusters/{cluster}/template", operation_id = "export_cluster_template",
    params(("cluster" = String, Path), ExportQuery),
    responses((status = 200, content((TemplateExport = "application/json"), (Template = "application/yaml"))),
        (status = 404, description = "no such cluster", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn export(
    State(state): Shared,
    caller: Caller,
    ApiPath(cluster): ApiPath<String>,
    ApiQuery(q): ApiQuery<ExportQuery>,
) -> Result<Response, ApiError> {
    let e = templates::export(&state, &caller.actor(), &cluster).await?;
    Ok(match q.format.unwrap_or_default() {
        TemplateFormat::Json => Json(e).into_response(),
        TemplateFormat::Yaml => ([(header::CONTENT_TYPE, YAML)], templates::export_yaml(&e)?).into_response(),
    })
}
