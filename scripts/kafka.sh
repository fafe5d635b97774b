#!/usr/bin/env bash
# Single-node Apache Kafka broker (KRaft, broker+controller in one JVM) on
# 127.0.0.1, run straight from the Maven Central jars listed in kafka/pom.xml.
#
#   scripts/kafka.sh fetch           download the jars once into the cache
#   scripts/kafka.sh start [port]    start (default 9092; controller uses port+1)
#   scripts/kafka.sh stop [port]
#   scripts/kafka.sh status [port]   exit 0 if running, 3 if not
#
# Environment:
#   LEDGER_KAFKA_HOME       cache root (default ~/.cache/ledger-kafka), jars in libs/
#   LEDGER_KAFKA_STATE_DIR  state dir for this port (default $LEDGER_KAFKA_HOME/run-<port>)
#   KAFKA_HEAP_OPTS         JVM heap flags (default -Xms256m -Xmx512m)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
POM="$ROOT/kafka/pom.xml"
KAFKA_HOME_DIR="${LEDGER_KAFKA_HOME:-$HOME/.cache/ledger-kafka}"
LIBS="$KAFKA_HOME_DIR/libs"

die() { echo "kafka.sh: $*" >&2; exit 1; }

JAVA_PACKAGES=(openjdk-17-jre-headless maven)

