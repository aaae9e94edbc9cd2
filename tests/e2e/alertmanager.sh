#!/usr/bin/env bash
# A throwaway Prometheus Alertmanager on 127.0.0.1 whose only receiver is a webhook.
#
#   alertmanager.sh start PORT DIR WEBHOOK_URL    write DIR/alertmanager.yml, start, wait until ready
#   alertmanager.sh stop DIR                      stop the one started in DIR
#
# Credentials for the webhook come from the environment, never the command line:
#   AM_BEARER_TOKEN                    -> http_config.authorization (Bearer), or
#   AM_BASIC_USER + AM_BASIC_PASSWORD  -> http_config.basic_auth
# Optional: AM_GROUP_BY (default '...': every label, so one alert per group), AM_GROUP_INTERVAL (1s),
# AM_LOG_LEVEL (warn).
#
# Installs the Debian package prometheus-alertmanager when missing (needs root). Clustering is off
# (--cluster.listen-address=), so nothing listens beyond 127.0.0.1:PORT.
set -euo pipefail

binary() {
  command -v prometheus-alertmanager || command -v alertmanager || true
}

install_if_missing() {
  if [ -z "$(binary)" ]; then
    if [ "$(id -u)" != 0 ]; then
      echo "alertmanager is not installed and installing it needs root" >&2
      exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus-alertmanager >/dev/null
  fi
}

write_config() {
  local dir=$1 url=$2 auth=""
  if [ -n "${AM_BEARER_TOKEN:-}" ]; then
    (umask 077 && printf '%s' "$AM_BEARER_TOKEN" >"$dir/token")
    auth="        http_config: {authorization: {type: Bearer, credentials_file: '$dir/token'}}"
  elif [ -n "${AM_BASIC_USER:-}" ]; then
    (umask 077 && printf '%s' "${AM_BASIC_PASSWORD:?AM_BASIC_PASSWORD is required with AM_BASIC_USER}" >"$dir/password")
    auth="        http_config: {basic_auth: {username: '$AM_BASIC_USER', password_file: '$dir/password'}}"
  fi
  cat >"$dir/alertmanager.yml" <<EOF
route:
  receiver: backchannel
  group_by: ['${AM_GROUP_BY:-...}']
  group_wait: 0s
  group_interval: ${AM_GROUP_INTERVAL:-1s}
  repeat_interval: 1h
receivers:
  - name: backchannel
    webhook_configs:
      - url: '$url'
        send_resolved: true
$auth
EOF
}

start() {
  local port=$1 dir=$2 url=$3
  install_if_missing
  mkdir -p "$dir/data"
  write_config "$dir" "$url"
  # setsid: its own session, so stopping it never signals the caller's process group
  setsid "$(binary)" \
    --config.file="$dir/alertmanager.yml" \
    --storage.path="$dir/data" \
    --web.listen-address="127.0.0.1:$port" \
    --cluster.listen-address= \
    --log.level="${AM_LOG_LEVEL:-warn}" \
    >"$dir/alertmanager.log" 2>&1 </dev/null &
  echo $! >"$dir/alertmanager.pid"
  for _ in $(seq 1 300); do
    if curl -fsS "http://127.0.0.1:$port/-/ready" >/dev/null 2>&1; then
      return 0
    fi
    if ! kill -0 "$(cat "$dir/alertmanager.pid")" 2>/dev/null; then
      cat "$dir/alertmanager.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "alertmanager not ready after 30s" >&2
  cat "$dir/alertmanager.log" >&2
  exit 1
}

stop() {
  local dir=$1 pid
  [ -f "$dir/alertmanager.pid" ] || return 0
  pid=$(cat "$dir/alertmanager.pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$dir/alertmanager.pid"
}

case "${1:-}" in
  start) shift; [ $# -eq 3 ] || { echo "usage: $0 start PORT DIR WEBHOOK_URL" >&2; exit 2; }; start "$@" ;;
  stop) shift; [ $# -eq 1 ] || { echo "usage: $0 stop DIR" >&2; exit 2; }; stop "$@" ;;
  *) echo "usage: $0 start PORT DIR WEBHOOK_URL | stop DIR" >&2; exit 2 ;;
esac
