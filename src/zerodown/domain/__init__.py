"""Domain types every layer shares: deployment states, events, records and route names.

They sit below the store, the server and the engine; nothing here imports any of them.
"""
