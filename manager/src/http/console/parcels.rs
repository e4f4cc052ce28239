//! Parcels: the repository (local and followed remote ones) with upload;
//! per cluster the parcel versions it wants and their state on every member
//! host, with download progress; distribute, activate, deactivate, remove.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::{get, post};
use bytes::{Buf, Bytes, BytesMut};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use super::hosts::confirm_page;
use super::{ConsoleError, CsrfForm, PageResult, Session, domain_message, human_bytes, redirect_with, url_encode};
use crate::AppState;
use crate::domain::parcels::ParcelCommand;
use crate::domain::{self, DomainError};
use crate::model::rfc3339;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/parcels", get(page))
        .route("/parcels/upload", post(upload))
        .route("/parcels/command", post(command))
}

async fn page(State(state): State<Arc<AppState>>, session: Session) -> PageResult {
    render(&state, &session, None).await
}

async fn render(state: &AppState, session: &Session, upload_error: Option<String>) -> PageResult {
    let list = domain::parcels::overview(state, &session.actor()).await?;
    let member_ids: Vec<String> = list
        .items
        .iter()
        .flat_map(|p| p.clusters.iter().flat_map(|c| c.hosts.iter().map(|h| h.host_id.clone())))
        .collect();
    let mut member_ids = member_ids;
    member_ids.sort();
    member_ids.dedup();
    let names = state.store.host_addresses(&member_ids).await.map_err(DomainError::from)?;
    let hostname = |id: &str| names.get(id).map(|(h, _)| h.clone()).unwrap_or_else(|| id.to_owned());
    let repository: Vec<Value> = list
        .items
        .iter()
        .map(|p| {
            json!({"parcel_name": p.parcel_name, "name": p.name, "version": p.version, "distro": p.distro,
                   "size": human_bytes(p.size as f64), "sha256": p.sha256,
                   "source": serde_json::to_value(&p.source).unwrap_or(Value::Null),
                   "components": p.components.iter().map(|c| format!("{} {}", c.name, c.version)).collect::<Vec<_>>()})
        })
        .collect();
    // Per cluster: every parcel version it wants or that some member host has.
    let mut clusters: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut busy = false;
    for p in &list.items {
        for c in &p.clusters {
            let rows = clusters.entry(c.cluster.clone()).or_default();
            let present = c.hosts.iter().any(|h| h.state.as_str() != "available");
            if c.target.is_none() && !present {
                continue;
            }
            busy |= c.hosts.iter().any(|h| h.state.as_str() == "downloading");
            let hosts: Vec<Value> = c
                .hosts
                .iter()
                .map(|h| {
                    json!({"id": h.host_id, "hostname": hostname(&h.host_id),
                           "href": format!("/hosts/{}", url_encode(&h.host_id)),
                           "state": h.state.as_str(), "percent": h.percent, "error": h.error})
                })
                .collect();
            let target = c.target.map(|t| serde_json::to_value(t).unwrap_or(Value::Null));
            let active = target.as_ref().and_then(Value::as_str) == Some("active");
            rows.push(json!({
                "name": p.name, "version": p.version, "parcel_name": p.parcel_name,
                "target": target, "active": active, "wanted": c.target.is_some(), "hosts": hosts,
            }));
        }
    }
    let all_clusters: Vec<String> =
        domain::clusters::list(state, &session.actor()).await?.into_iter().map(|c| c.name).collect();
    let clusters: Vec<Value> = all_clusters
        .iter()
        .map(|c| {
            json!({"name": c, "href": format!("/clusters/{}", url_encode(c)),
                   "parcels": clusters.get(c).cloned().unwrap_or_default()})
        })
        .collect();
    let repositories: Vec<Value> = list
        .repositories
        .iter()
        .map(|r| json!({"url": r.url, "parcels": r.parcels, "error": r.error, "refreshed_at": r.refreshed_at.map(rfc3339)}))
        .collect();
    Ok(session.page(
        state,
        "parcels",
        "Parcels",
        "parcels",
        json!({
            "repository": repository,
            "repositories": repositories,
            "clusters": clusters,
            "busy": busy,
            "upload_error": upload_error,
        }),
    ))
}

#[derive(Debug, Deserialize)]
struct CommandForm {
    #[serde(default)]
    cluster: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    confirmed: String,
}

