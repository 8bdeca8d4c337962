#!/usr/bin/env bash
# Sets up a Cloudflare Tunnel in front of lmsvr.
#
#   cloudflare/setup_tunnel.sh --hostname api.example.com [--name lmsvr] [--service http://localhost:8000]
#       Named tunnel: logs in (browser), creates the tunnel, routes the DNS name to it and writes
#       cloudflare/config.yml. Run it with `cloudflared tunnel --config cloudflare/config.yml run`.
#   cloudflare/setup_tunnel.sh --token TOKEN [--env-file .env]
#       Token mode (a tunnel made in the Cloudflare dashboard): writes CLOUDFLARE_TUNNEL_TOKEN
#       into the .env file read by docker-compose.yml (`docker compose --profile tunnel up -d`).
#   --dry-run prints every step instead of doing it.
set -euo pipefail

NAME=lmsvr
SERVICE=http://localhost:8000
HOSTNAME_ARG=""
TOKEN=""
ENV_FILE=.env
DRY_RUN=0
CONFIG_DIR=$(cd "$(dirname "$0")" && pwd)

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --name) NAME=${2:?--name needs a value}; shift 2 ;;
        --hostname) HOSTNAME_ARG=${2:?--hostname needs a value}; shift 2 ;;
        --service) SERVICE=${2:?--service needs a value}; shift 2 ;;
        --token) TOKEN=${2:?--token needs a value}; shift 2 ;;
        --env-file) ENV_FILE=${2:?--env-file needs a value}; shift 2 ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h|--help) usage 0 ;;
        *) echo "error: unknown argument $1" >&2; usage 2 ;;
    esac
done

run() {
    if [ "$DRY_RUN" -eq 1 ]; then
        echo "would run: $*"
    else
        "$@"
    fi
}

if [ -n "$TOKEN" ]; then
    if [ "$DRY_RUN" -eq 1 ]; then
        echo "would write CLOUDFLARE_TUNNEL_TOKEN=<hidden> to $ENV_FILE"
        exit 0
    fi
    touch "$ENV_FILE"
    grep -v '^CLOUDFLARE_TUNNEL_TOKEN=' "$ENV_FILE" > "$ENV_FILE.tmp" || true
    printf 'CLOUDFLARE_TUNNEL_TOKEN=%s\n' "$TOKEN" >> "$ENV_FILE.tmp"
    mv "$ENV_FILE.tmp" "$ENV_FILE"
    chmod 600 "$ENV_FILE"
    echo "Wrote CLOUDFLARE_TUNNEL_TOKEN to $ENV_FILE. Start it with: docker compose --profile tunnel up -d"
    exit 0
fi

[ -n "$HOSTNAME_ARG" ] || { echo "error: give --hostname NAME (named tunnel) or --token TOKEN (token mode)" >&2; exit 2; }
if [ "$DRY_RUN" -eq 0 ] && ! command -v cloudflared >/dev/null 2>&1; then
    echo "error: cloudflared is not installed (https://developers.cloudflare.com/cloudflare-one/connections/connect-networks/downloads/)" >&2
    exit 1
fi

CREDENTIALS_DIR=${HOME}/.cloudflared
[ -f "$CREDENTIALS_DIR/cert.pem" ] || run cloudflared tunnel login
run cloudflared tunnel create "$NAME"
run cloudflared tunnel route dns "$NAME" "$HOSTNAME_ARG"

if [ "$DRY_RUN" -eq 1 ]; then
    TUNNEL_ID="<tunnel-id>"
else
    TUNNEL_ID=$(cloudflared tunnel list --output json | python3 -c "import json,sys; print(next(t['id'] for t in json.load(sys.stdin) if t['name'] == '$NAME'))")
fi

CONFIG="tunnel: $TUNNEL_ID
credentials-file: $CREDENTIALS_DIR/$TUNNEL_ID.json
ingress:
  - hostname: $HOSTNAME_ARG
    service: $SERVICE
    originRequest:
      # How long cloudflared keeps an idle pooled connection to lmsvr: below lmsvr's
      # CLIENT_IDLE_TIMEOUT_SECONDS (120 s), so it never sends a request on a connection lmsvr is
      # closing. (Not a limit on streams: a response being written is never idle.)
      keepAliveTimeout: 90s
      disableChunkedEncoding: false
  - service: http_status:404"

if [ "$DRY_RUN" -eq 1 ]; then
    echo "would write $CONFIG_DIR/config.yml:"
    echo "$CONFIG"
else
    echo "$CONFIG" > "$CONFIG_DIR/config.yml"
    echo "Wrote $CONFIG_DIR/config.yml. Run: cloudflared tunnel --config $CONFIG_DIR/config.yml run"
fi
