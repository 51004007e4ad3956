"""notify_svc: decide per (fan, trigger) to send now, later, in a digest or not at all — with reasons.

Domain: domain.py (types, validation), timezones.py (quiet hours across DST), policy.py (the rules),
state.py (per-fan state: sqlite or Redis), engine.py (the use cases). Edge: servicer.py, server.py.
"""
