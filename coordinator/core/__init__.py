"""Layer 0, the core: leaf modules every other layer may import (keys, errors, settings, job states,
names and boards, text codec, clock, Lua loader, Redis connections, logging, the retry rule).
Nothing here imports from another layer except the trainer contract (`coordinator.trainer`).
"""
