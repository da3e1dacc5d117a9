"""The console: signed re-authorization links, the OAuth callback and the status page."""
