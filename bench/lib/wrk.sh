# bench/lib/wrk.sh - shell helpers the wrk-driven benchmarks share (sourced).
# measure ARGS...   one wrk run (-t$wthreads -c$conns -d$dur --latency ARGS) -> "req_per_s p50_ms p99_ms";
#                   fails when any response was not 2xx
# median            the median of the numbers on stdin
# free_port         a free loopback TCP port
# wait_http URL     poll URL until it answers 2xx (10 s)
# completion_lua F  write a wrk script to F that POSTs a max_tokens=1 completion for model "bench"
# start_nginx DIR PORT [LISTEN_PARAMS]  nginx in the background ($! is its pid) serving DIR/www on
#                   127.0.0.1:PORT with one worker process (like our one loop thread), access log off, keep-alive
#                   unbounded; LISTEN_PARAMS (e.g. http2, "ssl http2") go on its listen line; with ssl it serves
#                   DIR/cert.pem and DIR/key.pem

measure() {
  wrk -t"$wthreads" -c"$conns" -d"$dur" --latency "$@" 2>&1 | awk '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /Requests\/sec/ { rps = $2 } /^ +50%/ { p50 = ms($2) } /^ +99%/ { p99 = ms($2) } /Non-2xx/ { bad = $NF }
    END { if (bad) { print "non-2xx responses: " bad > "/dev/stderr"; exit 1 } printf "%s %s %s\n", rps, p50, p99 }'
}

median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_http() {
  for _ in $(seq 100); do curl -sf "$1" >/dev/null && return 0; sleep 0.1; done
  echo "no answer from $1" >&2
  return 1
}

completion_lua() {
  cat >"$1" <<'LUA'
wrk.method = "POST"
wrk.body = '{"model":"bench","prompt":"Hello","max_tokens":1,"temperature":0}'
wrk.headers["Content-Type"] = "application/json"
LUA
}

start_nginx() {
  local tmp=$1 port=$2 params=${3:+ $3}
  chmod 755 "$tmp" # nginx workers run as an unprivileged user when started as root
  cat >"$tmp/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $tmp/nginx.pid;
error_log $tmp/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $tmp/nginx-body;
  proxy_temp_path $tmp/nginx-proxy;
  fastcgi_temp_path $tmp/nginx-fastcgi;
  uwsgi_temp_path $tmp/nginx-uwsgi;
  scgi_temp_path $tmp/nginx-scgi;
  server {
    listen 127.0.0.1:$port$params;
    $([[ $params == *ssl* ]] && echo "ssl_certificate $tmp/cert.pem; ssl_certificate_key $tmp/key.pem;")
    location / { root $tmp/www; default_type application/json; }
  }
}
CONF
  "$(PATH=$PATH:/usr/sbin command -v nginx)" -c "$tmp/nginx.conf" -p "$tmp" 2>"$tmp/nginx.log" &
}
