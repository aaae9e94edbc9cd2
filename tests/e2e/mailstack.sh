#!/usr/bin/env bash
# A real mail provider on loopback for the end-to-end tests: Postfix and Dovecot, from Debian's
# packages, started directly (no systemd needed), reachable only on 127.0.0.1.
#
#   bash tests/e2e/mailstack.sh setup              install if missing, configure, start (idempotent)
#   bash tests/e2e/mailstack.sh start [WHAT]       start postfix, dovecot, dovecot-auth or all (default)
#   bash tests/e2e/mailstack.sh stop  [WHAT]       stop postfix, dovecot, dovecot-auth or all (default)
#   bash tests/e2e/mailstack.sh status             what runs and what listens; exit 1 if anything is down
#
# What it serves (run as root; the ports are privileged):
#   SMTP        127.0.0.1:25    accepts mail for backchannel.test, STARTTLS offered
#   submission  127.0.0.1:587   STARTTLS required, SASL AUTH (PLAIN, LOGIN) checked by Dovecot
#   IMAP        127.0.0.1:143   STARTTLS;  IMAPS 127.0.0.1:993
# Users probe@backchannel.test and control@backchannel.test, Maildir under /var/vmail, delivered by
# Postfix's virtual(8) agent and read by Dovecot. Mail to any other domain bounces: nothing leaves.
#
# Dovecot runs as two instances so the failure drills mean something: "dovecot-auth" answers only
# Postfix's SASL questions, "dovecot" is the mailbox server (IMAP). `stop dovecot` takes the mailbox
# away while submission keeps working, the way a provider's receiving side fails while sending
# still answers. The tests read host, ports, users, password and CA from $CONF_DIR/stack.env.
set -euo pipefail

CONF_DIR=${MAILSTACK_CONF_DIR:-/etc/backchannel-mailstack}
LOG_DIR=/var/log/backchannel-mailstack
VMAIL=/var/vmail
DOMAIN=backchannel.test
USERS=(probe control)
PASSWORD=${MAILSTACK_PASSWORD:-backchannel-probe-pw}
MARKER="# managed by backchannel tests/e2e/mailstack.sh"
IMAP_CONF=$CONF_DIR/dovecot-imap.conf
AUTH_CONF=$CONF_DIR/dovecot-auth.conf
IMAP_BASE=/run/backchannel-dovecot
AUTH_BASE=/run/backchannel-dovecot-auth