/// Starts a cluster-level parcel command; removing and deactivating are
/// confirmed first. Answers the command's page.
async fn command(State(state): State<Arc<AppState>>, CsrfForm(session, form): CsrfForm<CommandForm>) -> PageResult {
    let destructive = matches!(form.action.as_str(), "remove" | "deactivate");
    if destructive && form.confirmed != "yes" {
        let hosts = domain::clusters::hosts(&state, &session.actor(), &form.cluster).await?;
        let what = match form.action.as_str() {
            "remove" => format!(
                "Remove {} {} from the {} host(s) of cluster {}: the files are deleted from each host.",
                form.name,
                form.version,
                hosts.len(),
                form.cluster
            ),
            _ => format!(
                "Deactivate {} {} on the {} host(s) of cluster {}: roles running from it need another active version to restart.",
                form.name,
                form.version,
                hosts.len(),
                form.cluster
            ),
        };
        let hidden: Vec<(String, String)> =
            [("cluster", &form.cluster), ("name", &form.name), ("version", &form.version), ("action", &form.action)]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .chain([("confirmed".to_owned(), "yes".to_owned())])
                .collect();
        let names = hostnames(&state, &hosts, 20).await?;
        return Ok(confirm_page(
            &session,
            &state,
            &what,
            true,
            "/parcels/command",
            &hidden,
            "/parcels",
            names,
            hosts.len(),
        ));
    }
    let req = ParcelCommand {
        name: form.action.clone(),
        parcel: form.name.clone(),
        version: Some(form.version.trim().to_owned()).filter(|v| !v.is_empty()),
    };
    Ok(match domain::parcels::create_command(&state, &session.actor(), &form.cluster, req).await {
        Ok(c) => redirect_with(
            &format!("/commands/{}", url_encode(&c.id)),
            true,
            &format!("{} of {} {} started on cluster {}", form.action, form.name, form.version, form.cluster),
        ),
        Err(e @ (DomainError::Invalid(_) | DomainError::Conflict(_) | DomainError::NotFound(_))) => {
            redirect_with("/parcels", false, &domain_message(&e))
        }
        Err(e) => return Err(e.into()),
    })
}

async fn hostnames(state: &AppState, ids: &[String], max: usize) -> Result<Vec<String>, ConsoleError> {
    let take: Vec<String> = ids.iter().take(max).cloned().collect();
    let known = state.store.host_addresses(&take).await.map_err(DomainError::from)?;
    Ok(take.iter().map(|id| known.get(id).map(|(h, _)| h.clone()).unwrap_or_else(|| id.clone())).collect())
}

/// The upload form (`multipart/form-data`: `_csrf`, optional `sha256`, then
/// `file`), streamed to disk like the REST upload: the body is never held
/// in memory, so the console's body limit does not apply to it.
async fn upload(State(state): State<Arc<AppState>>, session: Session, headers: HeaderMap, body: Body) -> PageResult {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let Some(boundary) = boundary(content_type) else {
        return Err(ConsoleError::new(StatusCode::BAD_REQUEST, "the upload form must be sent as multipart/form-data"));
    };
    let mut form = Multipart::new(body, &boundary);
    let mut csrf = None;
    let mut sha256 = String::new();
    loop {
        let head = match form.next_part().await {
            Ok(Some(h)) => h,
            Ok(None) => return render(&state, &session, Some("choose a parcel file to upload".into())).await,
            Err(e) => return Err(ConsoleError::new(StatusCode::BAD_REQUEST, format!("could not read the form: {e}"))),
        };
        if head.name != "file" {
            let value = form.text().await.map_err(|e| ConsoleError::new(StatusCode::BAD_REQUEST, e))?;
            match head.name.as_str() {
                "_csrf" => csrf = Some(value),
                "sha256" => sha256 = value,
                _ => {}
            }
            continue;
        }
        // The token precedes the file in the form: nothing is stored for a
        // request from elsewhere.
        let sent = csrf.unwrap_or_default();
        // Compared in constant time, as `CsrfForm` does.
        let differ = sent.bytes().zip(session.csrf.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if sent.len() != session.csrf.len() || differ != 0 {
            tracing::warn!(user = %session.user.username, source = %session.source, "console upload refused: bad CSRF token");
            return Err(ConsoleError::new(
                StatusCode::FORBIDDEN,
                "This form was refused: its security token is missing or out of date (forms only work from a \
                 Drover page of your current session). Reload the page and try again.",
            ));
        }
        let file_name = head.file_name.rsplit(['/', '\\']).next().unwrap_or_default().to_owned();
        if file_name.is_empty() {
            return render(&state, &session, Some("choose a parcel file to upload".into())).await;
        }
        let stream = futures::stream::unfold(&mut form, |f| async move {
            match f.chunk().await {
                Ok(Some(b)) => Some((Ok(b), f)),
                Ok(None) => None,
                Err(e) => Some((Err(std::io::Error::other(e)), f)),
            }
        });
        let result =
            domain::parcels::upload(&state, &session.actor(), &file_name, Some(sha256.as_str()), Box::pin(stream))
                .await;
        return match result {
            Ok(entry) => Ok(redirect_with(
                "/parcels",
                true,
                &format!(
                    "uploaded {} ({}, sha256 {})",
                    entry.parcel_name,
                    human_bytes(entry.size as f64),
                    entry.sha256
                ),
            )),
            Err(e @ (DomainError::Invalid(_) | DomainError::Conflict(_))) => {
                render(&state, &session, Some(domain_message(&e))).await
            }
            Err(e) => Err(e.into()),
        };
    }
}

/// The boundary of a `multipart/form-data` content type.
fn boundary(content_type: &str) -> Option<String> {
    let mut parts = content_type.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    parts
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim().trim_matches('"').to_owned())
        .filter(|b| !b.is_empty() && b.len() <= 200)
}

