//! `/alerts`: the firing and pending alerts of the alert engine's latest cycle
//! (filtered by state, severity and cluster), the recent alert history, and a
//! "Silence" link per alert; `/silences`: the active and recently expired
//! silences, the form that creates one (pre-filled from an alert) and the
//! expiry of one (confirmed first). The home page's "Firing alerts" panel is
//! built here too ([`firing_panel`]).
//!
//! Reads and changes go through `domain::health::alerts` and
//! `domain::alerts`; this file only turns form text into their types
//! (matcher lines, an end given as a duration or a time) and their answers
//! into rows.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::hosts::confirm_page;
use super::{ConfirmForm, ConsoleError, CsrfForm, PageResult, Session, domain_message, redirect_with, url_encode};
use crate::AppState;
use crate::domain::alerts::{AlertHistoryEntry, LabelMatcher, SilenceSpec, SilenceView};
use crate::domain::health::{AlertState, AlertView};
use crate::domain::{self, DomainError, Permission, Scope};
use crate::store::{AlertHistoryFilter, HostFilter};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/alerts", get(alerts_page))
        .route("/silences", get(silences_page).post(create_silence))
        .route("/silences/{id}/expire", post(expire_silence))
}

/// Labels that name what an alert is about, most specific last; with
/// `alertname` they identify an alert for a silence made from it.
const ENTITY_LABELS: [&str; 4] = ["cluster", "service", "role", "host"];
/// Severities, mildest first, as the filter offers them.
const SEVERITIES: [&str; 3] = ["info", "warning", "critical"];
/// How many history entries "Recent" may show; the first is the default.
const RECENT_SIZES: [u32; 3] = [50, 200, 1000];
/// How many firing alerts the home page lists.
const HOME_ALERTS: usize = 10;
/// Most distinct hosts of one page whose console page is looked up.
const MAX_HOST_LINKS: usize = 50;
/// A silence made from an alert lasts this long unless changed.
const DEFAULT_SILENCE: &str = "2h";

/// A value as people read it: whole numbers without decimals, others to at
/// most four decimals (tiny ones in scientific notation).
fn fmt_value(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return format!("{v:.0}");
    }
    if v.abs() < 1e-3 {
        return format!("{v:.3e}");
    }
    let rounded = (v * 10_000.0).round() / 10_000.0;
    rounded.to_string()
}

/// `name=value` (`!=`, `=~`, `!~`), as a matcher line of the silence form.
/// A value that starts and ends with `"` is quoted, since the form strips one
/// pair of quotes.
fn matcher_line(m: &LabelMatcher) -> String {
    let quoted = m.value.len() >= 2 && m.value.starts_with('"') && m.value.ends_with('"');
    if quoted { format!("{}{}\"{}\"", m.name, m.op, m.value) } else { format!("{}{}{}", m.name, m.op, m.value) }
}

/// The matchers of the silence form: one a line, `name=value`, `name!=value`,
/// `name=~regex` or `name!~regex`; blank lines are skipped, one pair of
/// double quotes around a value is removed. Names and regexes are checked by
/// the domain.
fn parse_matchers(text: &str) -> Result<Vec<LabelMatcher>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some(at) = line.find(['=', '!']) else {
            return Err(format!(
                "matcher line {} ({line:?}) has no operator: write name=value, name!=value, name=~regex or name!~regex",
                i + 1
            ));
        };
        let (name, rest) = line.split_at(at);
        let op = ["!=", "!~", "=~", "="].into_iter().find(|op| rest.starts_with(op)).ok_or_else(|| {
            format!(
                "matcher line {} ({line:?}): unknown operator; write name=value, name!=value, name=~regex or name!~regex",
                i + 1
            )
        })?;
        let mut value = rest[op.len()..].trim();
        if value.len() >= 2 && value.starts_with('"') && value.ends_with('"') {
            value = &value[1..value.len() - 1];
        }
        out.push(LabelMatcher { name: name.trim().to_owned(), op: op.to_owned(), value: value.to_owned() });
    }
    Ok(out)
}

