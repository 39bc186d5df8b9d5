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
# Both clients need Python 3.11 (sgx-dcap-quote-verify-python 0.0.3, which both import, ships
# cp311 wheels only). The interpreter is $COMPAT_PYTHON if set, else the first of python3.11 and
# python3 that is a 3.11. Where none is, or a client cannot be imported once installed, the tier
# is *unavailable*, not failed: one line says why, the reason is written to
# .venv-compat/<name>.unavailable (the compat tests skip with it), and the script exits 0 so the
# rest of `make test` runs. BLINDAI_REQUIRE_COMPAT=1 (set by .ci/run) makes that an error.
# A pip failure is always an error.
#
# Usage: bash scripts/compat_env.sh [preview|v063]...   (default: both)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REQ="$ROOT/scripts/compat"
BASE="$ROOT/.venv-compat"
PYTHON=""
REQUIRE="${BLINDAI_REQUIRE_COMPAT:-0}"

log() { printf 'compat_env: %s\n' "$*" >&2; }

# The stamp records the requirement files' content; editing a pin rebuilds the venv.
stamp_of() {
    local name="$1" files
    files=("$REQ/requirements-common.txt" "$REQ/requirements-$name.txt")
    [ ! -f "$REQ/requirements-$name-build.txt" ] || files+=("$REQ/requirements-$name-build.txt")
    cat "${files[@]}" | sha256sum | cut -d' ' -f1
}

version_of() {
    "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null
}

# Sets PYTHON to a Python 3.11; where there is none, sets NO_PYTHON to the reason instead.
NO_PYTHON=""
find_python() {
    local candidates=() cand version seen=""
    if [ -n "${COMPAT_PYTHON:-}" ]; then
        candidates=("$COMPAT_PYTHON")
    else
        candidates=(python3.11 python3)
    fi
    for cand in "${candidates[@]}"; do
        version="$(version_of "$cand" || true)"
        if [ "$version" = "3.11" ]; then
            PYTHON="$cand"
            return 0
        fi
        seen+="${seen:+, }$cand is ${version:-not runnable}"
    done
    NO_PYTHON="needs Python 3.11 (sgx-dcap-quote-verify-python 0.0.3 ships cp311 wheels only); $seen"
}

# Part of the tier cannot be built here: record why for the tests, say so in one line, carry on.
unavailable() {
    local reason="$1" name
    shift
    mkdir -p "$BASE"
    for name in "$@"; do
        rm -rf "${BASE:?}/$name"
        printf '%s\n' "$reason" >"$BASE/$name.unavailable"
    done
    if [ "$REQUIRE" = "1" ]; then
        log "ERROR (BLINDAI_REQUIRE_COMPAT=1): original clients ($*) unavailable: $reason"
        exit 1
    fi
    log "original clients ($*) skipped: $reason"
}

pip_install() {
    local venv="$1"
    shift
    # This machine's pip config names local indexes that lack some projects; drop that noise.
    # Everything pip says goes to stderr: stdout carries a build's reason (see ensure).
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps "$@" \
        2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2) >&2
}

# Prints why the installed client cannot be imported (and returns 1), if it cannot.
importable() {
    local venv="$1" module="$2" err
    if err="$("$venv/bin/python" -W ignore -c "import $module" 2>&1)"; then
        return 0
    fi
    printf '%s installed but `import %s` fails: %s' "$(basename "$venv")" "$module" \
        "$(printf '%s\n' "$err" | tail -n 1)"
    return 1
}

build_preview() {
    local venv="$1"
    pip_install "$venv" -r "$REQ/requirements-preview.txt" || return 2
    importable "$venv" blindai_preview
}

build_v063() {
    local venv="$1"
    # openai-whisper 20230308 is an sdist: build it with this venv's setuptools (< 81).
    pip_install "$venv" -r "$REQ/requirements-v063-build.txt" || return 2
    pip_install "$venv" --no-build-isolation -r "$REQ/requirements-v063.txt" || return 2
    importable "$venv" blindai.core
}

up_to_date() {
    local venv="$BASE/$1"
    [ -f "$venv/.compat-stamp" ] && [ "$(cat "$venv/.compat-stamp")" = "$(stamp_of "$1")" ]
}

ensure() {
    local name="$1" venv="$BASE/$1" want start reason=""
    want="$(stamp_of "$name")"
    rm -f "$BASE/$name.unavailable"
    if up_to_date "$name"; then
        log "$name: up to date ($venv)"
        return 0
    fi
    start=$SECONDS
    log "$name: building $venv with $PYTHON"
    rm -rf "$venv"
    mkdir -p "$BASE"
    "$PYTHON" -m venv "$venv"
    # build_<name>: 0 built, 1 installed but unusable here (reason on stdout), 2 pip failed.
    local rc=0
    reason="$("build_$name" "$venv")" || rc=$?
    if [ "$rc" -eq 1 ]; then
        unavailable "$reason" "$name"
        return 0
    elif [ "$rc" -ne 0 ]; then
        log "$name: pip could not install the pinned packages (see above)"
        exit 1
    fi
    printf '%s\n' "$want" >"$venv/.compat-stamp"
    log "$name: done in $((SECONDS - start)) s, $(du -sh "$venv" | cut -f1)"
}

main() {
    local names=("$@")
    [ ${#names[@]} -gt 0 ] || names=(preview v063)
    for name in "${names[@]}"; do
        case "$name" in
        preview | v063) ;;
        *)
            log "unknown venv '$name' (expected preview or v063)"
            exit 2
            ;;
        esac
    done
    find_python
    if [ -n "$NO_PYTHON" ]; then
        # No interpreter to build with: venvs already built stay usable, the others are not.
        local built=() stale=()
        for name in "${names[@]}"; do
            if up_to_date "$name"; then built+=("$name"); else stale+=("$name"); fi
        done
        if [ ${#stale[@]} -gt 0 ]; then unavailable "$NO_PYTHON" "${stale[@]}"; fi
        names=("${built[@]}")
    fi
    for name in "${names[@]}"; do
        ensure "$name"
    done
}

main "$@"
