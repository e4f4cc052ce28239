//! The OpenAPI document, generated from the handlers' annotations.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
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
        api::me,
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
    ),
    modifiers(&Security)
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

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
