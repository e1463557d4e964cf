# Reading a daemon's Prometheus metrics in the integration tests: scraped
# with curl, parsed by prometheus_client (scrape.py), compared by series.
# A series is written as scrape.py prints it, labels sorted by name:
#   mailkms_messages_total{action="signed",direction="outbound"}
# shellcheck shell=bash
metrics_dir=$(dirname "${BASH_SOURCE[0]}")

# metrics_scrape PORT NAME: the samples served on 127.0.0.1:PORT into NAME.samples
metrics_scrape() {
  curl -sf "http://127.0.0.1:$1/metrics" -o "$2.txt" &&
    /usr/bin/python3 "$metrics_dir/scrape.py" "$2.txt" > "$2.samples"  # Debian's Python, with its prometheus_client
}

# metric_value NAME SERIES: the value of SERIES in NAME.samples; 0 when
# absent, as Prometheus reads a counter never written
metric_value() {
  awk -v series="$2" '$1 == series { value = $2 } END { printf "%d\n", value }' "$1.samples"
}

# metric_moved BEFORE AFTER SERIES DELTA: SERIES went up by exactly DELTA
# from one scrape to the other (says by how much when it did not)
metric_moved() {
  local moved=$(($(metric_value "$2" "$3") - $(metric_value "$1" "$3")))
  [ "$moved" -eq "$4" ] || { echo "$3 moved by $moved, not $4" >&2; return 1; }
}
export -f metric_value metric_moved  # for checks that combine them in bash -c
