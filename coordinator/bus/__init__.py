"""Layer 1, the event bus: the stream's encoding and consumer group (`events`), the one validator that
turns raw fields into a typed event (`schemas`), and the exporters' intake list (`intake`).
"""
