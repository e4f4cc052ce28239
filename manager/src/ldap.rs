//! Sign-in against an LDAP directory, when `--ldap-url` is set (see
//! docs/ldap.md).
//!
//! A user who is not a local user with a password is bound to the directory
//! with the password typed: directly, by a DN made from
//! `--ldap-bind-dn-template`, or after a service account found their DN
//! under `--ldap-user-base`. Their groups (`cn` of the entries matching
//! `--ldap-group-filter` under `--ldap-group-base`) become grants through
//! `--ldap-role-map`, and the Drover user (source `ldap`, no password) is
//! created or given exactly those grants. A user in no mapped group is
//! refused, and so is everyone while the directory cannot be asked: there is
//! no fallback, but local users with a password never depend on it.
//! Directory users are recorded under their name in lower case, as
//! directories compare names without case.
//!
//! The name typed is escaped wherever it meets the directory: RFC 4514 in a
//! DN, RFC 4515 in a filter, so `*)(uid=*` matches no one.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use drover_api::users::Grant;
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry, dn_escape, ldap_escape};

use crate::ManagerConfig;
use crate::auth::Refusal;
use crate::model::now_millis;
use crate::store::{Store, UserRecord};

/// How long connecting and each directory operation may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// LDAP result code `invalidCredentials` (RFC 4511).
const INVALID_CREDENTIALS: u32 = 49;
/// Longer names are refused without asking the directory.
const MAX_NAME_LEN: usize = 256;

/// How a user's DN is found.
#[derive(Clone)]
enum BindMode {
    /// `{user}` in the template replaced by the escaped name.
    Template(String),
    /// A service account searches `user_base` with `user_filter`.
    Search { bind_dn: String, bind_password: String, user_base: String, user_filter: String },
}

/// The directory users sign in against.
pub struct Directory {
    url: String,
    starttls: bool,
    /// Own trust roots (`--ldap-ca-cert`); else the system's.
    tls: Option<Arc<rustls::ClientConfig>>,
    bind: BindMode,
    group_base: String,
    group_filter: String,
    /// Group `cn` (compared without case) to the grant it carries.
    role_map: Vec<(String, Grant)>,
    /// How long a successful sign-in is remembered (`--ldap-cache-ttl`).
    pub cache_ttl: Duration,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory").field("url", &self.url).finish_non_exhaustive()
    }
}

/// Why the directory could not answer (it is down, refuses the service
/// account, or is configured wrongly): the sign-in is refused.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("cannot reach the directory at {url}: {source}")]
    Unreachable { url: String, source: ldap3::LdapError },
    #[error("the directory at {url} refused the service account {dn} (--ldap-bind-dn): {source}")]
    ServiceBind { url: String, dn: String, source: ldap3::LdapError },
    #[error("{what} at {url} failed: {source}")]
    Operation { what: String, url: String, source: ldap3::LdapError },
    #[error("the name matches {count} entries under {base}; --ldap-user-filter must match one")]
    Ambiguous { count: usize, base: String },
}

/// What the directory says about a name and password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The password is right: the user's DN and the `cn` of their groups.
    Authenticated { dn: String, groups: Vec<String> },
    /// No such user, or a wrong password.
    BadCredentials,
}

