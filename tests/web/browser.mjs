// The headless Chromium every web script drives: Debian's (or $SWARM_CHROMIUM), quiet, no
// sandbox (the tests run as root in a container).
import { chromium } from "playwright-core";

export function launch() {
  return chromium.launch({
    executablePath: process.env.SWARM_CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
}