say() { printf 'mailstack: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

need_root() {
  [ "$(id -u)" -eq 0 ] || die "run as root (sudo bash $0 $*): it installs packages and binds ports 25/587/143/993"
}

install_packages() {
  local missing=()
  command -v postfix >/dev/null || missing+=(postfix)
  command -v dovecot >/dev/null || missing+=(dovecot-core)
  [ -e /usr/lib/dovecot/imap ] || missing+=(dovecot-imapd)
  command -v openssl >/dev/null || missing+=(openssl)
  [ ${#missing[@]} -eq 0 ] && return
  say "installing ${missing[*]}"
  # "No configuration": the package must not write a main.cf or start anything; we do both
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

make_certificate() {
  local cert=$CONF_DIR/tls/cert.pem key=$CONF_DIR/tls/key.pem
  # renewed when missing or within 30 days of expiry, so the SMTP check never warns about it
  if [ -s "$cert" ] && openssl x509 -in "$cert" -noout -checkend $((30 * 86400)) >/dev/null; then
    return
  fi
  install -d -m 0755 "$CONF_DIR/tls"
  openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=localhost" \
    -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
    -keyout "$key" -out "$cert" 2>/dev/null
  chmod 0600 "$key"
  chmod 0644 "$cert"
}

make_users() {
  getent group vmail >/dev/null || groupadd --system vmail
  getent passwd vmail >/dev/null ||
    useradd --system --gid vmail --home-dir "$VMAIL" --no-create-home --shell /usr/sbin/nologin vmail
  install -d -o vmail -g vmail -m 0750 "$VMAIL"
  : >"$CONF_DIR/users.new"
  : >"$CONF_DIR/vmailbox.new"
  for user in "${USERS[@]}"; do
    # a throwaway account on loopback: a plain password keeps `setup` byte-for-byte idempotent
    echo "$user@$DOMAIN:{PLAIN}$PASSWORD" >>"$CONF_DIR/users.new"
    echo "$user@$DOMAIN $DOMAIN/$user/Maildir/" >>"$CONF_DIR/vmailbox.new"
  done
  install -m 0640 -g dovecot "$CONF_DIR/users.new" "$CONF_DIR/users"
  install -m 0644 "$CONF_DIR/vmailbox.new" "$CONF_DIR/vmailbox"
  rm -f "$CONF_DIR/users.new" "$CONF_DIR/vmailbox.new"
}

configure_postfix() {
  local main=/etc/postfix/main.cf uid gid
  if [ -e "$main" ] && ! grep -qF "$MARKER" "$main" && [ "${MAILSTACK_FORCE:-0}" != 1 ]; then
    die "$main exists and is not ours: set MAILSTACK_FORCE=1 to replace it with the test stack's"
  fi
  uid=$(id -u vmail)
  gid=$(id -g vmail)
  cat >"$main" <<EOF
$MARKER
compatibility_level = 3.6
myhostname = mail.$DOMAIN
mydomain = $DOMAIN
myorigin = \$mydomain
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
# nothing leaves this machine: every other domain bounces at once
default_transport = error:the backchannel test stack does not relay
relay_transport = error:the backchannel test stack does not relay
virtual_mailbox_domains = $DOMAIN
virtual_mailbox_base = $VMAIL
virtual_mailbox_maps = texthash:$CONF_DIR/vmailbox
virtual_minimum_uid = $uid
virtual_uid_maps = static:$uid
virtual_gid_maps = static:$gid
smtpd_tls_cert_file = $CONF_DIR/tls/cert.pem
smtpd_tls_key_file = $CONF_DIR/tls/key.pem
smtpd_tls_security_level = may
smtpd_sasl_type = dovecot
smtpd_sasl_path = private/auth
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination
# no syslog in containers: postlogd writes here instead
maillog_file = $LOG_DIR/postfix.log
# a test stack retries deferred mail quickly, so a drill's backlog clears within seconds
queue_run_delay = 5s
minimal_backoff_time = 5s
maximal_backoff_time = 30s
EOF
  postconf -M "submission/inet=submission inet n - n - - smtpd"
  postconf -P "submission/inet/smtpd_tls_security_level=encrypt" \
    "submission/inet/smtpd_sasl_auth_enable=yes" \
    "submission/inet/smtpd_tls_auth_only=yes" \
    "submission/inet/smtpd_recipient_restrictions=permit_sasl_authenticated,reject"
  # started without the init script, which is what copies /etc files into a chroot
  postconf -F '*/*/chroot = n'
  postfix check
}

dovecot_common() {
  cat <<EOF
$MARKER
listen = 127.0.0.1
log_path = $LOG_DIR/$1.log
auth_mechanisms = plain login
# the tests refuse passwords on purpose: no growing penalty for 127.0.0.1, no 2 s delay per refusal
auth_failure_delay = 0
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
passdb {
  driver = passwd-file
  args = $CONF_DIR/users
}
userdb {
  driver = static
  args = uid=vmail gid=vmail home=$VMAIL/%d/%n
}
EOF
}

configure_dovecot() {
  {
    dovecot_common dovecot-imap
    cat <<EOF
instance_name = backchannel-imap
base_dir = $IMAP_BASE
protocols = imap
first_valid_uid = $(id -u vmail)
mail_location = maildir:$VMAIL/%d/%n/Maildir
ssl = yes
ssl_cert = <$CONF_DIR/tls/cert.pem
ssl_key = <$CONF_DIR/tls/key.pem
service imap-login {
  inet_listener imap {
    port = 143
  }
  inet_listener imaps {
    port = 993
    ssl = yes
  }
}
EOF
  } >"$IMAP_CONF"
  {
    dovecot_common dovecot-auth
    cat <<EOF
instance_name = backchannel-auth
base_dir = $AUTH_BASE
protocols = none
ssl = no
service auth {
  unix_listener /var/spool/postfix/private/auth {
    mode = 0660
    user = postfix
    group = postfix
  }
}
EOF
  } >"$AUTH_CONF"
  doveconf -c "$IMAP_CONF" -n >/dev/null
  doveconf -c "$AUTH_CONF" -n >/dev/null
}

write_env() {
  cat >"$CONF_DIR/stack.env" <<EOF
MAILSTACK_HOST=127.0.0.1
MAILSTACK_SMTP_PORT=25
MAILSTACK_SUBMISSION_PORT=587
MAILSTACK_IMAP_PORT=143
MAILSTACK_IMAPS_PORT=993
MAILSTACK_USER=probe@$DOMAIN
MAILSTACK_CONTROL_USER=control@$DOMAIN
MAILSTACK_PASSWORD=$PASSWORD
MAILSTACK_CA_FILE=$CONF_DIR/tls/cert.pem
EOF
  chmod 0644 "$CONF_DIR/stack.env"
}

dovecot_running() { # $1: base dir
  [ -s "$1/master.pid" ] && kill -0 "$(cat "$1/master.pid")" 2>/dev/null
}

postfix_running() { postfix status >/dev/null 2>&1; }

wait_port() { # $1: port; the daemons fork before they listen
  local deadline=$((SECONDS + 20))
  until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || die "nothing listens on 127.0.0.1:$1 after 20s (see $LOG_DIR)"
    sleep 0.2
  done
}

wait_closed() { # $1: port; stop commands return before the daemons have let go of their sockets
  local deadline=$((SECONDS + 20))
  while (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || die "127.0.0.1:$1 still listening 20s after stopping"
    sleep 0.2
  done
}

start_one() {
  case $1 in
    postfix) postfix_running || postfix start </dev/null >/dev/null 2>&1 || die "postfix start failed (see $LOG_DIR/postfix.log)"
      wait_port 25; wait_port 587 ;;
    # the daemons must not inherit our stdout/stderr: a caller reading them would wait forever
    dovecot) dovecot_running "$IMAP_BASE" || dovecot -c "$IMAP_CONF" </dev/null >/dev/null 2>&1
      wait_port 143; wait_port 993 ;;
    dovecot-auth) dovecot_running "$AUTH_BASE" || dovecot -c "$AUTH_CONF" </dev/null >/dev/null 2>&1 ;;
    *) die "unknown component $1 (postfix, dovecot, dovecot-auth, all)" ;;
  esac
}

stop_one() {
  case $1 in
    postfix) if postfix_running; then postfix stop >/dev/null 2>&1; fi
      wait_closed 25; wait_closed 587 ;;
    dovecot) if dovecot_running "$IMAP_BASE"; then doveadm -c "$IMAP_CONF" stop; fi
      wait_closed 143; wait_closed 993 ;;
    dovecot-auth) if dovecot_running "$AUTH_BASE"; then doveadm -c "$AUTH_CONF" stop; fi
      for _ in $(seq 100); do dovecot_running "$AUTH_BASE" || break; sleep 0.2; done ;;
    *) die "unknown component $1 (postfix, dovecot, dovecot-auth, all)" ;;
  esac
}