impl Directory {
    /// The directory of `--ldap-*`, or `None` without `--ldap-url`. Fails on
    /// an incomplete or contradictory configuration, naming the flag.
    pub fn from_config(c: &ManagerConfig) -> anyhow::Result<Option<Directory>> {
        let Some(url) = c.ldap_url.clone() else {
            let set = [
                ("--ldap-bind-dn-template", c.ldap_bind_dn_template.is_some()),
                ("--ldap-bind-dn", c.ldap_bind_dn.is_some()),
                ("--ldap-group-base", c.ldap_group_base.is_some()),
                ("--ldap-role-map", !c.ldap_role_map.is_empty()),
            ];
            if let Some((flag, _)) = set.iter().find(|(_, on)| *on) {
                anyhow::bail!("{flag} is set but --ldap-url is not: name the directory with --ldap-url");
            }
            return Ok(None);
        };
        let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("ldap") => {}
            Some("ldaps") if c.ldap_starttls => {
                anyhow::bail!("--ldap-starttls needs an ldap:// --ldap-url (ldaps:// is TLS from the start)")
            }
            Some("ldaps") => {}
            _ => anyhow::bail!("--ldap-url {url:?} must start with ldap:// or ldaps://"),
        }
        let bind = match (&c.ldap_bind_dn_template, &c.ldap_bind_dn) {
            (Some(_), Some(_)) => anyhow::bail!(
                "--ldap-bind-dn-template and --ldap-bind-dn are both set: bind directly with the template, or search with a service account, not both"
            ),
            (None, None) => anyhow::bail!(
                "--ldap-url needs --ldap-bind-dn-template (bind as uid={{user}},...) or --ldap-bind-dn with --ldap-bind-password-file and --ldap-user-base (search for the user)"
            ),
            (Some(template), None) => {
                if !template.contains("{user}") {
                    anyhow::bail!("--ldap-bind-dn-template {template:?} must contain {{user}}");
                }
                BindMode::Template(template.clone())
            }
            (None, Some(bind_dn)) => {
                let file = c
                    .ldap_bind_password_file
                    .as_ref()
                    .context("--ldap-bind-dn needs --ldap-bind-password-file (the service account's password)")?;
                let bind_password = std::fs::read_to_string(file)
                    .with_context(|| format!("read --ldap-bind-password-file {}", file.display()))?
                    .trim_end_matches(['\r', '\n'])
                    .to_owned();
                if bind_password.is_empty() {
                    anyhow::bail!("--ldap-bind-password-file {} is empty", file.display());
                }
                let user_base =
                    c.ldap_user_base.clone().context("--ldap-bind-dn needs --ldap-user-base (where users are)")?;
                if !c.ldap_user_filter.contains("{user}") {
                    anyhow::bail!("--ldap-user-filter {:?} must contain {{user}}", c.ldap_user_filter);
                }
                BindMode::Search {
                    bind_dn: bind_dn.clone(),
                    bind_password,
                    user_base,
                    user_filter: c.ldap_user_filter.clone(),
                }
            }
        };
        let group_base = c.ldap_group_base.clone().context("--ldap-url needs --ldap-group-base (where groups are)")?;
        let role_map = parse_role_map(&c.ldap_role_map)?;
        if role_map.is_empty() {
            anyhow::bail!(
                "--ldap-url needs --ldap-role-map GROUP=ROLE[@CLUSTER] (e.g. drover-admins=admin): without it no directory user could sign in"
            );
        }
        let tls = c.ldap_ca_cert.as_deref().map(tls_config).transpose()?;
        if tls.is_some() && !c.ldap_starttls && scheme.as_deref() == Some("ldap") {
            anyhow::bail!("--ldap-ca-cert is set but the connection is plain: use ldaps:// or --ldap-starttls");
        }
        Ok(Some(Directory {
            url,
            starttls: c.ldap_starttls,
            tls,
            bind,
            group_base,
            group_filter: c.ldap_group_filter.clone(),
            role_map,
            cache_ttl: c.ldap_cache_ttl,
        }))
    }

    /// The grants `groups` carry, without duplicates.
    pub fn grants_for(&self, groups: &[String]) -> Vec<Grant> {
        let mut grants: Vec<Grant> = Vec::new();
        for (group, grant) in &self.role_map {
            if groups.iter().any(|g| g.eq_ignore_ascii_case(group)) && !grants.contains(grant) {
                grants.push(grant.clone());
            }
        }
        grants
    }

    /// Signs `user` in with the directory and records them with their
    /// mapped grants. Refusals are logged here with their reason.
    pub async fn sign_in(
        &self,
        store: &Store,
        user: &str,
        password: &str,
    ) -> anyhow::Result<Result<UserRecord, Refusal>> {
        // An empty password would be an unauthenticated bind, which
        // directories answer with success.
        if password.is_empty() || user.is_empty() || user.len() > MAX_NAME_LEN || user.chars().any(char::is_control) {
            return Ok(Err(Refusal::WrongPassword));
        }
        let (dn, groups) = match self.authenticate(user, password).await {
            Ok(Verdict::Authenticated { dn, groups }) => (dn, groups),
            Ok(Verdict::BadCredentials) => return Ok(Err(Refusal::WrongPassword)),
            Err(e) => {
                tracing::error!(user, error = %e, "directory sign-in refused: the directory could not be asked");
                return Ok(Err(Refusal::Directory));
            }
        };
        // Directories compare names without case: `Alice` and `alice` are
        // one person, so one Drover user.
        let name = user.to_lowercase();
        let grants = self.grants_for(&groups);
        if grants.is_empty() {
            tracing::warn!(user, dn, ?groups, "directory sign-in refused: the user is in no group of --ldap-role-map");
            // Grants the user had are gone with their groups.
            store.upsert_directory_user(&name, &[], false, now_millis()).await?;
            return Ok(Err(Refusal::NoMappedGroup));
        }
        let Some(rec) = store.upsert_directory_user(&name, &grants, true, now_millis()).await? else {
            tracing::warn!(
                user,
                dn,
                "directory sign-in refused: a local user of this name exists (without a password)"
            );
            return Ok(Err(Refusal::NoPassword));
        };
        if rec.disabled {
            return Ok(Err(Refusal::Disabled));
        }
        let shown: Vec<String> = grants.iter().map(Grant::to_string).collect();
        tracing::info!(user, dn, grants = ?shown, "directory user signed in");
        Ok(Ok(rec))
    }

    /// Asks the directory whether `password` is `user`'s, and their groups.
    pub async fn authenticate(&self, user: &str, password: &str) -> Result<Verdict, DirectoryError> {
        let mut ldap = self.connect().await?;
        let verdict = self.authenticate_on(&mut ldap, user, password).await;
        // The answer is known; a failing unbind changes nothing.
        let _ = ldap.unbind().await;
        verdict
    }

    async fn authenticate_on(&self, ldap: &mut Ldap, user: &str, password: &str) -> Result<Verdict, DirectoryError> {
        let dn = match &self.bind {
            BindMode::Template(template) => template.replace("{user}", &dn_escape(user)),
            BindMode::Search { bind_dn, bind_password, user_base, user_filter } => {
                self.service_bind(ldap, bind_dn, bind_password).await?;
                let filter = user_filter.replace("{user}", &ldap_escape(user));
                let entries = self.search(ldap, "user search", user_base, &filter, vec!["1.1"]).await?;
                match entries.len() {
                    0 => return Ok(Verdict::BadCredentials),
                    1 => entries.into_iter().next().map(|e| e.dn).unwrap_or_default(),
                    count => return Err(DirectoryError::Ambiguous { count, base: user_base.clone() }),
                }
            }
        };
        let bound = ldap.with_timeout(TIMEOUT).simple_bind(&dn, password).await.map_err(|e| self.unreachable(e))?;
        match bound.rc {
            0 => {}
            INVALID_CREDENTIALS => return Ok(Verdict::BadCredentials),
            _ => return Err(self.operation("user bind", bound.success().err())),
        }
        // Groups are read as the user, or in search mode as the service
        // account, which may see more.
        if let BindMode::Search { bind_dn, bind_password, .. } = &self.bind {
            self.service_bind(ldap, bind_dn, bind_password).await?;
        }
        let filter = self.group_filter.replace("{dn}", &ldap_escape(&dn)).replace("{user}", &ldap_escape(user));
        let entries = self.search(ldap, "group search", &self.group_base, &filter, vec!["cn"]).await?;
        let mut groups: Vec<String> = entries
            .into_iter()
            .flat_map(|e| {
                e.attrs
                    .into_iter()
                    .filter(|(k, _)| k.eq_ignore_ascii_case("cn"))
                    .flat_map(|(_, v)| v)
                    .collect::<Vec<_>>()
            })
            .collect();
        groups.sort();
        groups.dedup();
        Ok(Verdict::Authenticated { dn, groups })
    }

    async fn connect(&self) -> Result<Ldap, DirectoryError> {
        let mut settings = LdapConnSettings::new().set_conn_timeout(TIMEOUT).set_starttls(self.starttls);
        if let Some(tls) = &self.tls {
            settings = settings.set_config(tls.clone());
        }
        let (conn, ldap) = LdapConnAsync::with_settings(settings, &self.url).await.map_err(|e| self.unreachable(e))?;
        ldap3::drive!(conn);
        Ok(ldap)
    }

    async fn service_bind(&self, ldap: &mut Ldap, dn: &str, password: &str) -> Result<(), DirectoryError> {
        let service = |source| DirectoryError::ServiceBind { url: self.url.clone(), dn: dn.to_owned(), source };
        let res = ldap.with_timeout(TIMEOUT).simple_bind(dn, password).await.map_err(|e| self.unreachable(e))?;
        res.success().map(drop).map_err(service)
    }

    async fn search(
        &self,
        ldap: &mut Ldap,
        what: &str,
        base: &str,
        filter: &str,
        attrs: Vec<&str>,
    ) -> Result<Vec<SearchEntry>, DirectoryError> {
        let what = format!("{what} under {base} with {filter}");
        let found = ldap
            .with_timeout(TIMEOUT)
            .search(base, Scope::Subtree, filter, attrs)
            .await
            .map_err(|e| self.unreachable(e))?;
        let (entries, _) = found.success().map_err(|e| self.operation(&what, Some(e)))?;
        Ok(entries.into_iter().map(SearchEntry::construct).collect())
    }

    fn unreachable(&self, source: ldap3::LdapError) -> DirectoryError {
        match source {
            // An answer from the server, not a failure to reach it.
            e @ ldap3::LdapError::LdapResult { .. } => self.operation("request", Some(e)),
            source => DirectoryError::Unreachable { url: self.url.clone(), source },
        }
    }

    fn operation(&self, what: &str, source: Option<ldap3::LdapError>) -> DirectoryError {
        DirectoryError::Operation {
            what: what.to_owned(),
            url: self.url.clone(),
            source: source.unwrap_or(ldap3::LdapError::EndOfStream),
        }
    }
}

