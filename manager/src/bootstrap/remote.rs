//! What bootstrap runs on a host: small POSIX shell scripts (no bash, no
//! Python: a minimal image has `sh` and coreutils), the systemd unit, and the
//! supervisor used where systemd does not run. Kept apart from the SSH code so
//! every script is tested as text and, in the end-to-end test, for real.
//!
//! Layout on the host:
//!
//! | path                                   | what                                     |
//! |----------------------------------------|------------------------------------------|
//! | `/usr/local/bin/drover-agent`          | the agent binary (0755)                  |
//! | `/etc/drover-agent/agent.env`          | `DROVER_MANAGER`, `DROVER_TOKEN` (0600); the token line is removed after enrollment |
//! | `/etc/systemd/system/drover-agent.service` | unit, where systemd runs             |
//! | `/usr/local/lib/drover-agent/supervise` | restart loop, where it does not         |
//! | `/var/log/drover-agent.log`            | the agent's log under the supervisor     |
//! | `/var/lib/drover-agent`                | the agent's identity (its data dir)      |

use super::ssh::shell_quote;

pub const AGENT_BIN: &str = "/usr/local/bin/drover-agent";
pub const ENV_FILE: &str = "/etc/drover-agent/agent.env";
pub const UNIT_FILE: &str = "/etc/systemd/system/drover-agent.service";
pub const SUPERVISOR: &str = "/usr/local/lib/drover-agent/supervise";
pub const LOG_FILE: &str = "/var/log/drover-agent.log";
pub const DATA_DIR: &str = "/var/lib/drover-agent";

/// How a command gets root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privilege {
    /// Logged in as root.
    Root,
    /// `sudo -n`: passwordless sudo (key logins).
    SudoNoPassword,
    /// `sudo -S`: the login password is written to sudo's stdin.
    SudoWithPassword,
}

impl Privilege {
    /// `script` as one command line run with root rights.
    pub fn wrap(self, script: &str) -> String {
        let quoted = shell_quote(script);
        match self {
            Privilege::Root => format!("sh -c {quoted}"),
            Privilege::SudoNoPassword => format!("sudo -n sh -c {quoted}"),
            Privilege::SudoWithPassword => format!("sudo -S -p '' sh -c {quoted}"),
        }
    }
}

/// What `DETECT` reports about a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    pub arch: String,
    pub kernel: String,
    pub os: String,
    pub systemd: bool,
    pub uid: u32,
}

/// Prints `key=value` lines about the host; runs as the login user.
pub const DETECT: &str = r#"
echo "arch=$(uname -m)"
echo "kernel=$(uname -s) $(uname -r)"
os=unknown
if [ -r /etc/os-release ]; then os=$(. /etc/os-release && echo "${PRETTY_NAME:-$NAME}"); fi
echo "os=$os"
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then echo systemd=yes; else echo systemd=no; fi
echo "uid=$(id -u)"
"#;

/// Parses `DETECT`'s output.
pub fn parse_detect(out: &str) -> Result<Detected, String> {
    let get = |key: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
            .map(|v| v.trim().to_owned())
            .ok_or_else(|| format!("the host did not report {key} (output: {:?})", out.trim()))
    };
    Ok(Detected {
        arch: get("arch")?,
        kernel: get("kernel")?,
        os: get("os")?,
        systemd: get("systemd")? == "yes",
        uid: get("uid")?.parse().map_err(|_| format!("unexpected uid in {:?}", out.trim()))?,
    })
}

/// The CPU architecture an ELF binary is built for, as `uname -m` names it.
pub fn elf_arch(header: &[u8]) -> Option<&'static str> {
    if header.len() < 20 || &header[..4] != b"\x7fELF" {
        return None;
    }
    let little = header[5] == 1;
    let machine = if little {
        u16::from_le_bytes([header[18], header[19]])
    } else {
        u16::from_be_bytes([header[18], header[19]])
    };
    Some(match machine {
        0x3e => "x86_64",
        0xb7 => "aarch64",
        0xf3 => "riscv64",
        0x15 => "ppc64le",
        0x16 => "s390x",
        0x28 => "armv7l",
        0x03 => "i686",
        _ => return None,
    })
}