/// One part's head: its field name and file name.
#[derive(Debug, Default, PartialEq)]
struct PartHead {
    name: String,
    file_name: String,
}

/// The most a part's headers, or a text field, may hold.
const MAX_HEAD: usize = 16 * 1024;

/// A streaming reader of a `multipart/form-data` body: parts one after the
/// other, a part's data in chunks as they arrive.
struct Multipart<S> {
    body: S,
    buf: BytesMut,
    /// `\r\n--BOUNDARY`: what ends a part's data (the body is read as if it
    /// started with `\r\n`, so the first boundary looks the same).
    delim: Vec<u8>,
}

impl Multipart<axum::body::BodyDataStream> {
    fn new(body: Body, boundary: &str) -> Self {
        Multipart::from_stream(body.into_data_stream(), boundary)
    }
}

impl<S, E> Multipart<S>
where
    S: futures::Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    fn from_stream(body: S, boundary: &str) -> Self {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        buf.extend_from_slice(b"\r\n");
        Multipart { body, buf, delim: format!("\r\n--{boundary}").into_bytes() }
    }

    /// Reads more of the body; false at its end.
    async fn fill(&mut self) -> Result<bool, String> {
        match self.body.next().await {
            Some(Ok(b)) => {
                self.buf.extend_from_slice(&b);
                Ok(true)
            }
            Some(Err(e)) => Err(format!("the upload was interrupted: {e}")),
            None => Ok(false),
        }
    }

    /// Skips to the next part and reads its head; `None` after the last.
    async fn next_part(&mut self) -> Result<Option<PartHead>, String> {
        loop {
            let Some(i) = find(&self.buf, &self.delim) else {
                let keep = self.delim.len() - 1;
                if self.buf.len() > keep {
                    self.buf.advance(self.buf.len() - keep);
                }
                if !self.fill().await? {
                    return Err("the form ended early".into());
                }
                continue;
            };
            let after = i + self.delim.len();
            if self.buf.len() < after + 2 {
                if !self.fill().await? {
                    return Err("the form ended early".into());
                }
                continue;
            }
            if &self.buf[after..after + 2] == b"--" {
                return Ok(None);
            }
            let Some(end) = find(&self.buf[after..], b"\r\n\r\n") else {
                if self.buf.len() - after > MAX_HEAD {
                    return Err("a form field's headers are too long".into());
                }
                if !self.fill().await? {
                    return Err("the form ended early".into());
                }
                continue;
            };
            let head = String::from_utf8_lossy(&self.buf[after..after + end]).into_owned();
            self.buf.advance(after + end + 4);
            return Ok(Some(parse_head(&head)));
        }
    }

    /// The next piece of the current part's data; `None` at its end.
    async fn chunk(&mut self) -> Result<Option<Bytes>, String> {
        loop {
            if let Some(i) = find(&self.buf, &self.delim) {
                return Ok((i > 0).then(|| self.buf.split_to(i).freeze()));
            }
            let safe = self.buf.len().saturating_sub(self.delim.len() - 1);
            if safe > 0 {
                return Ok(Some(self.buf.split_to(safe).freeze()));
            }
            if !self.fill().await? {
                return Err("the form ended early".into());
            }
        }
    }

    /// The current part's data as text (a small field).
    async fn text(&mut self) -> Result<String, String> {
        let mut out = Vec::new();
        while let Some(b) = self.chunk().await? {
            out.extend_from_slice(&b);
            if out.len() > MAX_HEAD {
                return Err("a form field is too long".into());
            }
        }
        String::from_utf8(out).map_err(|_| "a form field is not UTF-8".to_owned())
    }
}