/// `GROUP=ROLE[@CLUSTER]` entries of `--ldap-role-map`.
fn parse_role_map(entries: &[String]) -> anyhow::Result<Vec<(String, Grant)>> {
    let mut map = Vec::new();
    for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
        let (group, grant) = entry
            .rsplit_once('=')
            .with_context(|| format!("--ldap-role-map entry {entry:?} is not GROUP=ROLE[@CLUSTER]"))?;
        let (group, grant_text) = (group.trim(), grant.trim());
        if group.is_empty() {
            anyhow::bail!("--ldap-role-map entry {entry:?} names no group");
        }
        let grant = Grant::parse(grant_text).with_context(|| {
            let roles: Vec<&str> = drover_api::users::Role::ALL.iter().map(|r| r.as_str()).collect();
            format!("--ldap-role-map entry {entry:?}: unknown role in {grant_text:?} (roles: {})", roles.join(", "))
        })?;
        if grant.cluster.is_some() && !grant.role.cluster_scoped() {
            anyhow::bail!(
                "--ldap-role-map entry {entry:?}: {} is granted globally only, not for a cluster",
                grant.role
            );
        }
        if grant.cluster.as_deref() == Some("") {
            anyhow::bail!("--ldap-role-map entry {entry:?} names no cluster after @");
        }
        map.push((group.to_owned(), grant));
    }
    Ok(map)
}

