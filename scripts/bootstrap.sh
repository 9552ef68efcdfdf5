#!/usr/bin/env bash
# Idempotent set-up shared by `make run` and `make test`:
#   1. the virtual environment at .venv (reinstalled when pyproject.toml changes);
#   2. the Docker engine (docker.io from Debian when root and missing) and debootstrap, and the
#      Debian tools the report needs: LaTeX (paper PDF), poppler (its preview), Chromium
#      (the dashboard's browser test);
#   3. dockerd, started and waited for when it is not answering;
#   4. the images, rebuilt only when their inputs changed (hash label).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1;34m[sandlab]\033[0m %s\n' "$*"; }
die() { printf '\033[1;31m[sandlab] error:\033[0m %s\n' "$*" >&2; exit 2; }

PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)

# -- 1. virtual environment ----------------------------------------------------------------
if [ ! -f "$STAMP" ]; then
  say "creating $VENV and installing sandlab with dev extras"
  "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), "sandlab needs Python 3.11+"' \
    || die "Python 3.11 or newer is required; set PYTHON=/path/to/python3.11"
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip 2>/dev/null || true
  "$VENV/bin/python" -m pip install --quiet -e '.[dev]' 2> >(grep -v 'is ignored' >&2)
  rm -f "$VENV"/.installed-*
  touch "$STAMP"
else
  say "virtual environment up to date"
fi

# -- 2. engine, debootstrap and the report's tools ------------------------------------------
need_pkgs=()
command -v dockerd >/dev/null 2>&1 || need_pkgs+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need_pkgs+=(debootstrap)
# The paper PDF (latexmk + pdflatex + chktex), its preview (pdftoppm), the dashboard test (chromium).
command -v latexmk >/dev/null 2>&1 || need_pkgs+=(latexmk)
command -v chktex >/dev/null 2>&1 || need_pkgs+=(chktex)
kpsewhich booktabs.sty >/dev/null 2>&1 || need_pkgs+=(texlive-latex-base texlive-latex-recommended texlive-latex-extra texlive-fonts-recommended)
command -v pdftoppm >/dev/null 2>&1 || need_pkgs+=(poppler-utils)
command -v chromium >/dev/null 2>&1 || need_pkgs+=(chromium)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing ${need_pkgs[*]} from Debian packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  elif ! docker info >/dev/null 2>&1; then
    die "missing ${need_pkgs[*]}; install Docker (docker.io) or run this as root on Debian/Ubuntu"
  else
    say "not root: skipping ${need_pkgs[*]} (the paper PDF and the browser test need them)"
  fi
fi

# -- 3. dockerd ----------------------------------------------------------------------------
engine_up() { timeout 10 docker info >/dev/null 2>&1; }
if ! engine_up; then
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    say "starting docker with systemctl"
    systemctl start docker 2>/dev/null || true
  fi
  if ! engine_up; then
    [ "$(id -u)" -eq 0 ] || die "the Docker engine is not running; start it (sudo systemctl start docker)"
    mkdir -p .cache
    say "starting dockerd (log: .cache/dockerd.log)"
    nohup setsid dockerd >.cache/dockerd.log 2>&1 </dev/null &
    for _ in $(seq 1 60); do engine_up && break; sleep 1; done
    engine_up || die "dockerd did not answer within 60s; see .cache/dockerd.log"
  fi
fi
say "docker engine is up"

# -- 4. images -----------------------------------------------------------------------------
"$VENV/bin/controller" images build
