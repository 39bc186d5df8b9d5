#!/usr/bin/env bash
# Build the virtual environments that hold the original BlindAI clients from PyPI, used by
# the compatibility tests (tests/compat, `make test-compat`):
#
#   .venv-compat/preview  blindai-preview==0.0.8   (import blindai_preview)
#   .venv-compat/v063     blindai==0.6.3           (import blindai.core)
#
# The two distributions install different top-level packages (blindai_preview / blindai), so
# they could share one venv; they are kept apart so that the light preview venv (a few seconds,
# ~100 MB) does not depend on the heavy 0.6.3 one (torch, transformers, an sdist build).
#
# Every package is pinned in scripts/compat/requirements-*.txt and installed with --no-deps:
# the clients' own metadata would otherwise pull torchaudio 0.13 / triton / a CUDA torch.
# Idempotent: a venv whose stamp file matches its requirement files is left alone.
#
# Usage: bash scripts/compat_env.sh [preview|v063]...   (default: both)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REQ="$ROOT/scripts/compat"
BASE="$ROOT/.venv-compat"
PYTHON="${COMPAT_PYTHON:-python3}"

log() { printf 'compat_env: %s\n' "$*" >&2; }

# The stamp records the requirement files' content; editing a pin rebuilds the venv.
stamp_of() {
    local name="$1" files
    files=("$REQ/requirements-common.txt" "$REQ/requirements-$name.txt")
    [ ! -f "$REQ/requirements-$name-build.txt" ] || files+=("$REQ/requirements-$name-build.txt")
    cat "${files[@]}" | sha256sum | cut -d' ' -f1
}

check_python() {
    local version
    version="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    if [ "$version" != "3.11" ]; then
        log "needs Python 3.11 (sgx-dcap-quote-verify-python 0.0.3 ships cp311 only); $PYTHON is $version"
        log "set COMPAT_PYTHON to a python3.11"
        exit 1
    fi
}

pip_install() {
    local venv="$1"
    shift
    # This machine's pip config names local indexes that lack some projects; drop that noise.
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps "$@" \
        2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
}

build_preview() {
    local venv="$1"
    pip_install "$venv" -r "$REQ/requirements-preview.txt"
    "$venv/bin/python" -W ignore -c 'import blindai_preview'
}

build_v063() {
    local venv="$1"
    # openai-whisper 20230308 is an sdist: build it with this venv's setuptools (< 81).
    pip_install "$venv" -r "$REQ/requirements-v063-build.txt"
    pip_install "$venv" --no-build-isolation -r "$REQ/requirements-v063.txt"
    "$venv/bin/python" -W ignore -c 'import blindai.core'
}

ensure() {
    local name="$1" venv="$BASE/$1" stamp want start
    stamp="$venv/.compat-stamp"
    want="$(stamp_of "$name")"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        log "$name: up to date ($venv)"
        return 0
    fi
    start=$SECONDS
    log "$name: building $venv"
    rm -rf "$venv"
    mkdir -p "$BASE"
    "$PYTHON" -m venv "$venv"
    "build_$name" "$venv"
    printf '%s\n' "$want" >"$stamp"
    log "$name: done in $((SECONDS - start)) s, $(du -sh "$venv" | cut -f1)"
}

main() {
    local names=("$@")
    [ ${#names[@]} -gt 0 ] || names=(preview v063)
    check_python
    for name in "${names[@]}"; do
        case "$name" in
        preview | v063) ensure "$name" ;;
        *)
            log "unknown venv '$name' (expected preview or v063)"
            exit 2
            ;;
        esac
    done
}

main "$@"
