// Preloaded (`node --require`) before the reference MCP server: Node.js 18 (Debian 12's) has
// Web Crypto only as require("node:crypto").webcrypto, not as the global `crypto` the server
// uses from Node.js 19 on.
if (typeof globalThis.crypto === "undefined") {
  globalThis.crypto = require("node:crypto").webcrypto;
}
