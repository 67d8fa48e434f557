#!/usr/bin/env bash
# A real Apache Kafka (KRaft, no ZooKeeper, no Docker) on loopback, from Maven Central's jars.
#
#   scripts/kafka.sh fetch                       fetch the broker + tools jars once; prints the jar dir
#   scripts/kafka.sh start DIR [--brokers 3] [--sasl-ssl] [--set KEY=VALUE ...]
#                                                format and start a cluster in DIR; prints the bootstrap list
#   scripts/kafka.sh stop DIR                    stop the cluster started in DIR
#   scripts/kafka.sh status DIR                  print DIR's cluster.json if its nodes run
#
# Only `fetch` is done here (it is all Maven). Starting, stopping and the broker configuration
# live in one place, tests/kafka_cluster.py; `start`/`stop`/`status` call it.
#
# Environment:
#   OFFERSTREAM_KAFKA_VERSION   Kafka version (default 4.4.0; 4.x only: KRaft, log4j2)
#   OFFERSTREAM_LOG4J_VERSION   log4j2 version of the broker's SLF4J 1.x binding (default: the
#                               log4j-core that the Kafka version itself depends on)
#   OFFERSTREAM_KAFKA_CACHE     jar dir (default ~/.cache/offerstream/kafka-<version>), outside the repo
set -euo pipefail
cd "$(dirname "$0")/.."

KAFKA_VERSION="${OFFERSTREAM_KAFKA_VERSION:-4.4.0}"
CACHE="${OFFERSTREAM_KAFKA_CACHE:-$HOME/.cache/offerstream/kafka-$KAFKA_VERSION}"

need_tools() {
  local missing=()
  command -v java >/dev/null 2>&1 || missing+=(default-jdk-headless)
  command -v mvn >/dev/null 2>&1 || missing+=(maven)
  if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
      echo "kafka.sh: missing ${missing[*]}; install them (apt-get install ${missing[*]})" >&2
      exit 1
    fi
    echo "kafka.sh: installing ${missing[*]} with apt-get" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
  fi
}

write_pom() {  # write_pom FILE "G:A:V ..."
  {
    echo '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
    echo '<groupId>offerstream.local</groupId><artifactId>kafka-fetch</artifactId><version>1</version>'
    echo '<packaging>pom</packaging><dependencies>'
    local gav g a v
    for gav in $2; do
      IFS=: read -r g a v <<<"$gav"
      echo "<dependency><groupId>$g</groupId><artifactId>$a</artifactId><version>$v</version></dependency>"
    done
    echo '</dependencies></project>'
  } >"$1"
}

copy_deps() {  # copy_deps WORKDIR "G:A:V ..."  (the artifacts and their runtime dependencies into $CACHE)
  write_pom "$1/pom.xml" "$2"
  if ! mvn -B -q -f "$1/pom.xml" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$CACHE" >"$1/mvn.log" 2>&1; then
    cat "$1/mvn.log" >&2
    echo "kafka.sh: maven could not fetch $2" >&2
    exit 1
  fi
}

fetch() {
  if [ -f "$CACHE/.complete" ]; then
    echo "$CACHE"
    return 0
  fi
  need_tools
  local work log4j jar
  work="$(mktemp -d)"
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" RETURN
  mkdir -p "$CACHE"
  rm -f "$CACHE"/*.jar
  echo "kafka.sh: fetching org.apache.kafka:kafka_2.13:$KAFKA_VERSION and kafka-tools:$KAFKA_VERSION into $CACHE" >&2
  copy_deps "$work" "org.apache.kafka:kafka_2.13:$KAFKA_VERSION org.apache.kafka:kafka-tools:$KAFKA_VERSION"
  # Kafka 4.x logs through SLF4J 1.7 to log4j2 but leaves the binding to the distribution: add
  # log4j-slf4j-impl at the log4j-core version Kafka itself depends on.
  log4j="${OFFERSTREAM_LOG4J_VERSION:-}"
  if [ -z "$log4j" ]; then
    jar="$(cd "$CACHE" && ls log4j-core-*.jar 2>/dev/null | head -n1)"
    log4j="${jar#log4j-core-}"
    log4j="${log4j%.jar}"
  fi
  [ -n "$log4j" ] || { echo "kafka.sh: no log4j-core among Kafka's dependencies; set OFFERSTREAM_LOG4J_VERSION" >&2; exit 1; }
  copy_deps "$work" "org.apache.logging.log4j:log4j-slf4j-impl:$log4j"
  for jar in "kafka_2.13-$KAFKA_VERSION.jar" "kafka-tools-$KAFKA_VERSION.jar" "log4j-slf4j-impl-$log4j.jar"; do
    [ -f "$CACHE/$jar" ] || { echo "kafka.sh: $jar missing after the fetch" >&2; exit 1; }
  done
  printf 'kafka=%s\nlog4j=%s\n' "$KAFKA_VERSION" "$log4j" >"$CACHE/.complete"
  echo "$CACHE"
}

python_bin() {
  if [ -x .venv/bin/python ]; then echo .venv/bin/python; else echo python3; fi
}

cmd="${1:-}"
case "$cmd" in
  fetch)
    fetch
    ;;
  start|stop|status)
    shift
    if [ "$cmd" = start ]; then fetch >/dev/null; fi
    exec "$(python_bin)" -m tests.kafka_cluster "$cmd" "$@"
    ;;
  *)
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
