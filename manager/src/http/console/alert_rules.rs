//! Alert rules in the console: every rule (built-in and custom) with its expression, timing,
//! severity, labels and summary; the form that creates a custom rule; one rule's page to edit
//! it (a built-in rule's edit is its override) and delete it (a built-in rule: reset it to its
//! default), each confirmed; the YAML export (a download) and import (all or nothing). Every
//! read and change goes through [`crate::domain::alerts`] with the session's actor; the
//! refusals it names are shown by the field they concern, the input kept.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use drover_api::alerts::{AlertRuleSpec, AlertRuleView, Severity};
use serde::Deserialize;
use serde_json::{Value, json};

use super::hosts::confirm_page;
use super::{ConfirmForm, ConsoleError, CsrfForm, PageResult, Session, domain_message, redirect_with, url_encode};
use crate::AppState;
use crate::domain::{self, DomainError};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/alerts/rules", get(list).post(create))
        .route("/alerts/rules/export", get(export))
        .route("/alerts/rules/import", post(import))
        .route("/alerts/rules/{name}", get(show).post(update))
        .route("/alerts/rules/{name}/delete", post(delete))
}

const RULES: &str = "/alerts/rules";

fn rule_href(name: &str) -> String {
    format!("{RULES}/{}", url_encode(name))
}

/// `key=value` per line, as the forms show labels and annotations.
fn pairs_text(map: &BTreeMap<String, String>) -> String {
    map.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
}

/// Lines of `key=value` (blank lines skipped; the value runs to the end of the line).
fn parse_pairs(what: &str, text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (k, v) =
            line.split_once('=').ok_or_else(|| format!("{what} line {}: {line:?} is not name=value", i + 1))?;
        let k = k.trim();
        if out.insert(k.to_owned(), v.trim().to_owned()).is_some() {
            return Err(format!("{what} line {}: {k} is given twice", i + 1));
        }
    }
    Ok(out)
}

fn row(r: &AlertRuleView) -> Value {
    let s = &r.spec;
    json!({
        "name": s.name,
        "href": rule_href(&s.name),
        "builtin": r.builtin,
        "overridden": r.builtin && r.updated_at.is_some(),
        "description": s.description,
        "expr": s.expr,
        "for": s.for_.clone().unwrap_or_else(|| "0s".into()),
        "keep_firing_for": s.keep_firing_for.clone().unwrap_or_else(|| "0s".into()),
        "severity": s.severity.as_str(),
        "enabled": s.enabled,
        "labels": s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
        "annotations": s.annotations.iter().map(|(k, v)| json!({"name": k, "text": v})).collect::<Vec<_>>(),
        "summary": s.annotations.get("summary"),
        "updated_at": r.updated_at,
        "updated_by": r.updated_by,
    })
}

/// A rule form as sent, kept when it is shown again with an error.
#[derive(Debug, Clone, Default, Deserialize)]
struct RuleForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    expr: String,
    #[serde(default, rename = "for")]
    for_: String,
    #[serde(default)]
    keep_firing_for: String,
    #[serde(default)]
    severity: String,
    /// A checkbox: present when ticked.
    #[serde(default)]
    enabled: Option<String>,
    #[serde(default)]
    labels: String,
    #[serde(default)]
    annotations: String,
}

impl RuleForm {
    fn of(spec: &AlertRuleSpec) -> RuleForm {
        RuleForm {
            name: spec.name.clone(),
            description: spec.description.clone(),
            expr: spec.expr.clone(),
            for_: spec.for_.clone().unwrap_or_default(),
            keep_firing_for: spec.keep_firing_for.clone().unwrap_or_default(),
            severity: spec.severity.as_str().to_owned(),
            enabled: spec.enabled.then(|| "on".to_owned()),
            labels: pairs_text(&spec.labels),
            annotations: pairs_text(&spec.annotations),
        }
    }