/// The end of a silence as the form gives it: a time (RFC 3339, or
/// `2026-01-02T03:04` read as UTC) becomes `ends_at`, anything else is a
/// duration from now for the domain to check.
fn parse_end(text: &str) -> Result<(Option<String>, Option<String>), String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("ends: give a duration such as 2h or a UTC time such as 2026-01-02T03:04".into());
    }
    let looks_like_date = t.len() >= 10 && t.as_bytes()[4] == b'-' && t[..4].bytes().all(|b| b.is_ascii_digit());
    if !looks_like_date {
        return Ok((None, Some(t.to_owned())));
    }
    if chrono::DateTime::parse_from_rfc3339(t).is_ok() {
        return Ok((Some(t.to_owned()), None));
    }
    for format in ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"] {
        if let Ok(dt) = chrono::NaiveDateTime::parse_from_str(t, format) {
            return Ok((Some(dt.and_utc().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)), None));
        }
    }
    Err(format!("ends: {t:?} is not a time; write 2026-01-02T03:04 (UTC), RFC 3339, or a duration such as 2h"))
}

/// Console pages of the entities an alert names: its cluster, service and
/// role, and its host when the viewer may open it (`hosts`: hostname to id).
fn entity(labels: &BTreeMap<String, String>, hosts: &HashMap<String, String>) -> Value {
    let get = |k: &str| labels.get(k).filter(|v| !v.is_empty());
    let mut path = Vec::new();
    if let Some(c) = get("cluster") {
        let c_href = format!("/clusters/{}", url_encode(c));
        path.push(json!({"kind": "cluster", "name": c, "href": c_href}));
        if let Some(s) = get("service") {
            let s_href = format!("{c_href}/services/{}", url_encode(s));
            path.push(json!({"kind": "service", "name": s, "href": s_href}));
            if let Some(r) = get("role") {
                path.push(json!({"kind": "role", "name": r, "href": format!("{s_href}/roles/{}", url_encode(r))}));
            }
        }
    }
    let host = get("host").map(|h| {
        let href = hosts.get(h).map(|id| format!("/hosts/{}", url_encode(id)));
        json!({"name": h, "href": href})
    });
    json!({"path": path, "host": host, "none": path.is_empty() && host.is_none()})
}

/// The labels an alert row lists besides its name, severity and entity.
fn other_labels(labels: &BTreeMap<String, String>) -> Vec<String> {
    labels
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "alertname" | "severity") && !ENTITY_LABELS.contains(&k.as_str()))
        .map(|(k, v)| format!("{k}={v}"))
        .collect()
}

/// The silence form pre-filled to mute this alert: its `alertname` and
/// entity labels, for two hours.
fn silence_href(labels: &BTreeMap<String, String>) -> String {
    let lines: Vec<String> = std::iter::once("alertname")
        .chain(ENTITY_LABELS)
        .filter_map(|k| labels.get(k).filter(|v| !v.is_empty()).map(|v| (k, v)))
        .map(|(k, v)| matcher_line(&LabelMatcher { name: k.into(), op: "=".into(), value: v.clone() }))
        .collect();
    format!("/silences?matchers={}&ends={DEFAULT_SILENCE}#new-silence", url_encode(&lines.join("\n")))
}

/// Whether the viewer may silence alerts of `cluster` (or, for none, any
/// alert): as `domain::alerts::create_silence` decides for a silence with
/// that `cluster=` matcher. A courtesy; the domain checks again.
fn may_silence(session: &Session, cluster: Option<&str>) -> bool {
    let scope = cluster.map_or(Scope::Global, Scope::Cluster);
    session.actor().may(Permission::CommandsRun, scope)
}

fn state_word(s: AlertState) -> &'static str {
    match s {
        AlertState::Pending => "pending",
        AlertState::Firing => "firing",
        AlertState::Resolved => "resolved",
    }
}

fn alert_row(session: &Session, a: &AlertView, hosts: &HashMap<String, String>) -> Value {
    let cluster = a.labels.get("cluster").map(String::as_str);
    json!({
        "id": format!("alert-{}", a.fingerprint),
        "state": state_word(a.state),
        "severity": a.severity.as_str(),
        "alertname": a.labels.get("alertname").cloned().unwrap_or_else(|| a.rule.clone()),
        "rule": a.rule,
        "entity": entity(&a.labels, hosts),
        "summary": a.annotations.get("summary").cloned().unwrap_or_default(),
        "value": fmt_value(a.value),
        "active_since": a.active_since,
        "fired_at": a.fired_at,
        "labels": other_labels(&a.labels),
        "silenced": !a.silenced_by.is_empty(),
        "silenced_by": a.silenced_by,
        "in_maintenance": a.in_maintenance,
        "silence_href": may_silence(session, cluster).then(|| silence_href(&a.labels)),
    })
}

