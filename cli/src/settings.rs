//! Where a command's manager, user, trust and credentials come from: flags
//! and `DROVER_*` variables first, then the config file `drover login` wrote
//! (`$DROVER_CONFIG`, else `~/.config/drover/config.toml`), then defaults.
//!
//! The file belongs to the manager it names: when `--url` names another
//! one, none of it applies (a pin for one manager must not be used for
//! another). It holds no secret; it is written 0600 all the same.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use reqwest::Url;
use serde::{Deserialize, Serialize};

use crate::cli::GlobalArgs;
use crate::manager_client::{CredentialOptions, ManagerClient, resolve_credentials};
use crate::trust::{Fingerprint, Trust};

/// The manager used when neither a flag nor the config file names one.
pub const DEFAULT_URL: &str = "http://127.0.0.1:7180";
/// The user signed in as when neither a flag nor the config file names one.
pub const DEFAULT_USER: &str = "admin";

/// The contents of the config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub url: Option<String>,
    pub user: Option<String>,
    /// The manager's CA fingerprint, `sha256:...`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_pin: Option<String>,
    /// A CA certificate file, absolute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
    /// A file holding the user's password, absolute (the password itself is
    /// never written).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
}

/// The config file's path and, if it exists, its contents.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: Option<PathBuf>,
    pub file: Option<ConfigFile>,
}

impl Config {
    /// `--config` / `$DROVER_CONFIG`, else `$XDG_CONFIG_HOME/drover/config.toml`,
    /// else `$HOME/.config/drover/config.toml`. A missing file is no error.
    pub fn locate(flag: Option<&Path>) -> anyhow::Result<Config> {
        let path = match flag.filter(|p| !p.as_os_str().is_empty()) {
            Some(p) => Some(p.to_owned()),
            None => default_path(),
        };
        let file = match &path {
            Some(p) => ConfigFile::load(p)?,
            None => None,
        };
        Ok(Config { path, file })
    }

    /// The file's settings if they are for `url` (they are when no URL was given).
    fn for_url(&self, url: Option<&Url>) -> Option<&ConfigFile> {
        let file = self.file.as_ref()?;
        match url {
            None => Some(file),
            Some(url) => {
                let saved = file.url.as_deref().and_then(|u| Url::parse(u).ok())?;
                same_manager(&saved, url).then_some(file)
            }
        }
    }
}

fn default_path() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").filter(|v| !v.is_empty())?).join(".config"),
    };
    Some(base.join("drover").join("config.toml"))
}

/// Whether two URLs name the same manager (a trailing slash aside).
fn same_manager(a: &Url, b: &Url) -> bool {
    a.as_str().trim_end_matches('/') == b.as_str().trim_end_matches('/')
}

impl ConfigFile {
    /// Reads the file; `None` if it does not exist.
    pub fn load(path: &Path) -> anyhow::Result<Option<ConfigFile>> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("read config file {}", path.display())),
        };
        let file: ConfigFile =
            toml::from_str(&text).with_context(|| format!("config file {} is not valid", path.display()))?;
        Ok(Some(file))
    }

    /// Writes the file with mode 0600 (its directory 0700 if created),
    /// replacing it whole.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("create directory {}", dir.display()))?;
        let body = toml::to_string(self).context("format the config file")?;
        let text = format!("# Written by `drover login`; flags and DROVER_* variables take precedence.\n{body}");
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("config.toml");
        let tmp = dir.join(format!(".{name}.tmp"));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("create {}", tmp.display()))?;
        f.write_all(text.as_bytes()).and_then(|()| f.sync_all()).with_context(|| format!("write {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("write config file {}", path.display()))?;
        Ok(())
    }
}

/// What a command runs with, after flags, variables and the config file.
#[derive(Debug)]
pub struct Resolved {
    pub url: Url,
    pub trust: Trust,
    pub credentials: CredentialOptions,
}

