#!/usr/bin/python3
"""screenshot.py -- regenerates docs/dashboard.png (make dashboard-screenshot).

Starts a throwaway system (PostgreSQL, Redis, the producer from JR_BIN, two
consumers), gives it some work (runs that succeed, a few that fail and end
dead, a couple still running), installs puppeteer-core into
tests/browser/.cache when needed (npm ci), logs in with headless chromium and
saves the overview as docs/dashboard.png.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
sys.path.insert(0, os.path.join(HERE, "..", "support"))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import harness  # noqa: E402
from apiclient import System, TOKEN  # noqa: E402

CACHE = os.path.join(HERE, ".cache")


def npm_ci():
    mods = os.path.join(CACHE, "node_modules")
    lock = open(os.path.join(HERE, "package-lock.json"), "rb").read()
    have = os.path.join(CACHE, "package-lock.json")
    if os.path.exists(os.path.join(mods, "puppeteer-core")) and os.path.exists(have) \
            and open(have, "rb").read() == lock:
        return mods
    os.makedirs(CACHE, exist_ok=True)
    for f in ("package.json", "package-lock.json"):
        shutil.copyfile(os.path.join(HERE, f), os.path.join(CACHE, f))
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=CACHE, check=True)
    return mods


def main():
    mods = npm_ci()
    pg, redis = harness.Postgres(), harness.Redis()
    db = pg.create_database()
    s = System("redis", db, redis=redis, consumers=2, tag="demo")
    try:
        api = s.api
        for i in range(40):
            api.enqueue("noop", {"orgId": "org-%d" % (i % 7), "payload": {"sleepMs": 20 * (i % 5)}})
        for i in range(3):
            api.enqueue("noop", {"orgId": "org-9", "payload": {"failAlways": True}})
        for i in range(2):
            api.enqueue("noop", {"orgId": "org-3", "payload": {"sleepMs": 120000}})
        time.sleep(6)
        out = tempfile.mkdtemp(prefix="jr-shot-")
        env = dict(os.environ, NODE_PATH=mods, JR_URL="http://127.0.0.1:%d" % api.port,
                   JR_TOKEN=TOKEN, JR_OUT=out, JR_SCREENSHOT_ONLY="1")
        subprocess.run(["node", os.path.join(HERE, "dashboard.js")], env=env, check=True)
        dst = os.path.join(ROOT, "docs", "dashboard.png")
        shutil.copyfile(os.path.join(out, "overview.png"), dst)
        shutil.rmtree(out, ignore_errors=True)
        print("wrote %s" % os.path.normpath(dst))
    finally:
        s.stop()
        redis.cleanup()
        pg.cleanup()


if __name__ == "__main__":
    main()
