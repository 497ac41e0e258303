// An OTLP/HTTP receiver that accepts every export and keeps nothing: the
// far end for measuring what exporting traces costs the host
// (host/cli/benches/sqlite.rs with OTEL_EXPORTER_OTLP_ENDPOINT set).
// Usage: node bench/driver/otlp-sink.mjs PORT; prints the bytes it took
// when stopped with SIGINT or SIGTERM.
import http from 'node:http';

const port = Number(process.argv[2] ?? 4318);
let requests = 0;
let bytes = 0;
const server = http.createServer((request, response) => {
  request.on('data', (chunk) => { bytes += chunk.length; });
  request.on('end', () => {
    requests += 1;
    response.writeHead(200, { 'content-type': 'application/x-protobuf' });
    response.end();
  });
});
server.listen(port, '127.0.0.1');
const stop = () => {
  console.log(`otlp-sink: ${requests} exports, ${bytes} bytes`);
  process.exit(0);
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