    fn blank() -> RuleForm {
        RuleForm { severity: "warning".into(), enabled: Some("on".into()), ..RuleForm::default() }
    }

    fn json(&self) -> Value {
        json!({
            "name": self.name, "description": self.description, "expr": self.expr, "for": self.for_,
            "keep_firing_for": self.keep_firing_for, "severity": self.severity, "enabled": self.enabled.is_some(),
            "labels": self.labels, "annotations": self.annotations,
        })
    }

    /// The rule the form describes; what cannot even be read is refused by its field.
    fn spec(&self, name: &str) -> Result<AlertRuleSpec, FieldErrors> {
        let severity = match self.severity.trim() {
            "info" => Severity::Info,
            "warning" => Severity::Warning,
            "critical" => Severity::Critical,
            other => return Err(FieldErrors::one("severity", format!("unknown severity {other:?}"))),
        };
        let labels = parse_pairs("labels", &self.labels).map_err(|e| FieldErrors::one("labels", e))?;
        let annotations =
            parse_pairs("annotations", &self.annotations).map_err(|e| FieldErrors::one("annotations", e))?;
        let opt = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        Ok(AlertRuleSpec {
            name: name.trim().to_owned(),
            description: self.description.trim().to_owned(),
            expr: self.expr.trim().to_owned(),
            for_: opt(&self.for_),
            keep_firing_for: opt(&self.keep_firing_for),
            severity,
            labels,
            annotations,
            enabled: self.enabled.is_some(),
        })
    }
}

/// The message of a refusal to show by a form; not found, forbidden and the database are error
/// pages instead.
fn refusal(e: DomainError) -> Result<String, ConsoleError> {
    match e {
        DomainError::NotFound(_)
        | DomainError::Forbidden { .. }
        | DomainError::Unavailable(_)
        | DomainError::Internal(_) => Err(e.into()),
        e => Ok(domain_message(&e)),
    }
}

/// Errors by the form field they concern (`general` when none fits).
#[derive(Debug, Default)]
struct FieldErrors {
    status: Option<StatusCode>,
    fields: BTreeMap<&'static str, String>,
}

/// The fields a rule refusal can name, by the prefix the domain's message starts with.
const FIELD_PREFIXES: [(&str, &str); 7] = [
    ("expr:", "expr"),
    ("for:", "for"),
    ("keep_firing_for:", "keep_firing_for"),
    ("label ", "labels"),
    ("annotation ", "annotations"),
    ("description:", "description"),
    ("severity", "severity"),
];

impl FieldErrors {
    fn one(field: &'static str, message: String) -> FieldErrors {
        FieldErrors { status: Some(StatusCode::UNPROCESSABLE_ENTITY), fields: BTreeMap::from([(field, message)]) }
    }

    /// A domain refusal by the field its message names; not found, forbidden and the
    /// database are error pages.
    fn from_domain(e: DomainError, name: &str) -> Result<FieldErrors, ConsoleError> {
        let conflict = matches!(e, DomainError::Conflict(_));
        let status = if conflict { StatusCode::CONFLICT } else { StatusCode::UNPROCESSABLE_ENTITY };
        let message = refusal(e)?;
        let rest = message.strip_prefix(&format!("rule {name}: ")).unwrap_or(&message);
        let field = if message.starts_with("invalid rule name") || conflict {
            "name"
        } else {
            FIELD_PREFIXES.iter().find(|(p, _)| rest.starts_with(p)).map_or("general", |(_, f)| f)
        };
        Ok(FieldErrors { status: Some(status), fields: BTreeMap::from([(field, message)]) })
    }

    fn json(&self) -> Value {
        json!(self.fields)
    }
}

async fn list(State(state): State<Arc<AppState>>, session: Session) -> PageResult {
    list_page(&state, &session, &RuleForm::blank(), FieldErrors::default(), "", None).await
}

