"""zerodown's built-in router: an asyncio HTTP/1.1 reverse proxy with a live routing table.

`table.RoutingTable` holds routes, targets, balancing, health and draining; `proxy.ProxyServer`
accepts clients, `exchange.Exchange` relays each request to a picked target through
`upstream`'s keep-alive pools; `http` has the header rules.
"""