fn history_row(e: &AlertHistoryEntry, hosts: &HashMap<String, String>) -> Value {
    json!({
        "at": e.at,
        "state": state_word(e.state),
        "severity": e.severity.as_str(),
        "alertname": e.labels.get("alertname").cloned().unwrap_or_else(|| e.rule.clone()),
        "entity": entity(&e.labels, hosts),
        "value": fmt_value(e.value),
        "summary": e.summary,
        "suppressed": e.suppressed,
    })
}

/// Host ids of the hostnames alerts name, for links to host pages; only
/// hosts the viewer may see (as the hosts list decides), at most
/// [`MAX_HOST_LINKS`] lookups.
async fn host_ids<'a>(
    state: &AppState,
    session: &Session,
    names: impl Iterator<Item = &'a String>,
) -> Result<HashMap<String, String>, DomainError> {
    let names: BTreeSet<&String> = names.collect();
    let mut out = HashMap::new();
    for name in names.into_iter().take(MAX_HOST_LINKS) {
        let filter = HostFilter { hostname: Some(name.clone()), limit: 20, ..Default::default() };
        let page = domain::hosts::list(state, &session.actor(), &filter).await?;
        if let Some(h) = page.items.into_iter().find(|h| &h.hostname == name) {
            out.insert(name.clone(), h.id);
        }
    }
    Ok(out)
}

#[derive(Debug, Default, Deserialize)]
struct AlertsQuery {
    #[serde(default)]
    state: String,
    #[serde(default)]
    severity: String,
    #[serde(default)]
    cluster: String,
    recent: Option<u32>,
}

async fn alerts_page(State(state): State<Arc<AppState>>, session: Session, Query(q): Query<AlertsQuery>) -> PageResult {
    let actor = session.actor();
    let mut error = None;
    let wanted_state = match q.state.trim() {
        "" => None,
        "firing" => Some(AlertState::Firing),
        "pending" => Some(AlertState::Pending),
        other => {
            error = Some(format!("unknown state {other:?}: choose firing or pending"));
            None
        }
    };
    let severity = q.severity.trim();
    if !severity.is_empty() && !SEVERITIES.contains(&severity) {
        error = Some(format!("unknown severity {severity:?}: choose info, warning or critical"));
    }
    let cluster = q.cluster.trim();
    let keep = |labels: &BTreeMap<String, String>, sev: &str| {
        (severity.is_empty() || !SEVERITIES.contains(&severity) || sev == severity)
            && (cluster.is_empty() || labels.get("cluster").is_some_and(|c| c == cluster))
    };
    let active: Vec<AlertView> = domain::health::alerts(&actor, &state.alerts.active(), wanted_state)
        .into_iter()
        .filter(|a| keep(&a.labels, a.severity.as_str()))
        .collect();
    let recent_limit = q.recent.filter(|n| RECENT_SIZES.contains(n)).unwrap_or(RECENT_SIZES[0]);
    let history =
        domain::alerts::history(&state, &actor, AlertHistoryFilter { limit: recent_limit, ..Default::default() })
            .await?;
    // Fewer than asked for: there is no more to show.
    let has_more = history.len() >= recent_limit as usize;
    let recent: Vec<AlertHistoryEntry> = history.into_iter().filter(|e| keep(&e.labels, e.severity.as_str())).collect();
    let hostnames =
        active.iter().map(|a| &a.labels).chain(recent.iter().map(|e| &e.labels)).filter_map(|l| l.get("host"));
    let hosts = host_ids(&state, &session, hostnames).await?;
    let rows = |s: AlertState| -> Vec<Value> {
        active.iter().filter(|a| a.state == s).map(|a| alert_row(&session, a, &hosts)).collect()
    };
    let (firing, pending) = (rows(AlertState::Firing), rows(AlertState::Pending));
    let clusters: Vec<String> = domain::clusters::list(&state, &actor).await?.into_iter().map(|c| c.name).collect();
    let more = RECENT_SIZES.iter().find(|n| has_more && **n > recent_limit).map(|n| {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("state", q.state.trim())
            .append_pair("severity", severity)
            .append_pair("cluster", cluster)
            .append_pair("recent", &n.to_string())
            .finish();
        json!({"n": n, "href": format!("/alerts?{query}#recent")})
    });
    let resp = session.page(
        &state,
        "alerts",
        "Alerts",
        "alerts",
        json!({
            "firing_count": firing.len(),
            "pending_count": pending.len(),
            "firing": firing,
            "pending": pending,
            "show_firing": wanted_state != Some(AlertState::Pending),
            "show_pending": wanted_state != Some(AlertState::Firing),
            "recent": recent.iter().map(|e| history_row(e, &hosts)).collect::<Vec<_>>(),
            "recent_limit": recent_limit,
            "more": more,
            "q": {"state": q.state.trim(), "severity": severity, "cluster": cluster},
            "states": ["firing", "pending"],
            "severities": SEVERITIES,
            "clusters": clusters,
            "error": error,
        }),
    );
    Ok(if error.is_some() { (StatusCode::BAD_REQUEST, resp).into_response() } else { resp })
}

