"""The ground floor: what every floor of the gateway shares (the call, the request key that
balancing reads, the error types and their bodies in each API's dialect). Nothing here imports
another folder of gateway/."""
