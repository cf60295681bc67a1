#!/usr/bin/env bash
# The local stack: the moto AWS emulator and `cargo lambda watch`, both on 127.0.0.1.
#
#   dev/stack.sh up            start what is not running yet (background; pids in .dev/)
#   dev/stack.sh down          stop what `up` started, by pid
#   dev/stack.sh dev           `up`, then follow the logs until Ctrl-C, then `down`
#   dev/stack.sh run -- CMD    start what is not running, run CMD, stop only what this started
#
# Settings come from dev/local.env. Logs go to .dev/logs/.
set -euo pipefail
cd "$(dirname "$0")/.."
set -a
# shellcheck source=local.env
. dev/local.env
set +a

RUN=.dev
LOGS=$RUN/logs
FUNCTIONS_ENV=$RUN/functions.env
VENV=${VENV:-.venv}
MOTO_PORT=${AWS_ENDPOINT_URL##*:}
mkdir -p "$LOGS"

say() { printf '[stack] %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

pid_of() { cat "$RUN/$1.pid" 2>/dev/null || true; }
alive() { local pid; pid=$(pid_of "$1"); [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # name port seconds
  local i
  for ((i = 0; i < $3 * 5; i++)); do
    listening "$2" && return 0
    alive "$1" || { tail -n 30 "$LOGS/$1.log" >&2 || true; die "$1 exited; log above"; }
    sleep 0.2
  done
  die "$1 did not listen on 127.0.0.1:$2 within $3 s (log: $LOGS/$1.log)"
}

start_moto() {
  alive moto && return 1
  listening "$MOTO_PORT" && die "127.0.0.1:$MOTO_PORT is taken by something this script did not start"
  [ -x "$VENV/bin/moto_server" ] || die "moto is not installed: run 'make venv'"
  say "starting moto on 127.0.0.1:$MOTO_PORT (requests serialized: see dev/moto_serial.py)"
  MOTO_PORT=$MOTO_PORT setsid "$VENV/bin/python" dev/moto_serial.py -H 127.0.0.1 -p "$MOTO_PORT" >"$LOGS/moto.log" 2>&1 &
  echo $! >"$RUN/moto.pid"
  wait_port moto "$MOTO_PORT" 30
  "$VENV/bin/python" dev/aws_local.py create-table >&2
  "$VENV/bin/python" dev/aws_local.py create-secret >&2
  "$VENV/bin/python" dev/aws_local.py create-topic >&2
  "$VENV/bin/python" dev/aws_local.py create-queues >&2
}

start_lambda() {
  alive lambda && return 1
  listening "$EC2PASS_LAMBDA_PORT" && die "127.0.0.1:$EC2PASS_LAMBDA_PORT is taken by something this script did not start"
  [ -x "$VENV/bin/cargo-lambda" ] || die "cargo-lambda is not installed: run 'make venv'"
  # Build first, with the same profile cargo lambda uses, so the watcher starts at once.
  cargo build --workspace --bins >&2
  say "starting cargo lambda watch on $EC2PASS_LAMBDA_ADDRESS:$EC2PASS_LAMBDA_PORT"
  local reload=()
  [ "${STACK_RELOAD:-0}" = 1 ] || reload=(--ignore-changes)
  # The functions get dev/local.env without the EC2PASS_DEV_* settings, in their env file and in
  # the environment they inherit: the signing secret's only way into the issuer is then moto's
  # Secrets Manager, as in a deployed stack.
  grep -v '^EC2PASS_DEV_' dev/local.env >"$FUNCTIONS_ENV"
  local unset=() var
  for var in $(compgen -e); do
    [[ $var == EC2PASS_DEV_* ]] && unset+=(-u "$var")
  done
  env "${unset[@]}" setsid "$VENV/bin/cargo-lambda" lambda watch "${reload[@]}" \
    --invoke-address "$EC2PASS_LAMBDA_ADDRESS" --invoke-port "$EC2PASS_LAMBDA_PORT" \
    --env-file "$FUNCTIONS_ENV" >"$LOGS/lambda.log" 2>&1 &
  echo $! >"$RUN/lambda.pid"
  wait_port lambda "$EC2PASS_LAMBDA_PORT" 120
}

stop() { # name
  local pid
  pid=$(pid_of "$1")
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    say "stopping $1 (pid $pid)"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$RUN/$1.pid"
}

started=()
up() {
  if start_moto; then started+=(moto); fi
  if start_lambda; then started+=(lambda); fi
}
stop_started() {
  local name
  for name in "${started[@]}"; do stop "$name"; done
}

case "${1:-}" in
  up) up ;;
  down) stop lambda; stop moto ;;
  dev)
    trap 'stop_started' EXIT
    STACK_RELOAD=1 up
    say "issuer: http://$EC2PASS_LAMBDA_ADDRESS:$EC2PASS_LAMBDA_PORT/lambda-url/issuer/  (Ctrl-C stops everything)"
    tail -n +1 -f "$LOGS/lambda.log"
    ;;
  run)
    shift
    [ "${1:-}" = "--" ] && shift
    [ $# -gt 0 ] || die "usage: dev/stack.sh run -- CMD"
    trap 'stop_started' EXIT
    up
    status=0
    "$@" || status=$?
    exit "$status"
    ;;
  *) die "usage: dev/stack.sh up|down|dev|run -- CMD" ;;
esac
