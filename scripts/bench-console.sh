#!/usr/bin/env bash
# `make bench-console`: how fast the web console opens the timeline of an incident
# with 10,001 journaled alerts in headless Chromium (tests/console.rs, the same test
# `make test` runs, with its output), written into BENCHMARKS.md between the console
# markers (appended when missing). `make bench` runs it last, so regenerating
# BENCHMARKS.md keeps the section. Needs Debian's chromium and chromium-driver.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium chromium-driver
fi
test_cmd=(cargo test --test console -- --exact the_timeline_of_an_incident_with_10000_alerts_opens_in_under_a_second --nocapture)
out=$("${test_cmd[@]}" 2>&1) || { printf '%s\n' "$out" >&2; exit 1; }
runs=$(printf '%s\n' "$out" | grep -E '^timeline with 10,001 alerts' | sed 's/^/- /')
api=$(printf '%s\n' "$out" | grep -E '^GET /console/api/incidents' | sed 's/^/- /')
load=$(cut -d' ' -f1-3 /proc/loadavg)
section=$(cat <<MD
<!-- console:begin -->
## Web console: an incident's timeline with 10,001 alerts

\`${test_cmd[*]}\` (\`make bench-console\`; debug build, as the test suite runs it), $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD), load average $load. Headless Chromium $(/usr/bin/chromium --version 2>/dev/null | awk '{print $2}') opens \`/console/incidents/{id}\` three times (the first cold); "rendered" is the page's own mark from navigation start to the timeline on screen (its first server-sent event), "wall" adds WebDriver's round trips. The page shows the first 50 alerts and fetches more on request, so the time does not grow with the storm.

$runs
$api
<!-- console:end -->
MD
)
python3 - "$section" <<'PY'
import re, sys
section = sys.argv[1]
text = open("BENCHMARKS.md").read()
if "<!-- console:begin -->" in text:
    text = re.sub(r"<!-- console:begin -->.*?<!-- console:end -->", lambda _: section, text, flags=re.S)
else:
    text = text.rstrip("\n") + "\n\n" + section + "\n"
open("BENCHMARKS.md", "w").write(text)
PY
printf '%s\n' "$section"
