"""Asterisk through ARI: the sandbox that runs a real Asterisk here (`sandbox`), the REST
client (`client`), the events WebSocket with reconnection (`events`) and the provider
adapter (`adapter`). ARI words stay inside this package."""
