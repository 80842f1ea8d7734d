// Starts @vercel/cosmosdb-server (pinned in package.json) for the tests, on loopback, with
// HTTP keep-alive: the upstream CLI closes every connection, which makes each Python SDK
// call pay a new TLS handshake (~65 ms instead of ~5 ms).
// Usage: node tests/cosmos_server.js PORT
const { createHttpsServer } = require("@vercel/cosmosdb-server");
const port = parseInt(process.argv[2] || "8081", 10);
const server = createHttpsServer({ keepAlive: true }).listen(port, "127.0.0.1", () => {
  console.log(`ready on 127.0.0.1:${server.address().port}`);
});
