#!/usr/bin/env bash
# Make sure Redis and PostgreSQL answer on loopback (../shared/design/SERVICES.md).
# Starts them when they are down and this user may (root); installs them with apt-get when
# they are missing and CI=true, and Debian's Chromium + ChromeDriver for the browser test.
# Exits non-zero when Redis or PostgreSQL is still down.
set -uo pipefail

redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }
pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
apt_install() {
  [[ "${CI:-}" == "true" && $(id -u) == 0 ]] || return 1
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@") >/dev/null
}

if ! redis_up; then
  command -v redis-server >/dev/null || apt_install redis-server redis-tools
  if command -v redis-server >/dev/null; then
    echo "starting redis-server on 127.0.0.1:6379"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
      --dir /tmp >/dev/null
    for _ in $(seq 50); do redis_up && break; sleep 0.1; done
  fi
fi

if ! pg_up; then
  ls /etc/postgresql/*/main >/dev/null 2>&1 || apt_install postgresql
  if [[ $(id -u) == 0 ]] && ls /etc/postgresql/*/main >/dev/null 2>&1; then
    echo "starting PostgreSQL on 127.0.0.1:5432"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
    for _ in $(seq 100); do pg_up && break; sleep 0.1; done
  fi
fi

if [[ ! -x /usr/bin/chromium || ! -x /usr/bin/chromedriver ]]; then
  apt_install chromium chromium-driver || echo "no Chromium: the dashboard browser test skips" >&2
fi

# docker-compose (v1, only to validate docker-compose.celery.yml; no daemon needed) and
# ShellCheck, for tests/deploy, which skip without them. --no-install-recommends: Debian's
# docker-compose recommends the docker.io engine, which the tests do not need.
command -v docker-compose >/dev/null && command -v shellcheck >/dev/null \
  || apt_install --no-install-recommends docker-compose shellcheck \
  || echo "no docker-compose/shellcheck: their checks in tests/deploy skip" >&2

ok=0
redis_up || { echo "Redis is not answering on 127.0.0.1:6379" >&2; ok=1; }
pg_up || { echo "PostgreSQL is not answering on 127.0.0.1:5432" >&2; ok=1; }
exit $ok
