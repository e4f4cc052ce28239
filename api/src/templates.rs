//! Cluster templates: a cluster's services, role groups, configuration,
//! parcels and placement (as host groups) in one document, written in YAML
//! or JSON, stored in versions, exported from a running cluster and
//! instantiated into a new one (`docs/templates.md`).
//!
//! A configuration value is either a value of the parameter's type or a
//! variable reference, the one-key object `{"$var": "NAME"}` (YAML:
//! `{$var: NAME}`), which stands for the whole value: no parameter takes an
//! object, so the two cannot be confused. Variables are declared in
//! `variables`; a sensitive one has no default and is given at
//! instantiation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// The key of a variable reference: `{"$var": "NAME"}`.
pub const VAR_KEY: &str = "$var";

/// The variable a configuration value refers to, if it is a reference
/// (`{"$var": "NAME"}` and nothing else).
pub fn var_ref(v: &Value) -> Option<&str> {
    match v {
        Value::Object(m) if m.len() == 1 => m.get(VAR_KEY).and_then(Value::as_str),
        _ => None,
    }
}

/// A reference to variable `name`, as a configuration value.
pub fn var_value(name: &str) -> Value {
    let mut m = serde_json::Map::new();
    m.insert(VAR_KEY.to_owned(), Value::String(name.to_owned()));
    Value::Object(m)
}

/// A cluster template document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// The template's name; a new upload of a name is its next version.
    #[schema(schema_with = crate::names::name_schema)]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Values given at instantiation, referred to as `{"$var": "NAME"}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variables: Vec<Variable>,
    /// Parcels to distribute and activate on every host of the cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parcels: Vec<TemplateParcel>,
    #[serde(default)]
    pub services: Vec<TemplateService>,
    /// Where the roles run: each group of hosts runs the same roles.
    #[serde(default)]
    pub host_groups: Vec<HostGroup>,
}

/// A variable of a template.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Variable {
    /// Lowercase letters, digits, `_` and `-`, starting with a letter.
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// A password or other secret: never stored in the template, so it has
    /// no default and must be given at instantiation.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sensitive: bool,
    /// The value when instantiation gives none (non-sensitive variables
    /// only); absent: the variable must be given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub default: Option<Value>,
}

/// A parcel version the cluster runs from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateParcel {
    pub name: String,
    pub version: String,
}

/// A service of a template.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateService {
    #[schema(schema_with = crate::names::name_schema)]
    pub name: String,
    #[serde(rename = "type")]
    #[schema(value_type = crate::services::ServiceTypeName)]
    pub service_type: String,
    /// Service-level values by parameter: a value of the parameter's type
    /// or `{"$var": "NAME"}`. A `service` parameter names another service
    /// of the template.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = Object)]
    pub config: BTreeMap<String, Value>,
    /// Role groups with their values. Each role type has its default group
    /// `<role type>-default` without being listed; list it to give it values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<TemplateGroup>,
}

/// A role group of a template's service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateGroup {
    #[schema(value_type = crate::services::RoleTypeName)]
    pub role_type: String,
    #[schema(schema_with = crate::names::name_schema)]
    pub name: String,
    /// Group-level values by parameter, as in the service's `config`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = Object)]
    pub config: BTreeMap<String, Value>,
}

/// Hosts that run the same roles.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostGroup {
    #[schema(schema_with = crate::names::name_schema)]
    pub name: String,
    /// How many hosts the group has (the default at instantiation).
    #[schema(minimum = 1, maximum = 1000)]
    pub cardinality: u32,
    /// The label selector its hosts matched (`k=v,k2=v2`), the default
    /// selector at instantiation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The roles every host of the group runs.
    #[serde(default)]
    pub roles: Vec<HostGroupRole>,
}

/// One role every host of a host group runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostGroupRole {
    /// A service of the template.
    pub service: String,
    #[schema(value_type = crate::services::RoleTypeName)]
    pub role_type: String,
    /// A role group of the service; absent: `<role type>-default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

impl HostGroupRole {
    /// The role group, with the default filled in.
    pub fn group_name(&self) -> String {
        self.group.clone().unwrap_or_else(|| format!("{}-default", self.role_type))
    }
}

/// A stored template version as listed: the latest version of each name.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TemplateSummary {
    pub name: String,
    pub description: String,
    /// The newest version.
    pub latest_version: u64,
    /// How many versions are stored.
    pub versions: u64,
    /// When the newest version was uploaded.
    pub created_at: String,
    pub created_by: String,
}

