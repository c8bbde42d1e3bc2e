# Sourced by ./tools/relay and ./tools/test: installs the Debian packages a step needs, only when
# they are missing, so a second run does nothing and a fresh machine needs no manual steps.

# ensure_packages PKG...: install whichever of PKG are not installed yet (as root, or through sudo).
ensure_packages() {
    local missing=()
    local pkg
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$pkg")
        fi
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo=(sudo)
        else
            echo "error: missing packages (${missing[*]}) and not root; install them or run as root" >&2
            return 1
        fi
    fi
    echo "installing: ${missing[*]}" >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || return 1
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# Libraries the package links (both binaries are built from one package).
SHROUD_BUILD_PACKAGES=(
    pkg-config libopus-dev libvpx-dev libsodium-dev libsqlite3-dev libx11-dev libxext-dev
    libasound2-dev libssl-dev libyuv-dev
)

# What the tests drive for real: an X server, ALSA with the PulseAudio plugin and a PulseAudio
# daemon for paced capture, ffmpeg as an independent decoder of what Shroud writes, and openssl
# and curl to make a test CA and certificate and to fetch the relay's /info over HTTPS.
SHROUD_TEST_PACKAGES=(
    xvfb x11-utils pulseaudio alsa-utils libasound2-plugins ffmpeg openssl curl
)

# What tools/make-fixtures needs to recreate media-fixtures/ (the tests only read the committed
# files): speech synthesis, resampling, and text rendering with the DejaVu fonts.
SHROUD_FIXTURE_PACKAGES=(
    espeak-ng sox imagemagick fonts-dejavu-core
)

# What tools/bench-files needs beside the build: a Python for magic-wormhole's virtual
# environment, and GNU time for peak memory.
SHROUD_BENCH_FILES_PACKAGES=(
    python3 python3-venv time
)
