#!/bin/sh
# Install Debian's headless Chromium + chromedriver for camkit's browser test of the HTML report.
#
# Never fails the build: when Chromium cannot be installed here (not root, no apt-get, no network),
# it says why and exits 0; tests/test_report_browser.py then skips with the same hint.
# Set CAMKIT_SKIP_CHROMIUM=1 to skip the install on purpose.
set -u

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    exit 0
fi
if [ "${CAMKIT_SKIP_CHROMIUM:-0}" = "1" ]; then
    echo "ensure_chromium: CAMKIT_SKIP_CHROMIUM=1, not installing chromium; the browser test will skip."
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_chromium: no apt-get on this system; install Chromium yourself to run the browser test" \
         "(it will skip)."
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "ensure_chromium: not root; run 'sudo apt-get install -y chromium chromium-driver' to run the" \
         "browser test (it will skip)."
    exit 0
fi

echo "ensure_chromium: installing chromium and chromium-driver with apt-get (once)..."
start=$(date +%s)
export DEBIAN_FRONTEND=noninteractive
if apt-get install -y -q --no-install-recommends chromium chromium-driver >/tmp/camkit-apt-chromium.log 2>&1 \
   || { apt-get update -q >>/tmp/camkit-apt-chromium.log 2>&1 \
        && apt-get install -y -q --no-install-recommends chromium chromium-driver \
           >>/tmp/camkit-apt-chromium.log 2>&1; }; then
    echo "ensure_chromium: installed in $(( $(date +%s) - start )) s."
else
    echo "ensure_chromium: apt-get could not install chromium (see /tmp/camkit-apt-chromium.log);" \
         "the browser test will skip."
fi
exit 0