/// Where `needle` first occurs in `hay`: a scan for its first byte, then a
/// comparison, so a long body is read about once.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let mut from = 0;
    while let Some(p) = hay[from..].iter().position(|&b| b == first) {
        let at = from + p;
        if hay.len() - at < needle.len() {
            return None;
        }
        if &hay[at..at + needle.len()] == needle {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// The field and file name from a part's `Content-Disposition` header.
fn parse_head(head: &str) -> PartHead {
    let mut out = PartHead::default();
    for line in head.split("\r\n") {
        let Some((k, v)) = line.split_once(':') else { continue };
        if !k.trim().eq_ignore_ascii_case("content-disposition") {
            continue;
        }
        for param in v.split(';').map(str::trim) {
            let Some((pk, pv)) = param.split_once('=') else { continue };
            let pv = pv.trim();
            let pv = pv.strip_prefix('"').and_then(|p| p.strip_suffix('"')).unwrap_or(pv);
            match pk.trim().to_ascii_lowercase().as_str() {
                "name" => out.name = pv.to_owned(),
                "filename" => out.file_name = pv.to_owned(),
                _ => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::{Multipart, PartHead, boundary};

    fn body(boundary: &str, file: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"_csrf\"\r\n\r\ntok\r\n").as_bytes(),
        );
        b.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"sha256\"\r\n\r\n\r\n").as_bytes(),
        );
        b.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a-1-x.parcel\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
        );
        b.extend_from_slice(file);
        b.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        b
    }

    #[tokio::test]
    async fn parts_are_read_whatever_the_chunk_size() {
        let bnd = "----x7MA4YWxkTrZu0gW";
        let file: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).chain(b"\r\n--".iter().copied()).collect();
        let whole = body(bnd, &file);
        for size in [1, 2, 3, 7, 64, 1000, whole.len()] {
            let chunks: Vec<Result<Bytes, std::io::Error>> =
                whole.chunks(size).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
            let mut m = Multipart::from_stream(futures::stream::iter(chunks), bnd);
            let h = m.next_part().await.unwrap().unwrap();
            assert_eq!(h, PartHead { name: "_csrf".into(), file_name: String::new() });
            assert_eq!(m.text().await.unwrap(), "tok");
            assert_eq!(m.next_part().await.unwrap().unwrap().name, "sha256");
            assert_eq!(m.text().await.unwrap(), "");
            let h = m.next_part().await.unwrap().unwrap();
            assert_eq!(h, PartHead { name: "file".into(), file_name: "a-1-x.parcel".into() });
            let mut got = Vec::new();
            while let Some(c) = m.chunk().await.unwrap() {
                got.extend_from_slice(&c);
            }
            assert_eq!(got, file, "chunk size {size}");
            assert!(m.next_part().await.unwrap().is_none());
        }
    }

    #[tokio::test]
    async fn a_cut_form_is_an_error() {
        let whole = body("b", b"data");
        let cut = whole[..whole.len() - 12].to_vec();
        let mut m = Multipart::from_stream(futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(cut))]), "b");
        for _ in 0..2 {
            m.next_part().await.unwrap().unwrap();
            m.text().await.unwrap();
        }
        m.next_part().await.unwrap().unwrap();
        let mut err = None;
        loop {
            match m.chunk().await {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        assert_eq!(err.as_deref(), Some("the form ended early"));
    }

    #[test]
    fn boundaries() {
        assert_eq!(boundary("multipart/form-data; boundary=abc").as_deref(), Some("abc"));
        assert_eq!(boundary("multipart/form-data; charset=utf-8; boundary=\"a b\"").as_deref(), Some("a b"));
        assert_eq!(boundary("application/x-www-form-urlencoded"), None);
        assert_eq!(boundary("multipart/form-data"), None);
    }
}