need_tools() {
  local missing=()
  for t in "$@"; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
  ((${#missing[@]})) || return 0
  # A fresh machine has neither: as root with apt (Debian, Ubuntu, CI), install them
  # here, so that the test command of the README is all a new machine needs.
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "kafka.sh: missing ${missing[*]}; installing ${JAVA_PACKAGES[*]} with apt-get" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${JAVA_PACKAGES[@]}"; } >&2 \
      || die "apt-get install ${JAVA_PACKAGES[*]} failed"
    missing=()
    for t in "$@"; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
    ((${#missing[@]})) || return 0
  fi
  echo "kafka.sh: missing ${missing[*]}. Install with:" >&2
  echo "  apt-get update && apt-get install -y ${JAVA_PACKAGES[*]}" >&2
  exit 1
}

cmd_fetch() {
  need_tools java
  # The stamp ties the cache to the pom, so bumping the Kafka version refetches.
  local stamp
  stamp="$(sha256sum "$POM" | cut -d' ' -f1)"
  if [[ -f "$LIBS/.pom-sha256" && "$(cat "$LIBS/.pom-sha256")" == "$stamp" ]]; then
    return 0
  fi
  need_tools mvn
  mkdir -p "$KAFKA_HOME_DIR"
  # Copy into a private dir, then rename: parallel test sessions never see a
  # half-filled libs/ directory.
  local tmp
  tmp="$(mktemp -d "$KAFKA_HOME_DIR/libs.tmp.XXXXXX")"
  echo "kafka.sh: fetching Kafka jars from Maven Central into $LIBS" >&2
  # Output goes to a file (even -q leaves colour codes behind); shown on failure.
  if ! mvn -B -q -f "$POM" dependency:copy-dependencies \
      -DoutputDirectory="$tmp" -DincludeScope=runtime >"$tmp.log" 2>&1; then
    cat "$tmp.log" >&2
    rm -rf "$tmp" "$tmp.log"
    die "mvn dependency:copy-dependencies failed"
  fi
  rm -f "$tmp.log"
  echo "$stamp" >"$tmp/.pom-sha256"
  rm -rf "$LIBS.old"
  [[ -d "$LIBS" ]] && mv "$LIBS" "$LIBS.old"
  mv "$tmp" "$LIBS"
  rm -rf "$LIBS.old"
}

# Sets PORT, CPORT, STATE, PIDFILE from the optional port argument.
setup_port() {
  PORT="${1:-9092}"
  [[ "$PORT" =~ ^[0-9]+$ ]] || die "bad port: $PORT"
  CPORT=$((PORT + 1))
  STATE="${LEDGER_KAFKA_STATE_DIR:-$KAFKA_HOME_DIR/run-$PORT}"
  PIDFILE="$STATE/kafka.pid"
}

# True if $1 is a live (not zombie) broker JVM. Checking the command line
# guards against a stale pid file whose pid now belongs to something else.
alive() {
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  [[ "${stat##*) }" != Z* ]] && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q kafka.Kafka
}

running_pid() {
  [[ -f "$PIDFILE" ]] || return 1
  local pid
  pid="$(cat "$PIDFILE")"
  alive "$pid" && echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

kjava() { java -cp "$LIBS/*" "$@"; }

write_config() {
  cat >"$STATE/server.properties" <<EOF
process.roles=broker,controller
node.id=1
# Static single-voter quorum: no --standalone/bootstrap-controller dance needed.
controller.quorum.voters=1@127.0.0.1:$CPORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CPORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$STATE/data
num.partitions=4
auto.create.topics.enable=false
# Internal topics default to RF 3 / min ISR 2, which a single node cannot host.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Let the first consumer of a group start at once instead of after 3 s.
group.initial.rebalance.delay.ms=0
# After a SIGKILL the controller refuses the restarted broker
# (DUPLICATE_BROKER_REGISTRATION) until the old session expires: 9 s by default.
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=3000
EOF
  # Kafka 4.x uses log4j2; without a config it prints only errors to stdout.
  cat >"$STATE/log4j2.properties" <<EOF
appender.file.type=File
appender.file.name=file
appender.file.fileName=$STATE/server.log
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
rootLogger.level=INFO
rootLogger.appenderRef.file.ref=file
logger.kafka.name=kafka
logger.kafka.level=INFO
logger.state.name=state.change.logger
logger.state.level=WARN
EOF
}

cmd_start() {
  setup_port "${1:-}"
  local pid
  if pid="$(running_pid)"; then
    echo "kafka.sh: already running on 127.0.0.1:$PORT (pid $pid)" >&2
    echo "KAFKA_BOOTSTRAP=127.0.0.1:$PORT"
    return 0
  fi
  cmd_fetch
  for p in "$PORT" "$CPORT"; do
    port_open "$p" && die "port $p on 127.0.0.1 is already taken by another process"
  done
  mkdir -p "$STATE/data"
  write_config
  # meta.properties is written by the format step; keep data across restarts.
  if [[ ! -f "$STATE/data/meta.properties" ]]; then
    # A cluster id is 16 random bytes in URL-safe base64 without padding.
    local cluster_id
    cluster_id="$(head -c16 /dev/urandom | base64 | tr -- '+/' '-_' | tr -d '=')"
    # One id in 64 starts with '-', which the tool would read as an option.
    [[ "$cluster_id" == -* ]] && cluster_id="A${cluster_id:1}"
    kjava kafka.tools.StorageTool format -t "$cluster_id" \
      -c "$STATE/server.properties" >"$STATE/format.log" 2>&1 \
      || { cat "$STATE/format.log" >&2; die "storage format failed"; }
  fi

  # Start each run with a fresh log so the readiness grep below cannot match
  # a line from the previous run; keep one old log for post-mortems.
  [[ -f "$STATE/server.log" ]] && mv "$STATE/server.log" "$STATE/server.log.prev"
  local t0=$SECONDS
  # setsid: the broker must outlive the shell (and pytest) that started it and
  # must not get the terminal's Ctrl-C; stop/kill go through the pid file.
  # shellcheck disable=SC2086
  nohup setsid java ${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m} -XX:+UseG1GC \
    -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$STATE/log4j2.properties" \
    -cp "$LIBS/*" kafka.Kafka "$STATE/server.properties" \
    >"$STATE/kafka.out" 2>&1 </dev/null &
  echo $! >"$PIDFILE"

  # In KRaft mode the client port opens, and "Kafka Server started" is logged,
  # only after the broker has registered with the controller and been
  # unfenced, i.e. once it answers metadata/produce/fetch requests.
  # (Sleep first: until nohup has exec'd, the child's cmdline is still bash's.)
  while sleep 0.2 && ! { port_open "$PORT" && grep -q "Kafka Server started" "$STATE/server.log" 2>/dev/null; }; do
    if ! running_pid >/dev/null; then
      tail -n 40 "$STATE/kafka.out" "$STATE/server.log" >&2 2>/dev/null || true
      rm -f "$PIDFILE"
      die "broker exited during startup; logs in $STATE"
    fi
    if ((SECONDS - t0 > 60)); then
      tail -n 40 "$STATE/server.log" >&2 2>/dev/null || true
      cmd_stop "$PORT"
      die "broker not ready after 60 s; logs in $STATE"
    fi
  done
  echo "kafka.sh: broker up on 127.0.0.1:$PORT after $((SECONDS - t0)) s (state in $STATE)" >&2
  echo "KAFKA_BOOTSTRAP=127.0.0.1:$PORT"
}

cmd_stop() {
  setup_port "${1:-}"
  local pid
  if ! pid="$(running_pid)"; then
    echo "kafka.sh: not running on port $PORT" >&2
    rm -f "$PIDFILE"
    return 0
  fi
  kill -TERM "$pid"
  # A clean shutdown flushes logs and writes clean-shutdown markers, which
  # makes the next start skip log recovery; usually it takes a few seconds.
  local i
  for ((i = 0; i < 300; i++)); do
    alive "$pid" || break
    sleep 0.1
  done
  if alive "$pid"; then
    echo "kafka.sh: pid $pid ignored SIGTERM for 30 s, sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
    while alive "$pid"; do sleep 0.1; done
  fi
  rm -f "$PIDFILE"
  echo "kafka.sh: stopped broker on port $PORT (pid $pid)" >&2
}

cmd_status() {
  setup_port "${1:-}"
  local pid
  if pid="$(running_pid)"; then
    echo "running on 127.0.0.1:$PORT (pid $pid, state $STATE)"
  else
    echo "not running on port $PORT"
    return 3
  fi
}

case "${1:-}" in
  fetch) cmd_fetch ;;
  start) cmd_start "${2:-}" ;;
  stop) cmd_stop "${2:-}" ;;
  status) cmd_status "${2:-}" ;;
  *) echo "usage: $0 {fetch|start [port]|stop [port]|status [port]}" >&2; exit 2 ;;
esac
