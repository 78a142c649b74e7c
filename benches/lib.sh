# Shell helpers the comparison scripts share; sourced, not run:
#   . "$(dirname "$0")/lib.sh"

# median: the median of the numbers on stdin, one per line (nothing for none).
median() {
  sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) exit; if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# latency_us PCT [FILE]: the PCT percentile (50%, 99%, ...) of wrk's or loadtest's
# --latency output (FILE, or stdin), in microseconds.
latency_us() {
  awk -v pct="$1" '$1 == pct { v = $2; if (v ~ /ms$/) { sub("ms", "", v); v *= 1000 } else if (v ~ /us$/) { sub("us", "", v) } else if (v ~ /s$/) { sub("s", "", v); v *= 1e6 } print v }' "${2:--}"
}

# test_certs DIR: a private CA (DIR/ca.pem) and an ECDSA P-256 certificate it signed
# for localhost and 127.0.0.1 (DIR/cert.pem, key DIR/key.pem), valid 30 days.
test_certs() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1/ca.key" \
    -out "$1/ca.pem" -days 30 -subj /CN=bench-ca 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1/key.pem" \
    -out "$1/leaf.csr" -subj /CN=localhost 2>/dev/null
  printf "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n" >"$1/ext"
  openssl x509 -req -in "$1/leaf.csr" -CA "$1/ca.pem" -CAkey "$1/ca.key" -CAcreateserial \
    -out "$1/cert.pem" -days 30 -extfile "$1/ext" 2>/dev/null
}