/// Resolves the manager (`url_override` is `drover login`'s argument), the
/// trust and the credential options.
pub fn resolve(g: &GlobalArgs, config: &Config, url_override: Option<&Url>) -> anyhow::Result<Resolved> {
    let asked = url_override.or(g.url.as_ref());
    let file = config.for_url(asked);
    let url = match (asked, file.and_then(|f| f.url.as_deref())) {
        (Some(u), _) => u.clone(),
        (None, Some(saved)) => crate::cli::parse_base_url(saved).map_err(|e| {
            anyhow::anyhow!("config file {}: url: {e}", config.path.as_deref().unwrap_or(Path::new("?")).display())
        })?,
        (None, None) => Url::parse(DEFAULT_URL).context("default URL")?,
    };
    let trust = match (&g.ca_pin, &g.ca_cert) {
        (Some(pin), _) => Trust::Pin(*pin),
        (None, Some(path)) => Trust::ca_cert(path)?,
        (None, None) => match file {
            Some(ConfigFile { ca_pin: Some(pin), .. }) => Trust::Pin(pin.parse::<Fingerprint>().map_err(|e| {
                anyhow::anyhow!(
                    "config file {}: ca_pin: {e}",
                    config.path.as_deref().unwrap_or(Path::new("?")).display()
                )
            })?),
            Some(ConfigFile { ca_cert: Some(path), .. }) => Trust::ca_cert(path).with_context(|| {
                format!("config file {}", config.path.as_deref().unwrap_or(Path::new("?")).display())
            })?,
            _ => Trust::System,
        },
    };
    if url.scheme() == "http" && trust != Trust::System {
        bail!(
            "--ca-pin and --ca-cert verify an HTTPS manager, but {} is plain HTTP; use https://",
            url.as_str().trim_end_matches('/')
        );
    }
    let credentials = CredentialOptions {
        user: g.user.clone().or_else(|| file.and_then(|f| f.user.clone())).unwrap_or_else(|| DEFAULT_USER.to_owned()),
        password: g.password.clone(),
        password_file: g.password_file.clone().or_else(|| file.and_then(|f| f.password_file.clone())),
        api_token: g.api_token.clone(),
    };
    Ok(Resolved { url, trust, credentials })
}

impl Resolved {
    /// A client of the resolved manager; `default_password_file` is tried
    /// when no credential is given.
    pub fn client(&self, default_password_file: &Path) -> anyhow::Result<ManagerClient> {
        let credentials = resolve_credentials(&self.credentials, default_password_file)?;
        ManagerClient::with_trust(self.url.clone(), credentials, self.trust.clone())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::Cli;

    fn global(args: &[&str]) -> GlobalArgs {
        Cli::try_parse_from(["drover"].iter().chain(args).chain(&["whoami"])).unwrap().global
    }

    #[test]
    fn the_file_applies_to_its_own_manager_only() {
        let pin = Fingerprint::of_der(b"ca");
        let file = ConfigFile {
            url: Some("https://m.example:7180".into()),
            user: Some("alice".into()),
            ca_pin: Some(pin.to_string()),
            ..Default::default()
        };
        let config = Config { path: Some("/x/config.toml".into()), file: Some(file) };

        let r = resolve(&global(&[]), &config, None).unwrap();
        assert_eq!(r.url.as_str(), "https://m.example:7180/");
        assert_eq!(r.trust, Trust::Pin(pin));
        assert_eq!(r.credentials.user, "alice");

        let r = resolve(&global(&["--url", "https://m.example:7180/", "--user", "bob"]), &config, None).unwrap();
        assert_eq!((r.trust, r.credentials.user.as_str()), (Trust::Pin(pin), "bob"));

        // Another manager: nothing of the file.
        let r = resolve(&global(&["--url", "https://other:7180"]), &config, None).unwrap();
        assert_eq!((r.trust, r.credentials.user.as_str()), (Trust::System, "admin"));

        let none = Config { path: None, file: None };
        let r = resolve(&global(&[]), &none, None).unwrap();
        assert_eq!(r.url.as_str(), "http://127.0.0.1:7180/");

        let err = resolve(&global(&["--ca-pin", &pin.to_string()]), &none, None).unwrap_err().to_string();
        assert!(err.contains("is plain HTTP; use https://"), "{err}");
    }

    #[test]
    fn saved_with_mode_0600_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new").join("config.toml");
        let file = ConfigFile { url: Some("https://m:1".into()), user: Some("a".into()), ..Default::default() };
        file.save(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(ConfigFile::load(&path).unwrap(), Some(file));
        assert_eq!(ConfigFile::load(&dir.path().join("missing")).unwrap(), None);
        std::fs::write(&path, "url = 'https://m'\npassword = 'x'\n").unwrap();
        let err = format!("{:#}", ConfigFile::load(&path).unwrap_err());
        assert!(err.contains("is not valid") && err.contains("unknown field `password`"), "{err}");
    }
}
