// Mounts the vendored Scalar API reference on the page at /docs, reading the
// document the service serves. A file of its own, not an inline script, so the
// page's Content-Security-Policy can refuse every inline script.
Scalar.createApiReference('#reference', {
  url: '/openapi.json',
  // Each of these would reach another host, which the page's policy refuses
  // anyway: turned off, they leave no failed requests in the console.
  withDefaultFonts: false,
  telemetry: false,
  agent: { disabled: true },
  mcp: { disabled: true },
  showDeveloperTools: 'never',
  // The sidebar's "Open API Client" leaves for Scalar's hosted client, handing it
  // this document's URL; each operation's "Test Request" stays, in the page.
  hideClientButton: true,
});
