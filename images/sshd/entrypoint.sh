#!/bin/sh
# Entry point of drover/sshd: generates host keys on first start, installs the
# authorized keys (and optionally a password and sudo rights) for one login
# user, then runs sshd in the foreground as PID 1 with its log on stderr.
#
#   SSH_USER                 login user, created if missing (default root)
#   SSH_AUTHORIZED_KEYS      public keys, one per line
#   SSH_AUTHORIZED_KEYS_FILE a mounted file with public keys
#                            (default /etc/drover-sshd/authorized_keys)
#   SSH_PASSWORD             enables password login for SSH_USER with this password
#   SSH_SUDO                 1: SSH_USER may sudo without a password
#   DROVER_SSHD_INIT         systemd: exec /sbin/init (drover/sshd-systemd),
#                            which starts sshd as ssh.service
set -eu

user=${SSH_USER:-root}
keys_file=${SSH_AUTHORIZED_KEYS_FILE:-/etc/drover-sshd/authorized_keys}

# Missing host keys only: a restarted container keeps its identity.
ssh-keygen -A >/dev/null

if ! id "$user" >/dev/null 2>&1; then
  useradd --create-home --shell /bin/bash "$user"
fi
home=$(getent passwd "$user" | cut -d: -f6)
group=$(id -gn "$user")

keys=
if [ -n "${SSH_AUTHORIZED_KEYS:-}" ]; then
  keys=$(printf '%s\n' "$SSH_AUTHORIZED_KEYS")
fi
if [ -r "$keys_file" ]; then
  keys=$(printf '%s\n%s\n' "$keys" "$(cat "$keys_file")")
fi
if [ -n "$(printf '%s' "$keys" | tr -d '[:space:]')" ]; then
  mkdir -p "$home/.ssh"
  printf '%s\n' "$keys" | sed '/^[[:space:]]*$/d' > "$home/.ssh/authorized_keys"
  chmod 700 "$home/.ssh"
  chmod 600 "$home/.ssh/authorized_keys"
  chown -R "$user:$group" "$home/.ssh"
fi

password_auth=no
if [ -n "${SSH_PASSWORD:-}" ]; then
  printf '%s:%s\n' "$user" "$SSH_PASSWORD" | chpasswd
  password_auth=yes
elif [ "$user" != root ]; then
  # A locked account ("!") is refused even with a key; "*" is not.
  usermod -p '*' "$user"
fi
if [ "${SSH_SUDO:-0}" = 1 ] && [ "$user" != root ]; then
  printf '%s ALL=(ALL) NOPASSWD:ALL\n' "$user" > /etc/sudoers.d/drover-sshd
  chmod 440 /etc/sudoers.d/drover-sshd
fi

cat > /etc/ssh/sshd_config.d/drover.conf <<CONF
PasswordAuthentication $password_auth
KbdInteractiveAuthentication no
PermitRootLogin $( [ "$user" = root ] && echo prohibit-password || echo no )
UseDNS no
CONF
if [ "$user" = root ] && [ "$password_auth" = yes ]; then
  sed -i 's/^PermitRootLogin .*/PermitRootLogin yes/' /etc/ssh/sshd_config.d/drover.conf
fi

# The fingerprints, for clients that pin them instead of trusting on first use.
for key in /etc/ssh/ssh_host_*_key.pub; do
  echo "host key: $(ssh-keygen -l -f "$key")"
done
echo "sshd: user $user, password login $password_auth"

if [ "${DROVER_SSHD_INIT:-}" = systemd ]; then
  exec /sbin/init
fi
exec /usr/sbin/sshd -D -e
