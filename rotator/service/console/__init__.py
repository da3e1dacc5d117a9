"""The console: re-authorization links and their flow, served on ``server.listen``.

``links`` signs and checks the links, ``book`` keeps flows and spent links in the
state store (any replica finishes what another started), ``routes`` answers the
console's paths for the health/metrics server, ``answers`` renders the pages.
"""