/// The home page's panel: firing alerts counted by severity and the first
/// [`HOME_ALERTS`] of them (most severe first), each linked to its row on
/// `/alerts`. Only alerts the viewer may see.
pub(crate) fn firing_panel(state: &AppState, session: &Session) -> Value {
    let firing = domain::health::alerts(&session.actor(), &state.alerts.active(), Some(AlertState::Firing));
    let counts: Vec<Value> = SEVERITIES
        .iter()
        .rev()
        .map(|s| {
            let n = firing.iter().filter(|a| a.severity.as_str() == *s).count();
            json!({"severity": s, "count": n, "href": format!("/alerts?state=firing&severity={s}")})
        })
        .collect();
    let first: Vec<Value> = firing
        .iter()
        .take(HOME_ALERTS)
        .map(|a| {
            let about: Vec<&str> = ENTITY_LABELS.iter().filter_map(|k| a.labels.get(*k).map(String::as_str)).collect();
            json!({
                "href": format!("/alerts#alert-{}", a.fingerprint),
                "severity": a.severity.as_str(),
                "alertname": a.labels.get("alertname").cloned().unwrap_or_else(|| a.rule.clone()),
                "about": about.join(" / "),
                "summary": a.annotations.get("summary").cloned().unwrap_or_default(),
                "silenced": !a.silenced_by.is_empty(),
                "in_maintenance": a.in_maintenance,
            })
        })
        .collect();
    json!({
        "count": firing.len(),
        "counts": counts,
        "alerts": first,
        "more": firing.len().saturating_sub(HOME_ALERTS),
    })
}

/// The silence form as sent (or pre-filled from an alert), kept when it is
/// shown again with an error.
#[derive(Debug, Default, Deserialize)]
struct SilenceForm {
    #[serde(default)]
    matchers: String,
    #[serde(default)]
    ends: String,
    #[serde(default)]
    comment: String,
}

async fn silences_page(
    State(state): State<Arc<AppState>>,
    session: Session,
    Query(form): Query<SilenceForm>,
) -> PageResult {
    let form =
        SilenceForm { ends: if form.ends.trim().is_empty() { DEFAULT_SILENCE.into() } else { form.ends }, ..form };
    silences_view(&state, &session, &form, None).await
}

fn silence_row(session: &Session, s: &SilenceView, muting: &HashMap<&str, usize>) -> Value {
    let cluster = s.matchers.iter().find(|m| m.name == "cluster" && m.op == "=").map(|m| m.value.as_str());
    let active = s.state == "active";
    json!({
        "id": s.id,
        "anchor": format!("silence-{}", s.id),
        "matchers": s.matchers.iter().map(matcher_line).collect::<Vec<_>>(),
        "comment": s.comment,
        "created_by": s.created_by,
        "starts_at": s.starts_at,
        "ends_at": s.ends_at,
        "mutes": muting.get(s.id.as_str()).copied().unwrap_or(0),
        "expire": (active && may_silence(session, cluster)).then(|| format!("/silences/{}/expire", url_encode(&s.id))),
    })
}

