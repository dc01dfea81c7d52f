#!/bin/sh
# Download and unpack systemd 254 (Debian bookworm-backports) into DEST,
# without installing it: the tests run its "systemd --user" and "systemctl"
# as a second private manager (tests/systemd_harness.py), for what the
# installed 252 cannot do (Type=notify-reload, $FDSTORE).
#
#   sh tests/fetch_systemd254.sh [DEST]      (default: .cache/systemd-254)
#
# Idempotent: does nothing when DEST/VERSION exists.  apt runs with a private
# sources list and private state/cache directories, so the machine's own
# package lists are untouched; the Debian mirror is the one the machine's apt
# sources already name.  Exits non-zero, with one line saying why, on failure.
set -eu

DEST=${1:-.cache/systemd-254}
SUITE=bookworm-backports
VERSION_PATTERN='^254\..*~bpo12'
PACKAGES="systemd libsystemd-shared libsystemd0"

fail() {
    echo "fetch_systemd254: $*" >&2
    exit 1
}

if [ -f "$DEST/VERSION" ]; then
    exit 0
fi
command -v apt-get >/dev/null 2>&1 || fail "apt-get not found (needs Debian or a derivative)"
command -v dpkg >/dev/null 2>&1 || fail "dpkg not found"

# The Debian mirror of this machine: the first apt source serving a suite
# named after a Debian release (deb822 .sources files or one-line .list).
mirror=""
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    mirror=$(awk '
        /^[[:space:]]*#/ { next }
        /^deb[[:space:]]/ {
            i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
            if ($(i + 1) ~ /^(bookworm|trixie|forky|sid|stable|testing|unstable)$/) { print $i; exit }
        }
        /^URIs:/ { uri = $2 }
        /^Suites:/ { for (j = 2; j <= NF; j++) if ($j ~ /^(bookworm|trixie|forky|sid|stable|testing|unstable)$/ && uri != "") { print uri; exit } }
        /^[[:space:]]*$/ { uri = "" }
    ' "$f")
    [ -n "$mirror" ] && break
done
[ -n "$mirror" ] || fail "no Debian mirror found in the apt sources of this machine"

work=$(mktemp -d "${TMPDIR:-/tmp}/fetch-systemd254.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/debs"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
options=""
[ -f "$keyring" ] && options="[signed-by=$keyring] "
echo "deb ${options}$mirror $SUITE main" > "$work/sources.list"

apt() {
    "$@" -q \
        -o Dir::Etc::sourcelist="$work/sources.list" \
        -o Dir::Etc::sourceparts=- \
        -o Dir::State::Lists="$work/lists" \
        -o Dir::Cache="$work/cache" \
        -o APT::Get::List-Cleanup=0 \
        -o APT::Sandbox::User=root
}

echo "fetching systemd 254 from $SUITE into $DEST"
apt apt-get update >"$work/update.log" 2>&1 || fail "apt-get update of $SUITE failed: $(tail -n 3 "$work/update.log" | tr '\n' ' ')"
version=$(apt apt-cache madison systemd | awk -v p="$VERSION_PATTERN" '$3 ~ p { print $3; exit }')
[ -n "$version" ] || fail "no systemd 254 (~bpo12) in $SUITE"
specs=""
for p in $PACKAGES; do
    specs="$specs $p=$version"
done
# shellcheck disable=SC2086
(cd "$work/debs" && apt apt-get download $specs) >"$work/download.log" 2>&1 ||
    fail "apt-get download failed: $(tail -n 3 "$work/download.log" | tr '\n' ' ')"

rm -rf "$DEST.partial"
mkdir -p "$DEST.partial"
for deb in "$work/debs"/*.deb; do
    dpkg -x "$deb" "$DEST.partial"
done
[ -x "$DEST.partial/lib/systemd/systemd" ] || [ -x "$DEST.partial/usr/lib/systemd/systemd" ] ||
    fail "no lib/systemd/systemd in the unpacked packages"
echo "$version" > "$DEST.partial/VERSION"
rm -rf "$DEST"
mv "$DEST.partial" "$DEST"
echo "systemd $version unpacked in $DEST"