/// A TLS client configuration trusting only the CA certificates in `path`.
fn tls_config(path: &Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(path).with_context(|| format!("read --ldap-ca-cert {}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.with_context(|| format!("parse --ldap-ca-cert {}", path.display()))?;
        roots.add(cert).with_context(|| format!("use a certificate of --ldap-ca-cert {}", path.display()))?;
    }
    if roots.is_empty() {
        anyhow::bail!("--ldap-ca-cert {} holds no PEM certificate", path.display());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions for the directory")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_api::users::Role;

    fn map(entries: &[&str]) -> anyhow::Result<Vec<(String, Grant)>> {
        parse_role_map(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn role_map_parses_and_names_mistakes() {
        let m = map(&["drover-admins=admin", " prod-ops = operator@prod", "a=b=viewer"]).unwrap();
        assert_eq!(
            m,
            vec![
                ("drover-admins".into(), Grant::global(Role::Admin)),
                ("prod-ops".into(), Grant::on(Role::Operator, "prod")),
                ("a=b".into(), Grant::global(Role::Viewer)),
            ]
        );
        let err = |e: &[&str]| format!("{:#}", map(e).unwrap_err());
        assert!(err(&["ops"]).contains("is not GROUP=ROLE"), "{}", err(&["ops"]));
        assert!(err(&["ops=boss"]).contains("unknown role in \"boss\""));
        assert!(err(&["ops=admin@prod"]).contains("admin is granted globally only"));
        assert!(err(&["=admin"]).contains("names no group"));
        assert!(err(&["ops=operator@"]).contains("names no cluster"));
    }

    #[test]
    fn names_are_escaped_in_dns_and_filters() {
        assert_eq!(ldap_escape("*)(uid=*"), "\\2a\\29\\28uid=\\2a");
        assert_eq!(dn_escape("a,b+c"), "a\\2cb\\2bc");
    }
}