/// Makes a private staging directory and prints its path; run as the login
/// user before the uploads.
pub const MAKE_STAGING: &str = "umask 077 && mktemp -d /tmp/drover-bootstrap.XXXXXX";

/// Writes stdin to `path` (in the staging directory) and prints its SHA-256.
pub fn receive_file(path: &str) -> String {
    let p = shell_quote(path);
    format!("umask 077 && cat > {p} && sha256sum {p}")
}

/// Installs the staged agent and its environment file, then checks that the
/// binary runs on this host. Run with root rights.
pub fn install(staging: &str) -> String {
    let d = shell_quote(staging);
    format!(
        r#"set -eu
d={d}
mkdir -p /usr/local/bin /etc/drover-agent /usr/local/lib/drover-agent
chmod 0700 /etc/drover-agent
cp "$d/drover-agent" {AGENT_BIN}.new
chmod 0755 {AGENT_BIN}.new
mv -f {AGENT_BIN}.new {AGENT_BIN}
cp "$d/agent.env" {ENV_FILE}.new
chmod 0600 {ENV_FILE}.new
mv -f {ENV_FILE}.new {ENV_FILE}
rm -rf "$d"
{AGENT_BIN} --version"#
    )
}

/// The systemd unit. `KillMode=process`: stopping or restarting the agent
/// leaves the roles it supervises running; the new agent adopts them.
pub fn systemd_unit() -> String {
    format!(
        "[Unit]\n\
         Description=Drover agent\n\
         Documentation=https://example.invalid/drover/docs/agent.md\n\
         After=network-online.target\n\
         Wants=network-online.target\n\
         \n\
         [Service]\n\
         EnvironmentFile={ENV_FILE}\n\
         ExecStart={AGENT_BIN}\n\
         Restart=always\n\
         RestartSec=2\n\
         KillMode=process\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n"
    )
}

/// Starts (or restarts) the agent as a systemd service. Root rights.
pub fn start_systemd() -> String {
    format!(
        "set -eu\ncat > {UNIT_FILE} <<'UNIT'\n{}UNIT\nsystemctl daemon-reload\nsystemctl enable drover-agent >/dev/null 2>&1\nsystemctl restart drover-agent\nsystemctl is-active drover-agent",
        systemd_unit()
    )
}

/// The supervisor where systemd does not run: a restart loop in its own
/// session, detached from the SSH connection, logging to `LOG_FILE`.
pub fn supervisor_script() -> String {
    format!(
        r#"#!/bin/sh
# Keeps drover-agent running on a host without systemd (written by Drover's
# SSH bootstrap): restarts it 2 s after it exits. Stop both with
#   kill $(cat /run/drover-agent-supervise.pid) && pkill -x drover-agent
echo $$ > /run/drover-agent-supervise.pid
set -a
. {ENV_FILE}
set +a
while :; do
  {AGENT_BIN} >> {LOG_FILE} 2>&1
  echo "drover-agent exited with status $?; restarting in 2 s" >> {LOG_FILE}
  sleep 2
  set -a
  . {ENV_FILE}
  set +a
done
"#
    )
}

/// Installs the supervisor and (re)starts it: an earlier supervisor and agent
/// are stopped first (roles keep running and are adopted). Root rights.
pub fn start_supervised() -> String {
    format!(
        r#"set -eu
cat > {SUPERVISOR} <<'SUPERVISE'
{}SUPERVISE
chmod 0755 {SUPERVISOR}
if [ -f /run/drover-agent-supervise.pid ]; then kill "$(cat /run/drover-agent-supervise.pid)" 2>/dev/null || true; fi
for p in $(ps -eo pid=,comm= | awk '$2 == "drover-agent" {{print $1}}'); do kill "$p" 2>/dev/null || true; done
touch {LOG_FILE}
chmod 0640 {LOG_FILE}
setsid {SUPERVISOR} < /dev/null > /dev/null 2>&1 &
sleep 1
ps -eo comm= | grep -qx drover-agent && echo running"#,
        supervisor_script()
    )
}

/// Prints the host id once the agent has enrolled; nothing before. Root rights.
pub fn enrolled_host_id() -> String {
    format!("cat {DATA_DIR}/host-id 2>/dev/null || true")
}

