"""The network a target may use: guarded HTTP pools, SMTP sessions, the SSRF address
policy, and HTTP answers turned into typed delivery outcomes.

Rule: every outbound connection of a target goes through this package.
"""