async fn silences_view(state: &AppState, session: &Session, form: &SilenceForm, error: Option<String>) -> PageResult {
    let actor = session.actor();
    let silences = domain::alerts::list_silences(state, &actor).await?;
    let visible = domain::health::alerts(&actor, &state.alerts.active(), None);
    let mut muting: HashMap<&str, usize> = HashMap::new();
    for id in visible.iter().flat_map(|a| a.silenced_by.iter()) {
        *muting.entry(id.as_str()).or_default() += 1;
    }
    let rows = |want: &str| -> Vec<Value> {
        silences.iter().filter(|s| s.state == want).map(|s| silence_row(session, s, &muting)).collect()
    };
    let active = rows("active");
    let resp = session.page(
        state,
        "silences",
        "Silences",
        "alerts",
        json!({
            "active_count": active.len(),
            "active": active,
            "expired": rows("expired"),
            "may_create": actor.may(domain::alerts::SILENCE_PERMISSION, Scope::Any),
            "form": {"matchers": form.matchers, "ends": form.ends, "comment": form.comment},
            "error": error,
        }),
    );
    Ok(if error.is_some() { (StatusCode::UNPROCESSABLE_ENTITY, resp).into_response() } else { resp })
}

/// A refusal shown by the form that caused it; not found, forbidden and the
/// database are error pages.
fn form_error(e: DomainError) -> Result<String, ConsoleError> {
    match e {
        DomainError::NotFound(_)
        | DomainError::Forbidden { .. }
        | DomainError::Unavailable(_)
        | DomainError::Internal(_) => Err(e.into()),
        e => Ok(domain_message(&e)),
    }
}

async fn create_silence(
    State(state): State<Arc<AppState>>,
    CsrfForm(session, form): CsrfForm<SilenceForm>,
) -> PageResult {
    let parsed = parse_matchers(&form.matchers).and_then(|m| Ok((m, parse_end(&form.ends)?)));
    let (matchers, (ends_at, duration)) = match parsed {
        Ok(p) => p,
        Err(e) => return silences_view(&state, &session, &form, Some(e)).await,
    };
    let spec = SilenceSpec { matchers, ends_at, duration, comment: form.comment.trim().to_owned() };
    match domain::alerts::create_silence(&state, &session.actor(), spec).await {
        Ok(s) => {
            let what: Vec<String> = s.matchers.iter().map(matcher_line).collect();
            Ok(redirect_with("/silences", true, &format!("silence created: {} until {}", what.join(", "), s.ends_at)))
        }
        Err(e) => {
            let message = form_error(e)?;
            silences_view(&state, &session, &form, Some(message)).await
        }
    }
}

