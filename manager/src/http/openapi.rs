//! The OpenAPI document, generated from the handlers' annotations.
//!
//! A handler's annotation lists what the handler itself answers; the errors
//! of the shared extractors are added here to every operation that uses them,
//! so none can be forgotten: `401` and `503` (the credentials are checked
//! against the database) where the operation is authenticated, `400`, `413`,
//! `415` and `422` (a NUL in text) where it takes a JSON body, `400` and
//! `422` where it takes path or query parameters. `scripts/schemathesis.sh` checks the server against the result.

use std::collections::BTreeSet;

use drover_service_types::descriptor::Catalog;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::Schema;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr};
use utoipa::{Modify, OpenApi};

use super::api;

#[derive(OpenApi)]
#[openapi(
    info(title = "Drover REST API", description = "Manage Drover hosts, enrollment and credentials."),
    paths(
        super::healthz,
        api::create_enrollment_token,
        api::list_enrollment_tokens,
        api::revoke_enrollment_token,
        api::list_hosts,
        api::get_host,
        api::patch_host,
        api::decommission_host,
        api::host_metrics,
        api::list_events,
        api::list_audit,
        api::create_api_token,
        api::list_api_tokens,
        api::revoke_api_token,
        super::users::me,
        super::users::change_own_password,
        super::users::list,
        super::users::create,
        super::users::show,
        super::users::update,
        super::users::delete,
        super::users::reset_password,
        api::openapi,
        super::services::list_clusters,
        super::services::create_cluster,
        super::services::get_cluster,
        super::services::delete_cluster,
        super::services::list_service_types,
        super::services::get_service_type,
        super::services::list_services,
        super::services::create_service,
        super::services::get_service,
        super::services::delete_service,
        super::services::list_groups,
        super::services::create_group,
        super::services::list_roles,
        super::services::create_role,
        super::services::get_role,
        super::services::delete_role,
        super::services::get_config,
        super::services::patch_config,
        super::services::list_revisions,
        super::services::get_revision,
        super::services::diff_config,
        super::services::rollback_config,
        super::commands::create,
        super::commands::list,
        super::commands::get,
        super::commands::abort,
        super::parcels::list,
        super::parcels::upload,
        super::parcels::list_hosts,
        super::parcels::add_hosts,
        super::parcels::remove_host,
        super::parcels::cluster_parcels,
        super::parcels::create_command,
        super::providers::create,
        super::providers::list,
        super::providers::delete_all,
        super::providers::delete_one,
        super::bootstrap::create,
        super::alerts::list_rules,
        super::alerts::create_rule,
        super::alerts::export_rules,
        super::alerts::import_rules,
        super::alerts::get_rule,
        super::alerts::put_rule,
        super::alerts::delete_rule,
        super::alerts::list_silences,
        super::alerts::create_silence,
        super::alerts::get_silence,
        super::alerts::expire_silence,
        super::alerts::list_maintenance,
        super::alerts::set_maintenance,
        super::alerts::clear_maintenance,
        super::alerts::set_service_maintenance,
        super::alerts::clear_service_maintenance,
        super::alerts::history,
        super::notifications::list_receivers,
        super::notifications::get_receiver,
        super::notifications::put_receiver,
        super::notifications::delete_receiver,
        super::notifications::get_routes,
        super::notifications::put_routes,
        super::notifications::deliveries,
        super::metrics::query,
        super::metrics::series,
        super::metrics::prometheus,
        super::health::health,
        super::health::alerts,
        super::logs::role_logs,
        super::logs::download,
        super::logs::agent_log,
        super::logs::search,
        super::diagnostics::create,
        super::diagnostics::list,
        super::diagnostics::get_one,
        super::diagnostics::download,
        super::diagnostics::delete,
        super::diagnostics::get_redaction,
        super::diagnostics::put_redaction,
        super::templates::upload,
        super::templates::list,
        super::templates::show,
        super::templates::delete,
        super::templates::instantiate_template,
        super::templates::export,
        super::environments::create,
        super::environments::list,
        super::environments::show,
        super::environments::delete,
        super::environments::create_snapshot,
        super::environments::list_snapshots,
        super::environments::show_snapshot,
        super::environments::delete_snapshot,
    ),
    modifiers(&Security, &ExtractorErrors)
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("basic", SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)));
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// Documents the errors of [`super::Caller`], [`super::ApiJson`],
/// [`super::ApiQuery`] and [`super::ApiPath`] on every operation that uses
/// them (see the module comment).
struct ExtractorErrors;

fn error(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build())
        .build()
}

fn add(op: &mut Operation, status: &str, description: &str) {
    op.responses.responses.entry(status.to_owned()).or_insert_with(|| error(description).into());
}

impl Modify for ExtractorErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let ops = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ];
            for op in ops.into_iter().flatten() {
                if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
                    add(op, "401", "no credentials, or wrong ones");
                    add(op, "403", "the caller lacks the permission this needs (named in `error.permission`)");
                    add(op, "429", "too many failed sign-ins for the user name or address: wait `Retry-After` seconds");
                    add(op, "503", "the database is unavailable");
                }
                if op.request_body.as_ref().is_some_and(|b| b.content.contains_key("application/json")) {
                    add(op, "400", "the body is not JSON of the documented shape");
                    add(op, "413", "the body is larger than 1 MiB");
                    add(op, "415", "the body is not sent as application/json");
                    add(op, "422", "a text value holds the NUL character");
                }
                if op.parameters.as_ref().is_some_and(|p| !p.is_empty()) {
                    add(op, "400", "a path or query parameter is invalid");
                    add(op, "422", "a text value holds the NUL character");
                }
            }
        }
    }
}

/// The document of this manager: the names its catalog holds (service types,
/// role types, parameters) narrow the schemas `ServiceTypeName`,
/// `RoleTypeName` and `ParameterName` to enums.
pub fn document(catalog: &Catalog) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    let service_types: BTreeSet<&str> = catalog.iter().map(|t| t.name.as_str()).collect();
    let role_types: BTreeSet<&str> = catalog.iter().flat_map(|t| &t.role_types).map(|r| r.name.as_str()).collect();
    let parameters: BTreeSet<&str> = catalog.iter().flat_map(|t| &t.parameters).map(|p| p.name.as_str()).collect();
    if let Some(components) = doc.components.as_mut() {
        for (schema, names) in
            [("ServiceTypeName", service_types), ("RoleTypeName", role_types), ("ParameterName", parameters)]
        {
            // An empty enum would refuse everything; without names the
            // schema stays a plain string.
            if let Some(RefOr::T(Schema::Object(o))) = components.schemas.get_mut(schema)
                && !names.is_empty()
            {
                o.enum_values = Some(names.into_iter().map(Into::into).collect());
            }
        }
    }
    doc
}