async fn list_page(
    state: &AppState,
    session: &Session,
    form: &RuleForm,
    errors: FieldErrors,
    import_text: &str,
    import_error: Option<String>,
) -> PageResult {
    let rules = domain::alerts::list_rules(state, &session.actor()).await?;
    let builtin = rules.iter().filter(|r| r.builtin).count();
    let status = match (&errors.status, &import_error) {
        (Some(s), _) => Some(*s),
        (None, Some(_)) => Some(StatusCode::UNPROCESSABLE_ENTITY),
        _ => None,
    };
    let resp = session.page(
        state,
        "alert_rules",
        "Alert rules",
        "alerts",
        json!({
            "rules": rules.iter().map(row).collect::<Vec<_>>(),
            "builtin_count": builtin,
            "custom_count": rules.len() - builtin,
            "form": form.json(),
            "errors": errors.json(),
            "import_text": import_text,
            "import_error": import_error,
        }),
    );
    Ok(match status {
        Some(s) => (s, resp).into_response(),
        None => resp,
    })
}

async fn create(State(state): State<Arc<AppState>>, CsrfForm(session, form): CsrfForm<RuleForm>) -> PageResult {
    let spec = match form.spec(&form.name) {
        Ok(s) => s,
        Err(errors) => return list_page(&state, &session, &form, errors, "", None).await,
    };
    let name = spec.name.clone();
    match domain::alerts::create_rule(&state, &session.actor(), spec).await {
        Ok(r) => Ok(redirect_with(&rule_href(&r.spec.name), true, &format!("alert rule {} created", r.spec.name))),
        Err(e) => {
            let errors = FieldErrors::from_domain(e, &name)?;
            list_page(&state, &session, &form, errors, "", None).await
        }
    }
}

/// Every rule as YAML, as a file to save (`drover-alert-rules.yaml`).
async fn export(State(state): State<Arc<AppState>>, session: Session) -> PageResult {
    let text = domain::alerts::export_rules(&state, &session.actor()).await?;
    Ok((
        [
            (header::CONTENT_TYPE, crate::http::alerts::YAML),
            (header::CONTENT_DISPOSITION, "attachment; filename=\"drover-alert-rules.yaml\""),
        ],
        text,
    )
        .into_response())
}

#[derive(Debug, Default, Deserialize)]
struct ImportForm {
    #[serde(default)]
    yaml: String,
}

async fn import(State(state): State<Arc<AppState>>, CsrfForm(session, form): CsrfForm<ImportForm>) -> PageResult {
    match domain::alerts::import_rules(&state, &session.actor(), &form.yaml).await {
        Ok(rules) => {
            let names: Vec<&str> = rules.iter().map(|r| r.spec.name.as_str()).collect();
            Ok(redirect_with(RULES, true, &format!("imported {} rules: {}", names.len(), names.join(", "))))
        }
        Err(e) => {
            let message = refusal(e)?;
            list_page(&state, &session, &RuleForm::blank(), FieldErrors::default(), &form.yaml, Some(message)).await
        }
    }
}

async fn show(State(state): State<Arc<AppState>>, session: Session, Path(name): Path<String>) -> PageResult {
    rule_page(&state, &session, &name, None, FieldErrors::default()).await
}

/// One rule: what it is, the form that changes it (kept as sent after a refusal), delete.
async fn rule_page(
    state: &AppState,
    session: &Session,
    name: &str,
    form: Option<&RuleForm>,
    errors: FieldErrors,
) -> PageResult {
    let rule = domain::alerts::get_rule(state, &session.actor(), name).await?;
    let form =
        form.map_or_else(|| RuleForm::of(&rule.spec), |f| RuleForm { name: rule.spec.name.clone(), ..f.clone() });
    let title = format!("Alert rule {name}");
    let resp = session.page(
        state,
        "alert_rule",
        &title,
        "alerts",
        json!({
            "rule": row(&rule),
            "href": rule_href(name),
            "form": form.json(),
            "errors": errors.json(),
        }),
    );
    Ok(match errors.status {
        Some(s) => (s, resp).into_response(),
        None => resp,
    })
}