async fn expire_silence(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    CsrfForm(session, form): CsrfForm<ConfirmForm>,
) -> PageResult {
    let actor = session.actor();
    if form.confirmed != "yes" {
        let s = domain::alerts::get_silence(&state, &actor, &id).await?;
        let what = format!(
            "Expire silence {} now? The alerts it mutes ({}) notify again at their next change.",
            s.id,
            s.matchers.iter().map(matcher_line).collect::<Vec<_>>().join(", ")
        );
        let hidden = vec![("confirmed".to_owned(), "yes".to_owned())];
        let action = format!("/silences/{}/expire", url_encode(&id));
        return Ok(confirm_page(&session, &state, &what, true, &action, &hidden, "/silences", Vec::new(), 1));
    }
    match domain::alerts::expire_silence(&state, &actor, &id).await {
        Ok(s) => Ok(redirect_with("/silences", true, &format!("silence {} expired", s.id))),
        Err(e @ DomainError::Conflict(_)) => Ok(redirect_with("/silences", false, &domain_message(&e))),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, op: &str, value: &str) -> LabelMatcher {
        LabelMatcher { name: name.into(), op: op.into(), value: value.into() }
    }

    #[test]
    fn matcher_lines_parse_every_operator_and_round_trip() {
        let text = "alertname=host_lost\n\n  host != db1 \nservice=~cache|queue\nrole!~\"a.*\"\nempty=";
        let got = parse_matchers(text).unwrap();
        assert_eq!(
            got,
            vec![
                m("alertname", "=", "host_lost"),
                m("host", "!=", "db1"),
                m("service", "=~", "cache|queue"),
                m("role", "!~", "a.*"),
                m("empty", "=", ""),
            ]
        );
        // A value with quotes of its own survives the form.
        let odd = m("x", "=", "\"quoted\"");
        assert_eq!(parse_matchers(&matcher_line(&odd)).unwrap(), vec![odd]);
        let no_op = parse_matchers("a=b\nhost db1").unwrap_err();
        assert!(no_op.contains("line 2") && no_op.contains("no operator"), "{no_op}");
        assert!(parse_matchers("a!b").unwrap_err().contains("unknown operator"));
    }

    #[test]
    fn ends_are_durations_or_times() {
        assert_eq!(parse_end(" 2h ").unwrap(), (None, Some("2h".into())));
        assert_eq!(parse_end("2030-01-02T03:04").unwrap(), (Some("2030-01-02T03:04:00Z".into()), None));
        assert_eq!(parse_end("2030-01-02T03:04:05+02:00").unwrap(), (Some("2030-01-02T03:04:05+02:00".into()), None));
        assert!(parse_end("2030-13-02T03:04").unwrap_err().contains("is not a time"));
        assert!(parse_end("").unwrap_err().contains("give a duration"));
    }

    /// Both pages render with rows of every kind (a template error would only show in the log).
    #[test]
    fn the_pages_render() {
        let hosts: HashMap<String, String> = [("h1".to_owned(), "id1".to_owned())].into();
        let labels: BTreeMap<String, String> = [("alertname", "a"), ("cluster", "c"), ("host", "h1"), ("x", "y")]
            .map(|(k, v)| (k.into(), v.into()))
            .into();
        let row = json!({"id": "alert-f", "state": "firing", "severity": "critical", "alertname": "a",
            "entity": entity(&labels, &hosts), "summary": "s", "value": "1", "active_since": "t", "fired_at": "t",
            "labels": other_labels(&labels), "silenced": true, "silenced_by": ["s1"], "in_maintenance": true,
            "silence_href": silence_href(&labels)});
        let hb = &super::super::Templates::load().unwrap().hb;
        let html = hb
            .render(
                "alerts",
                &json!({"firing": [row.clone()], "pending": [row], "firing_count": 1, "pending_count": 1, "show_firing": true, "show_pending": true,
                    "recent": [{"at": "t", "state": "resolved", "severity": "info", "alertname": "a",
                        "entity": entity(&labels, &hosts), "value": "1", "summary": "s", "suppressed": true}],
                    "recent_limit": 50, "more": {"n": 200, "href": "/alerts?recent=200"}, "q": {}, "states": [],
                    "severities": SEVERITIES, "clusters": ["c"], "error": null}),
            )
            .unwrap();
        assert!(html.contains("href=\"/hosts/id1\"") && html.contains("<small id=\"firing-count\">1</small>"));
        let silence = json!({"id": "s1", "anchor": "silence-s1", "matchers": ["a=b"], "comment": "", "created_by": "u",
            "starts_at": "t", "ends_at": "t", "mutes": 1, "expire": "/silences/s1/expire"});
        let html = hb
            .render(
                "silences",
                &json!({"active": [silence.clone()], "expired": [silence], "active_count": 1, "may_create": true,
                    "form": {"matchers": "a=b", "ends": "2h", "comment": ""}, "error": "bad"}),
            )
            .unwrap();
        assert!(html.contains("Expire…") && html.contains("1 alert<"), "{html}");
    }

    #[test]
    fn values_read_as_people_write_them() {
        assert_eq!(fmt_value(0.99), "0.99");
        assert_eq!(fmt_value(3.0), "3");
        assert_eq!(fmt_value(0.1 + 0.2), "0.3");
        assert_eq!(fmt_value(0.000_012_5), "1.250e-5");
    }

    #[test]
    fn a_silence_from_an_alert_matches_its_name_and_entity() {
        let labels: BTreeMap<String, String> = [
            ("alertname", "redis_memory_high"),
            ("cluster", "prod"),
            ("service", "cache"),
            ("role", "cache-primary"),
            ("host", "h1.example"),
            ("team", "cache"),
            ("severity", "critical"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let href = silence_href(&labels);
        let query = href.trim_start_matches("/silences?").trim_end_matches("#new-silence");
        let pairs: BTreeMap<String, String> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        assert_eq!(pairs["ends"], "2h");
        assert_eq!(
            pairs["matchers"],
            "alertname=redis_memory_high\ncluster=prod\nservice=cache\nrole=cache-primary\nhost=h1.example"
        );
        assert_eq!(other_labels(&labels), vec!["team=cache".to_owned()]);
    }
}