components() { # $1: postfix, dovecot, dovecot-auth or all; auth first so submission can ask it
  if [ "${1:-all}" = all ]; then echo dovecot-auth dovecot postfix; else echo "$1"; fi
}

status() {
  local down=0
  if postfix_running; then say "postfix: running"; else say "postfix: stopped"; down=1; fi
  if dovecot_running "$AUTH_BASE"; then say "dovecot-auth: running"; else say "dovecot-auth: stopped"; down=1; fi
  if dovecot_running "$IMAP_BASE"; then say "dovecot: running"; else say "dovecot: stopped"; down=1; fi
  for port in 25 587 143 993; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then say "127.0.0.1:$port listening"
    else say "127.0.0.1:$port closed"; down=1; fi
  done
  return $down
}

main() {
  local command=${1:-}
  case $command in
    setup)
      need_root setup
      install_packages
      install -d -m 0755 "$CONF_DIR" "$LOG_DIR"
      make_certificate
      make_users
      configure_postfix
      configure_dovecot
      write_env
      for what in $(components all); do stop_one "$what"; done
      for what in $(components all); do start_one "$what"; done
      say "ready: SMTP 127.0.0.1:25, submission :587, IMAP :143/:993; settings in $CONF_DIR/stack.env" ;;
    start)
      need_root start
      [ -s "$CONF_DIR/stack.env" ] || die "not set up yet: run bash $0 setup"
      for what in $(components "${2:-all}"); do start_one "$what"; done ;;
    stop)
      need_root stop
      for what in $(components "${2:-all}"); do stop_one "$what"; done ;;
    status) status ;;
    *) die "usage: $0 setup | start [postfix|dovecot|dovecot-auth|all] | stop [...] | status" ;;
  esac
}

main "$@"
