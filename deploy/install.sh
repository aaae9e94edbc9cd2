#!/bin/sh
# Install (or upgrade) backchannel as a systemd service. Idempotent: running it again changes nothing
# but the program and the unit, and never overwrites an existing configuration.
#
#   deploy/install.sh [--prefix DIR] [--destdir DIR] [--example-config FILE] [--no-python]
#
# --prefix          where the program goes (default /usr/local: bin/, lib/systemd/system/, share/doc/)
# --destdir         stage everything under DIR (packaging, tests); implies --no-python and no systemctl
# --example-config  YAML installed as /etc/backchannel/backchannel.yaml when that file does not exist
#                   (default: deploy/backchannel.example.yaml next to this script, when present)
# --no-python       do not (re)build the virtualenv in PREFIX/lib/backchannel
# Environment: PYTHON (default python3) builds the virtualenv.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
source_dir=$(dirname "$here")
prefix=/usr/local
destdir=
example="$here/backchannel.example.yaml"
python_install=yes
name=backchannel

die() { echo "install.sh: $*" >&2; exit 1; }
say() { echo "install.sh: $*"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) [ $# -ge 2 ] || die "--prefix needs a value"; prefix=$2; shift 2 ;;
        --prefix=*) prefix=${1#*=}; shift ;;
        --destdir) [ $# -ge 2 ] || die "--destdir needs a value"; destdir=$2; shift 2 ;;
        --destdir=*) destdir=${1#*=}; shift ;;
        --example-config) [ $# -ge 2 ] || die "--example-config needs a value"; example=$2; shift 2 ;;
        --example-config=*) example=${1#*=}; shift ;;
        --no-python) python_install=no; shift ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) die "unknown argument: $1" ;;
    esac
done
destdir=${DESTDIR:-$destdir}
case "$prefix" in /*) ;; *) die "--prefix must be absolute: $prefix" ;; esac
prefix=${prefix%/}
[ -n "$destdir" ] && python_install=no

is_root() { [ "$(id -u)" -eq 0 ]; }

# The group id from the target's /etc/group, so staged installs get the right owner too.
group_id() { awk -F: -v n="$1" '$1 == n { print $3 }' "$destdir/etc/group" 2>/dev/null; }
user_id() { awk -F: -v n="$1" '$1 == n { print $3 }' "$destdir/etc/passwd" 2>/dev/null; }

# install_dir PATH MODE OWNER GROUP: create or fix a directory; ownership only when root.
install_dir() {
    mkdir -p "$destdir$1"
    chmod "$2" "$destdir$1"
    own "$destdir$1" "$3" "$4"
}

own() {
    is_root || return 0
    [ -n "$2" ] && [ -n "$3" ] || { say "warning: no $name user yet; $1 left owned by root"; return 0; }
    chown "$2:$3" "$1"
}

create_user() {
    install -D -m 0644 "$here/sysusers.d/$name.conf" "$destdir/etc/sysusers.d/$name.conf"
    if [ -n "$(user_id "$name")" ]; then return 0; fi
    is_root || { say "warning: not root, the $name user is not created"; return 0; }
    if command -v systemd-sysusers >/dev/null 2>&1; then
        if [ -n "$destdir" ]; then
            systemd-sysusers --root="$destdir" "$destdir/etc/sysusers.d/$name.conf"
        else
            systemd-sysusers "/etc/sysusers.d/$name.conf"
        fi
    elif [ -z "$destdir" ]; then
        useradd --system --user-group --home-dir "/var/lib/$name" --shell /usr/sbin/nologin "$name"
    else
        say "warning: systemd-sysusers is missing, the staged tree gets no $name user"
    fi
}

install_unit() {
    unit_dir="$destdir$prefix/lib/systemd/system"
    mkdir -p "$unit_dir"
    sed "s|/usr/local/|$prefix/|g" "$here/$name.service" > "$unit_dir/$name.service.new"
    chmod 0644 "$unit_dir/$name.service.new"
    mv "$unit_dir/$name.service.new" "$unit_dir/$name.service"
}

install_config() {
    config="$destdir/etc/$name/$name.yaml"
    if [ ! -e "$config" ]; then
        if [ -f "$example" ]; then
            install -m 0640 "$example" "$config"
            say "installed an example configuration at /etc/$name/$name.yaml: edit it before starting"
        else
            say "warning: no example configuration ($example); write /etc/$name/$name.yaml yourself"
            return 0
        fi
    fi
    chmod 0640 "$config"
    own "$config" 0 "$gid"
}

install_python() {
    venv="$prefix/lib/$name"
    "${PYTHON:-python3}" -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade "$source_dir"
    mkdir -p "$prefix/bin"
    ln -sfn "$venv/bin/$name" "$prefix/bin/$name"
    say "installed $("$prefix/bin/$name" --version) as $prefix/bin/$name"
}

create_user
uid=$(user_id "$name")
gid=$(group_id "$name")
install_dir "/etc/$name" 0750 0 "$gid"
# Read by the service manager (as root) for LoadCredential=, never by the service itself.
install_dir "/etc/$name/credentials" 0700 0 0
install_dir "/var/lib/$name" 0700 "$uid" "$gid"
install_config
install_unit
install -D -m 0644 "$source_dir/docs/deployment.md" "$destdir$prefix/share/doc/$name/deployment.md"
[ "$python_install" = yes ] && install_python

# /run/systemd/system exists only when systemd is PID 1 (sd_booted(3)).
if [ -z "$destdir" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    say "next: systemctl enable --now $name (or systemctl restart $name after an upgrade)"
fi
say "done"