/// One stored version of a template.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StoredTemplate {
    pub name: String,
    pub version: u64,
    pub description: String,
    pub created_at: String,
    pub created_by: String,
    pub document: Template,
}

/// `GET /api/v1/clusters/{cluster}/template`: the template and what did not
/// carry over (role-level overrides on single roles).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TemplateExport {
    pub template: Template,
    pub warnings: Vec<String>,
}

/// `?format=` of the template reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TemplateFormat {
    #[default]
    Json,
    Yaml,
}

/// Query of `GET /api/v1/templates/{name}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TemplateQuery {
    /// A version; absent: the newest.
    #[param(minimum = 1)]
    pub version: Option<u64>,
    /// `json` (default: the stored version with its document) or `yaml`
    /// (the document alone).
    #[param(inline)]
    pub format: Option<TemplateFormat>,
}

/// Query of `DELETE /api/v1/templates/{name}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteTemplateQuery {
    /// The version to delete; absent: every version.
    #[param(minimum = 1)]
    pub version: Option<u64>,
}

/// Query of `GET /api/v1/clusters/{cluster}/template`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// `json` (default: `{template, warnings}`) or `yaml` (the document,
    /// warnings as leading `#` comments).
    #[param(inline)]
    pub format: Option<TemplateFormat>,
}

/// The hosts of one host group at instantiation: named hosts, new
/// containers from a provider, or `count` healthy hosts matching a label
/// selector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged, deny_unknown_fields)]
pub enum HostGroupHosts {
    /// Host ids or hostnames.
    Hosts { hosts: Vec<String> },
    /// `count` (default: the group's cardinality) containers the provider
    /// creates for this cluster and group (labelled `cluster=CLUSTER`,
    /// `host-group=GROUP` and the group's selector labels); an earlier run's
    /// containers are reused.
    Provider {
        provider: ProviderKind,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        count: Option<u32>,
        /// Agent image (default `drover/agent:latest`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        image: Option<String>,
        /// Docker network (default `bridge`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        network: Option<String>,
        /// CPU limit per container, in CPUs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cpus: Option<f64>,
        /// Memory limit per container: bytes or `256m`, `1g`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        memory: Option<crate::providers::Memory>,
    },
    /// `count` (default: the group's cardinality) healthy hosts matching
    /// `selector` (default: the group's selector).
    Selector {
        #[serde(default)]
        selector: Option<String>,
        #[serde(default)]
        count: Option<u32>,
    },
}

/// Which provider makes a host group's hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// Containers on the manager's Docker engine.
    Docker,
}

/// `POST /api/v1/templates/{name}/instantiate`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Instantiate {
    /// The cluster to create or complete.
    #[schema(schema_with = crate::names::name_schema)]
    pub cluster: String,
    /// A stored version; absent: the newest.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub version: Option<u64>,
    /// Values of the template's variables by name.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub variables: BTreeMap<String, Value>,
    /// The hosts of each host group by group name; a group left out takes
    /// its cardinality of hosts matching its selector.
    #[serde(default)]
    pub host_groups: BTreeMap<String, HostGroupHosts>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_references_are_one_key_objects() {
        assert_eq!(var_ref(&var_value("pw")), Some("pw"));
        assert_eq!(var_ref(&serde_json::json!({"$var": "pw", "x": 1})), None);
        assert_eq!(var_ref(&serde_json::json!("$var")), None);
        assert_eq!(var_ref(&serde_json::json!({"$var": 3})), None);
    }

    #[test]
    fn host_groups_take_hosts_or_a_selector() {
        let h: HostGroupHosts = serde_json::from_str(r#"{"hosts": ["a"]}"#).unwrap();
        assert_eq!(h, HostGroupHosts::Hosts { hosts: vec!["a".into()] });
        let s: HostGroupHosts = serde_json::from_str(r#"{"selector": "k=v", "count": 2}"#).unwrap();
        assert_eq!(s, HostGroupHosts::Selector { selector: Some("k=v".into()), count: Some(2) });
        assert!(serde_json::from_str::<HostGroupHosts>(r#"{"hosts": ["a"], "count": 2}"#).is_err());
        let p: HostGroupHosts =
            serde_json::from_str(r#"{"provider": "docker", "count": 3, "memory": "256m"}"#).unwrap();
        assert!(matches!(p, HostGroupHosts::Provider { count: Some(3), memory: Some(_), .. }), "{p:?}");
        assert!(serde_json::from_str::<HostGroupHosts>(r#"{"provider": "ec2", "count": 3}"#).is_err());
        assert!(serde_json::from_str::<HostGroupHosts>(r#"{"provider": "docker", "selector": "a=b"}"#).is_err());
    }
}