async fn update(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    CsrfForm(session, form): CsrfForm<RuleForm>,
) -> PageResult {
    let spec = match form.spec(&name) {
        Ok(s) => s,
        Err(errors) => return rule_page(&state, &session, &name, Some(&form), errors).await,
    };
    match domain::alerts::put_rule(&state, &session.actor(), &name, spec).await {
        Ok(r) => {
            let what = if r.builtin { "built-in alert rule overridden" } else { "alert rule saved" };
            Ok(redirect_with(&rule_href(&name), true, &format!("{what}: {name}")))
        }
        Err(e) => {
            let errors = FieldErrors::from_domain(e, &name)?;
            rule_page(&state, &session, &name, Some(&form), errors).await
        }
    }
}

async fn delete(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    CsrfForm(session, form): CsrfForm<ConfirmForm>,
) -> PageResult {
    let rule = domain::alerts::get_rule(&state, &session.actor(), &name).await?;
    let href = rule_href(&name);
    if form.confirmed != "yes" {
        let what = if rule.builtin {
            format!(
                "Reset built-in alert rule {name} to its default: your changes to it (expression, timing, severity, \
                 labels, annotations, enabled) are dropped."
            )
        } else {
            format!(
                "Delete alert rule {name} ({}): its alerts stop at the next evaluation. This cannot be undone \
                 (export the rules first to keep a copy).",
                rule.spec.expr
            )
        };
        let hidden = vec![("confirmed".to_owned(), "yes".to_owned())];
        let action = format!("{href}/delete");
        return Ok(confirm_page(&session, &state, &what, true, &action, &hidden, &href, vec![name], 1));
    }
    match domain::alerts::delete_rule(&state, &session.actor(), &name).await {
        Ok(()) if rule.builtin => Ok(redirect_with(&href, true, &format!("built-in alert rule {name} reset"))),
        Ok(()) => Ok(redirect_with(RULES, true, &format!("alert rule {name} deleted"))),
        Err(e) => Ok(redirect_with(&href, false, &refusal(e)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_lines_of_name_equals_value() {
        let got = parse_pairs("labels", "team=db\n\n  tier = gold \nsummary=a=b\n").unwrap();
        let want: BTreeMap<String, String> =
            [("team", "db"), ("tier", "gold"), ("summary", "a=b")].map(|(k, v)| (k.into(), v.into())).into();
        assert_eq!(got, want);
        assert_eq!(pairs_text(&want), "summary=a=b\nteam=db\ntier=gold\n");
        assert_eq!(parse_pairs("labels", "team"), Err("labels line 1: \"team\" is not name=value".into()));
        assert_eq!(parse_pairs("labels", "a=1\na=2"), Err("labels line 2: a is given twice".into()));
    }

    #[test]
    fn refusals_land_by_their_field() {
        let field = |msg: &str| {
            let e = FieldErrors::from_domain(DomainError::Invalid(msg.into()), "r1").unwrap();
            *e.fields.keys().next().unwrap()
        };
        assert_eq!(field("rule r1: expr: unknown metric \"nope\""), "expr");
        assert_eq!(field("rule r1: for: invalid duration \"soon\": x"), "for");
        assert_eq!(field("rule r1: keep_firing_for: invalid duration \"x\""), "keep_firing_for");
        assert_eq!(field("rule r1: label \"1a\": names are ..."), "labels");
        assert_eq!(field("invalid rule name \"R\": ..."), "name");
        assert_eq!(field("something else"), "general");
        let conflict = FieldErrors::from_domain(DomainError::Conflict("alert rule r1 already exists".into()), "r1");
        assert_eq!(conflict.unwrap().status, Some(StatusCode::CONFLICT));
        assert!(FieldErrors::from_domain(DomainError::NotFound("x".into()), "r1").is_err());
    }
}
