"""Layer 0, the trainer contract: what the coordinator's settings and the GPU workers both need to know
about a trainer (its command template and placeholders, its output patterns, its checkpoint names,
the NPZ data it reads). `workers/` imports it; it imports only `coordinator.core`.
"""
