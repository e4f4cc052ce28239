//! Hosts: the list with its filters, one host's labels, its metrics history,
//! and the label rules every request follows ([`validate_label`], stated to
//! clients by [`labels_schema`] and [`labels_patch_schema`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};
use utoipa::{IntoParams, ToSchema};

use crate::model::{Host, HostStatus, MetricPoint};

#[derive(Debug, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HostQuery {
    /// Only hosts in this state.
    #[param(value_type = Option<HostStatus>)]
    pub status: Option<String>,
    /// Label selector `key=value[,key!=value...]`; all must hold (a host
    /// without the label matches `key!=value`).
    ///
    /// Whitespace around parts, keys and values is ignored; keys and values
    /// follow the label rules.
    #[param(schema_with = crate::model::label_selector_schema)]
    pub label: Option<String>,
    /// Substring of the hostname.
    pub hostname: Option<String>,
    /// Page size, 1-1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Hosts to skip (default 0).
    #[param(minimum = 0, maximum = 2_147_483_647)]
    pub offset: Option<u32>,
}

/// A page of hosts.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HostList {
    pub items: Vec<Host>,
    /// Hosts matching the filter, across all pages.
    pub total: u64,
    pub limit: u32,
    pub offset: u32,
}

/// Parses a `key=value,key2=value2` label selector (equalities only; the
/// host list and role placement also take `key!=value`, see
/// [`drover_labels::parse_selector`]).
pub fn parse_selector(s: &str) -> Result<Vec<(String, String)>, String> {
    let sel = drover_labels::parse_selector(s).map_err(|e| e.to_string())?;
    if let Some((k, v)) = sel.inequalities().next() {
        return Err(format!("invalid label selector {k}!={v}: only key=value is accepted here"));
    }
    Ok(sel.equalities().map(|(k, v)| (k.to_owned(), v.to_owned())).collect())
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchHost {
    /// JSON merge patch of the labels: a string sets a label, null removes it.
    #[schema(schema_with = labels_patch_schema)]
    pub labels: BTreeMap<String, Option<String>>,
}

/// A metrics bucket size in seconds: 60 or 3600.
pub struct Resolution;

impl utoipa::PartialSchema for Resolution {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Integer)
            .enum_values(Some([60, 3600]))
            .into()
    }
}

impl ToSchema for Resolution {}

#[derive(Debug, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MetricsQuery {
    /// Bucket size in seconds: 60 (default) or 3600.
    #[param(inline, value_type = Option<Resolution>)]
    pub resolution: Option<u32>,
    /// Start, RFC 3339 (default: one hour ago for minutes, seven days ago for hours).
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// End, RFC 3339 (default: now).
    #[param(format = DateTime)]
    pub to: Option<String>,
}

/// A host's metrics history.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MetricSeries {
    pub host_id: String,
    pub resolution_s: u32,
    pub points: Vec<MetricPoint>,
}

/// Checks a label key and value: the rules of [`drover_labels::validate`],
/// which the agent applies to `--labels` too.
pub fn validate_label(key: &str, value: &str) -> Result<(), String> {
    drover_labels::validate(key, value).map_err(|e| e.to_string())
}

/// The label key rule of [`validate_label`] as an ECMA-262 pattern.
pub const LABEL_KEY_PATTERN: &str = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$";

/// The label value rule of [`validate_label`]: no control characters
/// (`char::is_control`), at most [`drover_labels::MAX_VALUE_LEN`].
pub const LABEL_VALUE_PATTERN: &str = r"^[^\x00-\x1f\x7f-\x9f]*$";

fn label_value_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(drover_labels::MAX_VALUE_LEN))
        .pattern(Some(LABEL_VALUE_PATTERN))
}

/// The schema of labels in a request, with the rules of [`validate_label`].
pub fn labels_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property_names(Some(ObjectBuilder::new().schema_type(Type::String).pattern(Some(LABEL_KEY_PATTERN))))
        .additional_properties(Some(label_value_schema()))
        .description(Some(
            "Labels: keys of 1-63 letters, digits, '.', '_', '-' or '/' starting with a letter or digit; \
             values of at most 253 characters without control characters.",
        ))
        .build()
}

/// The schema of a labels merge patch: a string sets a label, null removes it.
pub fn labels_patch_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property_names(Some(ObjectBuilder::new().schema_type(Type::String).pattern(Some(LABEL_KEY_PATTERN))))
        .additional_properties(Some(
            label_value_schema()
                .schema_type(utoipa::openapi::schema::SchemaType::from_iter([Type::String, Type::Null])),
        ))
        .description(Some("JSON merge patch of the labels: a string sets a label, null removes it."))
        .build()
}

#[cfg(test)]
mod tests {
    use super::{parse_selector, validate_label};

    #[test]
    fn selectors() {
        assert_eq!(parse_selector("a=1, b=2").unwrap(), vec![("a".into(), "1".into()), ("b".into(), "2".into())]);
        assert_eq!(parse_selector("").unwrap(), vec![]);
        assert!(parse_selector("novalue").is_err());
        assert!(parse_selector("bad key=1").is_err());
    }

    #[test]
    fn label_rules() {
        for ok in [("rack", "r1"), ("zone.example/tier", ""), ("a", "x y")] {
            assert!(validate_label(ok.0, ok.1).is_ok(), "{ok:?}");
        }
        for bad in [("", "v"), ("-x", "v"), ("a b", "v"), ("k", "line\nbreak")] {
            assert!(validate_label(bad.0, bad.1).is_err(), "{bad:?}");
        }
        assert!(validate_label(&"k".repeat(64), "v").is_err());
    }
}
