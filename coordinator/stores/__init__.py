"""Layer 2, the stores: each owns one kind of Redis record and every change to it, with its Lua
scripts beside it (`jobs`: job records and their states; `configs`: the per-config hash; `leases`:
training leases and GPU slots; `breakers`: circuit breakers).
"""