/// The last lines of the agent's log, for an error message. Root rights.
pub fn log_tail(systemd: bool) -> String {
    if systemd {
        "journalctl -u drover-agent -n 8 --no-pager -o cat 2>&1 || true".to_owned()
    } else {
        format!("tail -n 8 {LOG_FILE} 2>&1 || true")
    }
}

/// Removes the one-time token from the environment file after enrollment.
pub fn forget_token() -> String {
    format!("sed -i '/^DROVER_TOKEN=/d' {ENV_FILE}")
}

/// The environment file: values go in unquoted, so they must be plain.
pub fn env_file(manager_url: &str, token: &str) -> Result<String, String> {
    for (name, v) in [("manager URL", manager_url), ("token", token)] {
        if v.is_empty() || v.chars().any(|c| c.is_whitespace() || "'\"\\$`#".contains(c)) {
            return Err(format!("the {name} contains characters an environment file cannot hold"));
        }
    }
    Ok(format!("DROVER_MANAGER={manager_url}\nDROVER_TOKEN={token}\nDROVER_DATA_DIR={DATA_DIR}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detect_output_parses() {
        let d =
            parse_detect("arch=x86_64\nkernel=Linux 6.1.0\nos=Debian GNU/Linux 12 (bookworm)\nsystemd=no\nuid=1000\n")
                .unwrap();
        assert_eq!(
            d,
            Detected {
                arch: "x86_64".into(),
                kernel: "Linux 6.1.0".into(),
                os: "Debian GNU/Linux 12 (bookworm)".into(),
                systemd: false,
                uid: 1000
            }
        );
        let e = parse_detect("arch=x86_64\n").unwrap_err();
        assert!(e.contains("did not report kernel"), "{e}");
    }

    #[test]
    fn detect_runs_in_a_real_shell() {
        let out = std::process::Command::new("sh").arg("-c").arg(DETECT).output().unwrap();
        assert!(out.status.success());
        let d = parse_detect(&String::from_utf8_lossy(&out.stdout)).unwrap();
        assert_eq!(d.arch, std::env::consts::ARCH);
        assert!(d.kernel.starts_with("Linux "), "{d:?}");
    }

    #[test]
    fn elf_machine() {
        let own = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(elf_arch(&own[..64]), Some(std::env::consts::ARCH));
        assert_eq!(elf_arch(b"#!/bin/sh\n echo not a binary"), None);
        let mut arm = own[..64].to_vec();
        arm[18..20].copy_from_slice(&0xb7u16.to_le_bytes());
        assert_eq!(elf_arch(&arm), Some("aarch64"));
    }

    #[test]
    fn privilege_wrapping_quotes_the_script() {
        assert_eq!(Privilege::Root.wrap("echo 'hi'"), "sh -c 'echo '\\''hi'\\'''");
        assert!(Privilege::SudoNoPassword.wrap("id -u").starts_with("sudo -n sh -c "));
        assert!(Privilege::SudoWithPassword.wrap("id -u").starts_with("sudo -S -p '' sh -c "));
        let out =
            std::process::Command::new("sh").arg("-c").arg(Privilege::Root.wrap("echo \"a b\" 'c'")).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "a b c\n");
    }

    #[test]
    fn env_file_refuses_shell_syntax() {
        let f = env_file("https://10.0.0.1:7182", "drv1.abc.def").unwrap();
        assert!(f.contains("DROVER_MANAGER=https://10.0.0.1:7182\nDROVER_TOKEN=drv1.abc.def\n"));
        assert!(env_file("https://x:1/$(reboot)", "t").is_err());
        assert!(env_file("https://x:1", "a b").is_err());
    }

    #[test]
    fn unit_and_scripts_are_well_formed() {
        let unit = systemd_unit();
        assert!(unit.contains("KillMode=process") && unit.contains("Restart=always"));
        assert!(start_systemd().ends_with("systemctl is-active drover-agent"));
        // The scripts are valid shell.
        for script in [start_systemd(), start_supervised(), install("/tmp/x"), supervisor_script(), forget_token()] {
            let out = std::process::Command::new("sh").arg("-n").arg("-c").arg(&script).output().unwrap();
            assert!(out.status.success(), "{script}\n{}", String::from_utf8_lossy(&out.stderr));
        }
    }
}
